//! What the request path sees: the latest state the supervisor published,
//! read without ever waiting on the HSM.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::{oneshot, watch};

use super::active_key::{ActiveKey, Keys, Unavailable};
use super::cache::Cache;
use super::pool::{Job, PoolHandle, Reply};
use super::settings::Settings;
use crate::issue::{IssueError, Issued};
use crate::metrics::Metrics;
use crate::sync::{read, write};
use crate::token;

/// What the request path sees: published by the supervisor, replaced whole.
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub cache: Arc<Cache>,
    /// The keys and the signing queue, or why there are none.
    pub serving: Result<Serving, Arc<str>>,
    /// While the link is being reopened: when the supervisor's next attempt
    /// is due. A request whose deadline comes later waits for it rather than
    /// being refused. `None` when nothing is on its way (serving, a refused
    /// PIN, signatures still hung inside the module, or stopped).
    pub reconnect_at: Option<Instant>,
}

pub struct Serving {
    pub keys: Keys,
    /// Issuers that cannot sign, though the HSM answers.
    pub unavailable: Unavailable,
    pub pool: PoolHandle,
    /// Signing threads kept, and the most there may be.
    pub threads: (usize, usize),
}

/// The latest snapshot the supervisor published, which the request path
/// reads, and the metrics both write.
pub struct Latest {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Ticks at every publish, for requests that wait out a reconnect.
    published: watch::Sender<()>,
    pub metrics: Arc<Metrics>,
}

impl Latest {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Latest {
        Latest {
            snapshot: RwLock::new(Arc::new(snapshot)),
            published: watch::Sender::new(()),
            metrics,
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&read(&self.snapshot))
    }

    pub fn publish(&self, snapshot: Snapshot) {
        *write(&self.snapshot) = Arc::new(snapshot);
        self.published.send_replace(());
    }

    /// Wakes at every publish after this call (take it before reading the
    /// snapshot it is to see replaced).
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.published.subscribe()
    }

    /// Nothing will be signed any more, for `reason`.
    pub fn fail(&self, reason: String) {
        let current = self.current();
        self.publish(Snapshot {
            settings: Arc::clone(&current.settings),
            cache: Arc::clone(&current.cache),
            serving: Err(reason.into()),
            reconnect_at: None,
        });
    }
}

impl Snapshot {
    /// The issuers and their kids, or why nothing is signed.
    pub fn status(&self) -> String {
        match &self.serving {
            Ok(serving) => {
                let mut issuers: Vec<String> = serving
                    .keys
                    .iter()
                    .map(|(issuer, key)| format!("{issuer} (kid {})", key.kid))
                    .collect();
                issuers.sort();
                let signing = match serving.threads {
                    (kept, most) if most > kept => format!(
                        "signing for {} with {kept} thread(s), up to {most} while signatures wait on the HSM",
                        issuers.join(", ")
                    ),
                    (kept, _) => {
                        format!("signing for {} with {kept} thread(s)", issuers.join(", "))
                    }
                };
                match serving.not_ready() {
                    Ok(()) => signing,
                    Err(reason) => format!("not ready: {reason}; {signing}"),
                }
            }
            Err(reason) => format!("not ready: {reason}"),
        }
    }

    /// The active certificates that expire within the warning window at
    /// `now`, with what to do, by issuer.
    pub fn expiry_warnings(&self, now: i64) -> Vec<String> {
        let Ok(serving) = &self.serving else {
            return Vec::new();
        };
        let window = self.settings.expiry_warning_seconds;
        let mut warnings: Vec<String> = serving
            .keys
            .iter()
            .filter(|(_, key)| key.certificate.expires_within(now, window))
            .map(|(issuer, key)| {
                format!(
                    "the active certificate of issuer {issuer:?} (kid {}) {}; renew it (access-token-agent keys renew --issuer {issuer}) or enrol a new key, and publish the new certificate",
                    key.kid,
                    key.certificate.expiry(now)
                )
            })
            .collect();
        warnings.sort();
        warnings
    }

    /// The active key for `issuer`, or why there is none.
    pub fn key(&self, issuer: &str) -> Result<&Arc<ActiveKey>, IssueError> {
        match &self.serving {
            Ok(serving) => match serving.keys.get(issuer) {
                Some(key) => Ok(key),
                None => match serving.unavailable.get(issuer) {
                    Some(reason) => Err(IssueError::Unavailable(reason.to_string())),
                    None => Err(IssueError::UnknownIssuer(issuer.to_owned())),
                },
            },
            Err(_) if !self.settings.has_issuer(issuer) => {
                Err(IssueError::UnknownIssuer(issuer.to_owned()))
            }
            Err(reason) => Err(IssueError::Unavailable(reason.to_string())),
        }
    }

    /// Whether a reconnect is under way whose next attempt comes before
    /// `deadline`: worth waiting for.
    pub fn reconnecting_before(&self, deadline: Instant) -> bool {
        self.serving.is_err() && self.reconnect_at.is_some_and(|at| at < deadline)
    }

    /// Whether this snapshot's link was lost under its signatures: a
    /// signing thread met a connection fault, or the pool is being torn
    /// down. The supervisor publishes another snapshot then.
    pub fn link_lost(&self) -> bool {
        self.serving
            .as_ref()
            .is_ok_and(|serving| serving.pool.is_lost())
    }

    /// Hands `app`'s token to the pool, written into `buffer`'s memory
    /// ([`Job::buffer`]), its result to `reply`.
    pub fn submit(&self, key: &Arc<ActiveKey>, app: &str, buffer: String, reply: Reply) {
        let job = Job {
            key: Arc::clone(key),
            app: app.into(),
            buffer,
            lifetime: Arc::clone(&self.settings.lifetime),
            deadline: Instant::now() + self.settings.signing.timeout(),
            reply,
        };
        match &self.serving {
            Ok(serving) => serving.pool.submit(job),
            Err(reason) => (job.reply)(Err(IssueError::Unavailable(reason.to_string()))),
        }
    }
}

/// What a fresh signature needs: the snapshot it was found in, the issuer's
/// key (none while the link is being reopened), and the token's app.
pub struct Miss {
    snapshot: Arc<Snapshot>,
    key: Option<Arc<ActiveKey>>,
    issuer: Box<str>,
    app: Box<str>,
}

impl Miss {
    /// What signing for `issuer` and `app` in `snapshot` needs, or why it
    /// is refused at once. While a reconnect is under way whose next
    /// attempt comes before `deadline`, a miss without a key, that waits
    /// for it.
    pub(super) fn find(
        snapshot: Arc<Snapshot>,
        issuer: &str,
        app: &str,
        deadline: Instant,
    ) -> Result<Miss, IssueError> {
        let key = match snapshot.key(issuer) {
            Ok(key) => Some(Arc::clone(key)),
            Err(IssueError::Unavailable(_)) if snapshot.reconnecting_before(deadline) => None,
            Err(error) => return Err(error),
        };
        Ok(Miss {
            snapshot,
            key,
            issuer: issuer.into(),
            app: app.into(),
        })
    }

    pub(super) fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    pub(super) fn key(&self) -> Option<&Arc<ActiveKey>> {
        self.key.as_ref()
    }

    pub(super) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(super) fn app(&self) -> &str {
        &self.app
    }

    pub(super) fn timeout(&self) -> std::time::Duration {
        self.snapshot.settings.signing.timeout()
    }

    /// Signs the token, through the cache when it is on (a signature under
    /// way for the same token is joined, and the result kept).
    pub(super) async fn sign(&self) -> Result<Issued, IssueError> {
        let Miss {
            snapshot,
            key,
            issuer,
            app,
        } = self;
        let Some(key) = key else {
            return Err(IssueError::Unavailable(snapshot.status()));
        };
        if snapshot.settings.cache {
            return snapshot
                .cache
                .get_or_sign(issuer, app, &key.kid, |completion| {
                    // The cache copies the token on the signing thread, which
                    // frees the token's memory there: that thread allocates it.
                    let reply = Box::new(|result| completion.complete(result));
                    snapshot.submit(key, app, String::new(), reply)
                })
                .await;
        }
        let (reply, signed) = oneshot::channel();
        // Freed on this thread once answered: allocated here.
        let signing = &key.signing;
        let room = token::max_len(
            &signing.id,
            &signing.issuer,
            app,
            &snapshot.settings.lifetime,
        );
        snapshot.submit(
            key,
            app,
            String::with_capacity(room),
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        let signed = signed.await.unwrap_or_else(|_| {
            Err(IssueError::Unavailable(
                "the signer stopped before signing; try again".into(),
            ))
        })?;
        Ok(Issued {
            token: signed.token.into(),
            kid: Arc::clone(&key.kid),
            expires_at: signed.expires_at,
            cache_hit: false,
        })
    }
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of a back that serves nothing, for `reason`, configured
    /// for issuer `ttd` on a module that is never loaded.
    pub fn unserved(reason: &str, reconnect_at: Option<Instant>) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234").unwrap();
        let text = format!(
            "[hsm]\nmodule = \"/bin/sh\"\ntoken_label = \"t\"\npin_file = {pin:?}\n[[issuer]]\nname = \"ttd\"\n"
        );
        let config = crate::config::Config::parse(&text).unwrap();
        let settings = Settings::from_config(&config);
        Snapshot {
            cache: Arc::new(settings.new_cache()),
            settings: Arc::new(settings),
            serving: Err(reason.into()),
            reconnect_at,
        }
    }
}

impl Serving {
    /// Ready when the HSM answers and every configured issuer can sign;
    /// otherwise the reasons.
    pub fn not_ready(&self) -> Result<(), String> {
        if let Some(reason) = self.pool.not_answering() {
            return Err(reason);
        }
        if self.unavailable.is_empty() {
            return Ok(());
        }
        let reasons: Vec<&str> = self.unavailable.values().map(AsRef::as_ref).collect();
        Err(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A snapshot with no link, for issuer `ttd`, the next reconnect
    /// attempt at `reconnect_at`.
    fn down(reconnect_at: Option<Instant>) -> Arc<Snapshot> {
        Arc::new(Snapshot::unserved(
            "CKR_USER_NOT_LOGGED_IN; reconnecting",
            reconnect_at,
        ))
    }

    #[test]
    fn a_reconnect_due_before_the_deadline_is_waited_for() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let miss = Miss::find(down(Some(now)), "ttd", "app", deadline).unwrap();
        assert!(miss.key().is_none(), "no key yet: it waits for the link");
    }

    #[test]
    fn no_reconnect_on_its_way_or_due_too_late_is_refused_at_once() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        for snapshot in [down(None), down(Some(deadline + Duration::from_secs(1)))] {
            match Miss::find(snapshot, "ttd", "app", deadline) {
                Err(IssueError::Unavailable(reason)) => {
                    assert!(reason.contains("CKR_USER_NOT_LOGGED_IN"), "{reason}")
                }
                _ => panic!("refused at once"),
            }
        }
    }

    #[test]
    fn an_issuer_not_configured_is_refused_while_reconnecting() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        assert!(matches!(
            Miss::find(down(Some(now)), "other", "app", deadline),
            Err(IssueError::UnknownIssuer(_))
        ));
    }

    #[tokio::test]
    async fn a_publish_wakes_who_waits_for_the_next_snapshot() {
        let first = down(None);
        let latest = Latest::new(
            Snapshot {
                settings: Arc::clone(&first.settings),
                cache: Arc::clone(&first.cache),
                serving: Err("starting".into()),
                reconnect_at: None,
            },
            Arc::default(),
        );
        let mut published = latest.subscribe();
        let before = latest.current();
        latest.fail("stopped".into());
        published.changed().await.unwrap();
        assert!(!Arc::ptr_eq(&before, &latest.current()));
    }
}
