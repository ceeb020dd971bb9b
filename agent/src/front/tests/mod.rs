//! HTTP behaviour of the front on a real Unix socket, with a token source
//! that stands in for the signing side (the HSM is tested elsewhere), one
//! module per surface. Answers are read with the workspace's test fixture,
//! which checks that each is a whole, well-formed HTTP/1.1 response.

mod limits;
mod peers;
mod routes;
mod shutdown;
mod turns;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use integration_tests::http::Connection;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::audit::{Audit, Log};
use super::policy::Policy;
use super::{Front, Listener};
use crate::config::{AuditConfig, GrantConfig, ServerConfig};
use crate::issue::{Found, IssueError, Issued, TokenSource};
use crate::metrics::Metrics;

/// The status of `GET target` on `client`'s connection.
async fn status(client: &mut Connection, target: &str) -> u16 {
    client.get(target, &[]).await.status
}

/// Signs `token-for.ISSUER.APP` afresh for `ttd` and has it cached for
/// `cached`; waits for a release for `slow`; fails as told for `down` and
/// `busy`; and knows no other issuer.
#[derive(Default)]
struct Source {
    not_ready: Mutex<Option<String>>,
    /// Signatures of `slow` begun, and their release.
    entered: Notify,
    release: Notify,
    /// Signatures of `slow` under way, and the apps of those begun, in order.
    slow_in_flight: AtomicUsize,
    slow_begun: Mutex<Vec<String>>,
    /// What [`TokenSource::signing_places`] says: 8 unless a test sets it.
    places: AtomicUsize,
}

fn token_for(issuer: &str, app: &str) -> String {
    format!("token-for.{issuer}.{app}")
}

fn issued(issuer: &str, app: &str, cache_hit: bool) -> Issued {
    Issued {
        token: token_for(issuer, app).into(),
        kid: "KID1".into(),
        expires_at: 2_000_000_000,
        cache_hit,
    }
}

impl TokenSource for Source {
    type Miss = (String, String);

    fn find(&self, issuer: &str, app: &str) -> Result<Found<Self::Miss>, IssueError> {
        match issuer {
            "cached" => Ok(Found::Cached(issued(issuer, app, true))),
            "ttd" | "slow" | "busy" => Ok(Found::Missing((issuer.into(), app.into()))),
            "down" => Err(IssueError::Unavailable("the token is not present".into())),
            other => Err(IssueError::UnknownIssuer(other.into())),
        }
    }

    async fn sign(&self, (issuer, app): Self::Miss) -> Result<Issued, IssueError> {
        match issuer.as_str() {
            "busy" => return Err(IssueError::Overloaded),
            "slow" => {
                let released = self.release.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                self.slow_begun.lock().unwrap().push(app.clone());
                self.slow_in_flight.fetch_add(1, Ordering::SeqCst);
                self.entered.notify_one();
                released.await;
                self.slow_in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(issued(&issuer, &app, false))
    }

    fn signing_places(&self) -> usize {
        match self.places.load(Ordering::SeqCst) {
            0 => 8,
            set => set,
        }
    }

    fn readiness(&self) -> Result<(), String> {
        match self.not_ready.lock().unwrap().clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

fn grant(uid: u32, issuer: &str, apps: &[&str]) -> GrantConfig {
    GrantConfig {
        uid: Some(uid),
        issuer: issuer.into(),
        apps: apps.iter().map(|a| a.to_string()).collect(),
        ..GrantConfig::default()
    }
}

/// Grants for this test process covering every issuer the source knows.
fn wide_grants() -> Vec<GrantConfig> {
    let uid = my_uid();
    vec![
        grant(uid, "ttd", &["my-app", "other"]),
        grant(uid, "down", &["*"]),
        grant(uid, "busy", &["*"]),
        grant(uid, "cached", &["*"]),
        grant(uid, "slow", &["*"]),
        grant(uid, "nowhere", &["*"]),
    ]
}

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    audit_file: PathBuf,
    source: Arc<Source>,
    front: Arc<Front<Source>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(grants: Vec<GrantConfig>, tune: impl FnOnce(&mut ServerConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let audit_file = dir.path().join("audit.log");
        let mut config = ServerConfig {
            socket: socket.clone(),
            ..ServerConfig::default()
        };
        tune(&mut config);
        config.validate().unwrap();
        let listener = Listener::open(&config).unwrap();
        let audit = Audit::open(
            &AuditConfig {
                file: Some(audit_file.clone()),
                ..AuditConfig::default()
            },
            Log::Tracing,
        )
        .unwrap();
        let source = Arc::new(Source::default());
        let front = Arc::new(Front::new(
            source.clone(),
            Policy::from_config(&grants).unwrap(),
            audit,
            Arc::new(Metrics::default()),
            &config,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(front.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Server {
            _dir: dir,
            socket,
            audit_file,
            source,
            front,
            stop: Some(stop),
            task,
        }
    }

    /// A new kept-alive connection to this front.
    async fn client(&self) -> Connection {
        Connection::connect(&self.socket).await.unwrap()
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.front.audit().flush();
        std::fs::read_to_string(&self.audit_file)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    async fn shut_down(mut self) -> std::io::Result<()> {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap()
    }
}
