//! HTTP behaviour of the front on a real Unix socket, with a token source
//! that stands in for the signing side (the HSM is tested elsewhere).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::audit::Audit;
use super::policy::Policy;
use super::{Front, Listener};
use crate::config::{AuditConfig, GrantConfig, ServerConfig};
use crate::issue::{IssueError, Issued, TokenSource};
use crate::metrics::Metrics;

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

    async fn client(&self) -> Client {
        Client::connect(&self.socket).await
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
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

/// A raw HTTP/1.1 client on one connection, so that tests control every byte.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The problem type's short name, after checking the problem+json form.
    fn problem(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let json = self.json();
        assert_eq!(json["status"], self.status, "{json}");
        assert!(!json["detail"].as_str().unwrap().is_empty());
        let uri = json["type"].as_str().unwrap();
        uri.strip_prefix("urn:access-token-agent:problem:")
            .unwrap()
            .to_string()
    }
}

impl Client {
    async fn connect(path: &Path) -> Client {
        Client {
            stream: UnixStream::connect(path).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &str) {
        self.stream.write_all(raw.as_bytes()).await.unwrap();
    }

    async fn get(&mut self, target: &str) -> Reply {
        self.get_with(target, "").await
    }

    async fn get_with(&mut self, target: &str, headers: &str) -> Reply {
        self.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n"
        ))
        .await;
        self.reply().await.expect("a reply")
    }

    /// The next response, or `None` if the server closed the connection first.
    async fn reply(&mut self) -> Option<Reply> {
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_string(), value.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let start = head_end + 4;
        while self.buf.len() < start + length {
            assert!(self.fill().await, "connection closed inside a body");
        }
        let body = self.buf[start..start + length].to_vec();
        self.buf.drain(..start + length);
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Reads more bytes; false at end of stream (or a reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Whether the server closes the connection within `limit`.
    async fn closed_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async { while self.fill().await {} })
            .await
            .is_ok()
    }
}

#[tokio::test]
async fn token_as_json_and_as_bare_jwt() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut client = server.client().await;
    let reply = client.get("/v1/token?issuer=ttd&app=my-app").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let json = reply.json();
    assert_eq!(json["token"], token_for("ttd", "my-app"));
    assert_eq!(json["kid"], "KID1");
    assert_eq!(json["issuer"], "ttd");
    assert_eq!(json["app"], "my-app");
    assert_eq!(json["expires_at"], 2_000_000_000);
    // Same keep-alive connection, bare token this time.
    let reply = client
        .get_with(
            "/v1/token?issuer=ttd&app=other",
            "Accept: application/jwt\r\n",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/jwt"));
    assert_eq!(reply.body, token_for("ttd", "other").as_bytes());
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn failures_are_problems_with_stable_types() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut client = server.client().await;
    let cases = [
        ("/v1/token?issuer=ttd&app=my%20app", 400, "bad-request"),
        ("/v1/token?issuer=ttd&scope=x", 400, "bad-request"),
        ("/v1/token?issuer=ttd&app=%FF", 400, "bad-request"),
        ("/v1/token?issuer=ttd&app=third", 403, "not-granted"),
        ("/v1/token?issuer=elsewhere&app=a", 403, "not-granted"),
        ("/v1/token?issuer=nowhere&app=a", 404, "unknown-issuer"),
        ("/v1/token?issuer=down&app=a", 503, "hsm-unavailable"),
        ("/v1/token?issuer=busy&app=a", 503, "overloaded"),
        ("/v1/token", 400, "parameter-required"),
        ("/v1/token?issuer=ttd", 400, "parameter-required"),
        ("/v1/tokens", 404, "not-found"),
    ];
    for (target, status, kind) in cases {
        let reply = client.get(target).await;
        assert_eq!(
            (reply.status, reply.problem().as_str()),
            (status, kind),
            "{target}"
        );
        let retry = reply.header("retry-after");
        assert_eq!(retry.is_some(), kind == "overloaded", "{target}: {retry:?}");
    }
    client
        .send(
            "POST /v1/token?issuer=ttd&app=my-app HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
    let reply = client.reply().await.unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.problem(), "method-not-allowed");
    assert_eq!(reply.header("allow"), Some("GET"));

    // Every token request above was counted and audited as refused.
    let metrics = client.get("/metrics").await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("tokens_refused_total{reason=\"not-granted\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("tokens_refused_total{reason=\"bad-request\"} 3\n"),
        "{text}"
    );
    let lines = server.audit_lines();
    assert_eq!(lines.len(), 10, "one line per token request");
    assert!(lines.iter().all(|l| l["outcome"] == "refused"));
    assert_eq!(lines[3]["reason"], "not-granted");
    assert_eq!(lines[3]["app"], "third");
    assert_eq!(lines[3]["uid"], my_uid());
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn issued_tokens_are_audited_without_the_token() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(
        client.get("/v1/token?issuer=ttd&app=my-app").await.status,
        200
    );
    let text = std::fs::read_to_string(&server.audit_file).unwrap();
    assert!(!text.contains(&token_for("ttd", "my-app")));
    let lines = server.audit_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["outcome"], "issued");
    assert_eq!(lines[0]["kid"], "KID1");
    assert_eq!(lines[0]["exp"], 2_000_000_000);
    // SAFETY: getpid cannot fail.
    assert_eq!(lines[0]["pid"], unsafe { libc::getpid() });
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn parameters_may_be_omitted_with_a_single_grant() {
    let server = Server::start(vec![grant(my_uid(), "ttd", &["my-app"])], |_| {}).await;
    let mut client = server.client().await;
    let reply = client.get("/v1/token").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["issuer"], "ttd");
    assert_eq!(reply.json()["app"], "my-app");
    assert_eq!(reply.json()["token"], token_for("ttd", "my-app"));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn another_uid_is_refused_until_the_policy_grants_it() {
    let server = Server::start(vec![grant(my_uid() + 1, "ttd", &["*"])], |_| {}).await;
    let mut client = server.client().await;
    let reply = client.get("/v1/token?issuer=ttd&app=my-app").await;
    assert_eq!(
        (reply.status, reply.problem().as_str()),
        (403, "not-granted")
    );
    let new = Policy::from_config(&[grant(my_uid(), "ttd", &["*"])]).unwrap();
    server.front.replace_policy(new);
    // The open connection is kept and now gets its token.
    let reply = client.get("/v1/token?issuer=ttd&app=my-app").await;
    assert_eq!(reply.status, 200);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn audit_lines_name_the_peers_executable_when_a_uid_grant_matched() {
    let server = Server::start(vec![grant(my_uid(), "ttd", &["my-app"])], |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(
        client.get("/v1/token?issuer=ttd&app=my-app").await.status,
        200
    );
    assert_eq!(
        client.get("/v1/token?issuer=ttd&app=other").await.status,
        403
    );
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let lines = server.audit_lines();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        // SAFETY: getpid cannot fail.
        assert_eq!(line["pid"], unsafe { libc::getpid() });
        assert_eq!(line["exe"], exe.to_str().unwrap(), "{line}");
    }
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_grant_on_the_process_added_later_applies_to_an_open_connection() {
    let server = Server::start(vec![grant(my_uid(), "ttd", &["my-app"])], |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(
        client.get("/v1/token?issuer=ttd&app=my-app").await.status,
        200
    );
    // A reload adds a grant on the executable: the connection was pinned
    // when it was accepted, so its process can still be read safely.
    let by_exe = GrantConfig {
        exe: Some(std::fs::read_link("/proc/self/exe").unwrap()),
        ..grant(my_uid(), "ttd", &["by-exe"])
    };
    server
        .front
        .replace_policy(Policy::from_config(&[by_exe]).unwrap());
    assert_eq!(
        client.get("/v1/token?issuer=ttd&app=by-exe").await.status,
        200
    );
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn grants_by_executable_and_group_read_the_peer_process() {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    // SAFETY: getgid cannot fail.
    let gid = unsafe { libc::getgid() };
    let grants = vec![
        GrantConfig {
            exe: Some(exe.clone()),
            ..grant(my_uid(), "ttd", &["by-exe"])
        },
        GrantConfig {
            exe: Some("/usr/bin/somebody-else".into()),
            ..grant(my_uid(), "ttd", &["wrong-exe"])
        },
        GrantConfig {
            gid: Some(gid),
            uid: None,
            ..grant(0, "ttd", &["by-group"])
        },
    ];
    let server = Server::start(grants, |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(
        client.get("/v1/token?issuer=ttd&app=by-exe").await.status,
        200
    );
    assert_eq!(
        client.get("/v1/token?issuer=ttd&app=by-group").await.status,
        200
    );
    assert_eq!(
        client
            .get("/v1/token?issuer=ttd&app=wrong-exe")
            .await
            .status,
        403
    );
    let lines = server.audit_lines();
    assert_eq!(lines[0]["exe"], exe.to_str().unwrap());
    server.shut_down().await.unwrap();
}

/// `sockaddr_un` for `path`, built before a fork so the child need not allocate.
fn unix_address(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < address.sun_path.len(), "{path:?} is too long");
    for (to, from) in address.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    (address, length)
}

#[tokio::test]
async fn a_peer_that_execs_after_connecting_keeps_the_program_it_connected_as() {
    let test_binary = std::fs::read_link("/proc/self/exe").unwrap();
    let grants = vec![
        GrantConfig {
            exe: Some("/bin/sh".into()),
            ..grant(my_uid(), "ttd", &["as-sh"])
        },
        GrantConfig {
            exe: Some(test_binary.clone()),
            ..grant(my_uid(), "ttd", &["as-connected"])
        },
    ];
    let server = Server::start(grants, |_| {}).await;
    // The child connects as this test binary, waits until the agent has
    // accepted (the first byte of a /healthz answer), then execs sh, which
    // asks for both apps on that same connection.
    let (address, length) = unix_address(&server.socket);
    let mut command = std::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("printf 'GET /v1/token?issuer=ttd&app=as-sh HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /v1/token?issuer=ttd&app=as-connected HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3; exec cat <&3")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // calls on memory prepared before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
            let mut first = 0u8;
            let ok = fd >= 0
                && libc::connect(fd, (&address as *const libc::sockaddr_un).cast(), length) == 0
                && libc::write(fd, ask.as_ptr().cast(), ask.len()) == ask.len() as isize
                && libc::recv(fd, (&mut first as *mut u8).cast(), 1, libc::MSG_PEEK) == 1
                && (fd == 3 || libc::dup2(fd, 3) == 3);
            match ok {
                true => Ok(()),
                false => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let (pid, output) = tokio::task::spawn_blocking(move || {
        let child = command.spawn().unwrap();
        (child.id(), child.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let answers = String::from_utf8(output.stdout).unwrap();
    let statuses: Vec<&str> = answers
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| &answer[..3])
        .collect();
    assert_eq!(statuses, ["200", "403", "200"], "{answers}");
    let lines = server.audit_lines();
    let refused = lines.iter().find(|l| l["app"] == "as-sh").unwrap();
    assert_eq!(refused["pid"], pid, "{refused}");
    assert_eq!(refused["exe"], test_binary.to_str().unwrap(), "{refused}");
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn grants_lists_what_the_caller_may_have() {
    let mut grants = wide_grants();
    grants.push(grant(my_uid() + 1, "hidden", &["x"]));
    let server = Server::start(grants, |_| {}).await;
    let reply = server.client().await.get("/v1/grants").await;
    assert_eq!(reply.status, 200);
    let json = reply.json();
    assert_eq!(json["uid"], my_uid());
    let listed: Vec<_> = json["grants"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 5, "{json}");
    assert_eq!(listed[0]["issuer"], "ttd");
    assert_eq!(listed[0]["apps"], serde_json::json!(["my-app", "other"]));
    assert_eq!(listed[1]["apps"], serde_json::json!(["*"]));
    assert!(!json.to_string().contains("hidden"));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut client = server.client().await;
    let health = client.get("/healthz").await;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(client.get("/readyz").await.status, 200);
    *server.source.not_ready.lock().unwrap() = Some("not logged in to the token".into());
    let ready = client.get("/readyz").await;
    assert_eq!((ready.status, ready.problem().as_str()), (503, "not-ready"));
    assert_eq!(ready.json()["detail"], "not logged in to the token");
    client.get("/v1/token?issuer=ttd&app=my-app").await;
    let metrics = client.get("/metrics").await;
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("access_token_agent_tokens_issued_total 1\n"),
        "{text}"
    );
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_body_on_get_is_refused_and_the_connection_closed() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut client = server.client().await;
    client
        .send("GET /v1/token?issuer=ttd&app=my-app HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let reply = client.reply().await.unwrap();
    assert_eq!(
        (reply.status, reply.problem().as_str()),
        (400, "body-not-allowed")
    );
    assert!(client.closed_within(Duration::from_secs(2)).await);
    let mut chunked = server.client().await;
    chunked
        .send("GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
        .await;
    assert_eq!(chunked.reply().await.unwrap().status, 400);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let server = Server::start(wide_grants(), |c| c.max_header_bytes = 4096).await;
    let mut client = server.client().await;
    let big = format!("X-Filler: {}\r\n", "a".repeat(5000));
    client
        .send(&format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{big}\r\n"))
        .await;
    let reply = client.reply().await.expect("an answer before the close");
    assert_eq!(reply.status, 431);
    assert_eq!(reply.problem(), "head-too-large");
    let detail = reply.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("4096") && detail.contains("server.max_header_bytes"),
        "{detail}"
    );
    assert!(client.closed_within(Duration::from_secs(2)).await);
    // Just under the limit is fine.
    let mut fits = server.client().await;
    let filler = format!("X-Filler: {}\r\n", "a".repeat(3000));
    assert_eq!(fits.get_with("/healthz", &filler).await.status, 200);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn unreadable_requests_get_problem_json_then_a_close() {
    let server = Server::start(wide_grants(), |_| {}).await;
    for garbage in [
        "GET /v1/token HTTP/9.9\r\nHost: x\r\n\r\n",
        "NOT A REQUEST\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
    ] {
        let mut client = server.client().await;
        client.send(garbage).await;
        let reply = client.reply().await.expect("an answer before the close");
        assert_eq!(reply.status, 400, "{garbage:?}");
        assert_eq!(reply.problem(), "bad-request", "{garbage:?}");
        assert!(client.closed_within(Duration::from_secs(2)).await);
    }
    // After an HTTP/1.0 keep-alive request hyper answers in HTTP/1.0.
    let mut client = server.client().await;
    client
        .send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nNOT A REQUEST\r\n\r\n")
        .await;
    assert_eq!(client.reply().await.unwrap().status, 200);
    let refused = client
        .reply()
        .await
        .expect("an answer to the unreadable one");
    assert_eq!(refused.problem(), "bad-request");
    // A readable request on a new connection is served as ever.
    assert_eq!(server.client().await.get("/healthz").await.status, 200);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn slow_request_head_times_out() {
    let server = Server::start(wide_grants(), |c| {
        c.header_read_timeout_seconds = 0.3;
        c.idle_timeout_seconds = 30.0;
    })
    .await;
    let mut client = server.client().await;
    let begun = Instant::now();
    client.send("GET /healthz HTTP/1.1\r\nHo").await;
    assert!(client.closed_within(Duration::from_secs(3)).await);
    let waited = begun.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connection_times_out_but_a_busy_one_does_not() {
    let server = Server::start(wide_grants(), |c| {
        c.header_read_timeout_seconds = 0.3;
        c.idle_timeout_seconds = 1.0;
    })
    .await;
    let mut client = server.client().await;
    // Idle pauses shorter than the idle timeout, though longer than the
    // header timeout, keep the connection.
    for _ in 0..3 {
        assert_eq!(client.get("/healthz").await.status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let begun = Instant::now();
    assert!(client.closed_within(Duration::from_secs(3)).await);
    let waited = begun.elapsed();
    assert!(
        waited >= Duration::from_millis(100),
        "closed after {waited:?}"
    );
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_closed() {
    let server = Server::start(wide_grants(), |c| c.max_connections = 2).await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    assert_eq!(first.get("/healthz").await.status, 200);
    assert_eq!(second.get("/healthz").await.status, 200);
    let mut third = server.client().await;
    let reply = third.get("/healthz").await;
    assert_eq!(
        (reply.status, reply.problem().as_str()),
        (503, "too-many-connections")
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(third.closed_within(Duration::from_secs(2)).await);
    // A freed place is taken by the next connection.
    drop(first);
    let mut fourth = None;
    for _ in 0..50 {
        let mut client = server.client().await;
        if client.get("/healthz").await.status == 200 {
            fourth = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fourth.is_some(), "a connection under the cap is served");
    assert_eq!(second.get("/healthz").await.status, 200);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_burst_over_the_cap_gets_503_on_every_connection() {
    let server = Server::start(wide_grants(), |c| c.max_connections = 1).await;
    let mut held = server.client().await;
    assert_eq!(held.get("/healthz").await.status, 200);
    // Far more than the refusals whose heads are read, all queued before
    // the accept loop runs again: blocking connects and writes never yield.
    let mut queued = Vec::new();
    for _ in 0..200 {
        let mut stream = std::os::unix::net::UnixStream::connect(&server.socket).unwrap();
        std::io::Write::write_all(
            &mut stream,
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .unwrap();
        stream.set_nonblocking(true).unwrap();
        queued.push(stream);
    }
    let mut burst: Vec<Client> = queued
        .into_iter()
        .map(|stream| Client {
            stream: UnixStream::from_std(stream).unwrap(),
            buf: Vec::new(),
        })
        .collect();
    for (i, client) in burst.iter_mut().enumerate() {
        let reply = client
            .reply()
            .await
            .unwrap_or_else(|| panic!("connection {i} closed without an answer"));
        assert_eq!(reply.status, 503, "connection {i}");
        assert_eq!(reply.header("retry-after"), Some("1"), "connection {i}");
        assert!(client.closed_within(Duration::from_secs(2)).await);
    }
    assert_eq!(held.get("/healthz").await.status, 200);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut busy = server.client().await;
    let mut idle = server.client().await;
    assert_eq!(idle.get("/healthz").await.status, 200);
    busy.send("GET /v1/token?issuer=slow&app=a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    server.source.entered.notified().await;

    let (socket, source) = (server.socket.clone(), server.source.clone());
    let shutting_down = tokio::spawn(server.shut_down());
    // Accepting stops and the socket file goes, while the request waits.
    for _ in 0..100 {
        if !socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!socket.exists(), "the socket file is removed on shutdown");
    assert!(UnixStream::connect(&socket).await.is_err());
    assert!(idle.closed_within(Duration::from_secs(2)).await);
    assert!(!shutting_down.is_finished());

    source.release.notify_one();
    let reply = busy
        .reply()
        .await
        .expect("the request in flight is answered");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["token"], token_for("slow", "a"));
    assert!(busy.closed_within(Duration::from_secs(2)).await);
    let result = tokio::time::timeout(Duration::from_secs(5), shutting_down).await;
    result.expect("serve returns").unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_does_not_wait_for_silent_connections() {
    let server = Server::start(wide_grants(), |c| {
        c.header_read_timeout_seconds = 30.0;
        c.shutdown_timeout_seconds = 30.0;
    })
    .await;
    let mut silent = server.client().await;
    let mut started = server.client().await;
    // Let the agent accept both before it is told to stop.
    assert_eq!(server.client().await.get("/healthz").await.status, 200);
    started.send("GET /healthz HTTP/1.1\r\nHo").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(server.shut_down());
    assert!(silent.closed_within(Duration::from_secs(2)).await);
    // A request head already under way is still answered.
    started.send("st: x\r\n\r\n").await;
    assert_eq!(started.reply().await.unwrap().status, 200);
    let result = tokio::time::timeout(Duration::from_secs(5), stopping).await;
    result.expect("serve returns").unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_is_bounded_when_a_request_never_finishes() {
    let server = Server::start(wide_grants(), |c| c.shutdown_timeout_seconds = 0.3).await;
    let mut busy = server.client().await;
    busy.send("GET /v1/token?issuer=slow&app=a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    server.source.entered.notified().await;
    let begun = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), server.shut_down()).await;
    result
        .expect("serve returns after the grace period")
        .unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(250));
}

/// Requests per second on the token route with a source that answers at
/// once (what a cache hit costs the front), over 64 keep-alive connections,
/// clients on the same cores. Run:
/// `cargo test --release -p access-token-agent --lib throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it in release mode"]
async fn throughput_of_the_token_route() {
    const CONNECTIONS: usize = 64;
    let run_for = Duration::from_secs(3);
    let server = Server::start(wide_grants(), |_| {}).await;
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let socket = server.socket.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(&socket).await;
                let begun = Instant::now();
                let mut served = 0u64;
                while begun.elapsed() < run_for {
                    client
                        .send("GET /v1/token?issuer=ttd&app=my-app HTTP/1.1\r\nHost: x\r\n\r\n")
                        .await;
                    assert_eq!(client.reply().await.unwrap().status, 200);
                    served += 1;
                }
                served
            })
        })
        .collect();
    let mut total = 0;
    for client in clients {
        total += client.await.unwrap();
    }
    assert_eq!(
        server.audit_lines().len() as u64,
        total,
        "one audit line each"
    );
    let rate = total as f64 / run_for.as_secs_f64();
    println!("{CONNECTIONS} connections: {rate:.0} tokens/s ({total} in {run_for:?})");
    server.shut_down().await.unwrap();
}
