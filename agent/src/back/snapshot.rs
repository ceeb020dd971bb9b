//! What the request path sees: the latest state the supervisor published,
//! read without ever waiting on the HSM.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::oneshot;

use super::active_key::{ActiveKey, Keys, Unavailable};
use super::cache::Cache;
use super::pool::{Job, PoolHandle, Reply};
use super::settings::Settings;
use crate::issue::{IssueError, Issued};
use crate::metrics::Metrics;
use crate::sync::{read, write};

/// What the request path sees: published by the supervisor, replaced whole.
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub cache: Arc<Cache>,
    /// The keys and the signing queue, or why there are none.
    pub serving: Result<Serving, Arc<str>>,
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
    pub snapshot: RwLock<Arc<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

impl Latest {
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&read(&self.snapshot))
    }

    pub fn publish(&self, snapshot: Snapshot) {
        *write(&self.snapshot) = Arc::new(snapshot);
    }

    /// Nothing will be signed any more, for `reason`.
    pub fn fail(&self, reason: String) {
        let current = self.current();
        self.publish(Snapshot {
            settings: Arc::clone(&current.settings),
            cache: Arc::clone(&current.cache),
            serving: Err(reason.into()),
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

    pub fn submit(&self, key: &Arc<ActiveKey>, app: &str, reply: Reply) {
        let job = Job {
            key: Arc::clone(key),
            app: app.into(),
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
/// key, and the token's app.
pub struct Miss {
    snapshot: Arc<Snapshot>,
    key: Arc<ActiveKey>,
    issuer: Box<str>,
    app: Box<str>,
}

impl Miss {
    pub(super) fn new(
        snapshot: Arc<Snapshot>,
        key: Arc<ActiveKey>,
        issuer: &str,
        app: &str,
    ) -> Miss {
        Miss {
            snapshot,
            key,
            issuer: issuer.into(),
            app: app.into(),
        }
    }

    pub(super) fn timeout(&self) -> std::time::Duration {
        self.snapshot.settings.signing.timeout()
    }

    /// Signs the token, through the cache when it is on (a signature under
    /// way for the same token is joined, and the result kept).
    pub(super) async fn sign(self) -> Result<Issued, IssueError> {
        let Miss {
            snapshot,
            key,
            issuer,
            app,
        } = self;
        if snapshot.settings.cache {
            return snapshot
                .cache
                .get_or_sign(&issuer, &app, &key.kid, |completion| {
                    snapshot.submit(&key, &app, Box::new(|result| completion.complete(result)))
                })
                .await;
        }
        let (reply, signed) = oneshot::channel();
        snapshot.submit(
            &key,
            &app,
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
