//! HTTP behaviour of the front on a real Unix socket, with a token source
//! that stands in for the signing side (the HSM is tested elsewhere), one
//! module per surface. Answers are read with the workspace's test fixture,
//! which checks that each is a whole, well-formed HTTP/1.1 response.

mod limits;
mod peers;
mod routes;
mod shutdown;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use integration_tests::http::Connection;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::audit::Audit;
use super::policy::Policy;
use super::{Front, Listener};
use crate::config::{AuditConfig, GrantConfig, ServerConfig};
use crate::issue::{IssueError, Issued, TokenSource};
use crate::metrics::Metrics;

/// The status of `GET target` on `client`'s connection.
async fn status(client: &mut Connection, target: &str) -> u16 {
    client.get(target, &[]).await.status
}

/// Issues `token-for.ISSUER.APP` for `ttd`, fails as told for `down` and
/// `busy`, waits for a release for `slow`, and knows no other issuer.
#[derive(Default)]
struct Source {
    not_ready: Mutex<Option<String>>,
    entered: Notify,
    release: Notify,
}

fn token_for(issuer: &str, app: &str) -> String {
    format!("token-for.{issuer}.{app}")
}

impl TokenSource for Source {
    async fn issue(&self, issuer: &str, app: &str) -> Result<Issued, IssueError> {
        match issuer {
            "ttd" => {}
            "slow" => {
                self.entered.notify_one();
                self.release.notified().await;
            }
            "down" => return Err(IssueError::Unavailable("the token is not present".into())),
            "busy" => return Err(IssueError::Overloaded),
            other => return Err(IssueError::UnknownIssuer(other.into())),
        }
        Ok(Issued {
            token: token_for(issuer, app).into(),
            kid: "KID1".into(),
            expires_at: 2_000_000_000,
            cache_hit: false,
        })
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
        let audit = Audit::open(&AuditConfig {
            file: Some(audit_file.clone()),
            ..AuditConfig::default()
        })
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
