//! The pod's projected service-account token on its way to the agent: the
//! library, the command and the examples send the token file's content as
//! `Authorization: Bearer …`, read again for each request (a renewal made
//! as the kubelet makes it is the one sent next), from the default path
//! when it exists and from none when it does not; the token is never
//! printed. An agent stand-in on a Unix socket records the requests, so
//! that what goes over the socket is what is asserted; a real agent with a
//! `[kubernetes]` section then serves or refuses what they send.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use access_token_client::{Client, Error};
use integration_tests::daemon::{audit_lines, client_binary, serve_config, Daemon};
use integration_tests::kubernetes::{jwks, IssuerKey, Pod, ISSUER};
use integration_tests::process::run_by;
use integration_tests::{unix_now, OutputExt, TestToken};

use crate::{blocking_client, single_line, toward_agent, ONCE};

/// What the stand-in hands out as the issued token.
const ISSUED: &str = "issued.by.stand-in";

/// A service-account token as the kubelet writes one (the test needs only
/// its being a JWS-shaped secret).
const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2ln";

/// An agent stand-in: answers every request with a token for ttd/a (the
/// bare token where `Accept: application/jwt` asks for it) and keeps each
/// request's head, on connections kept alive as the agent's are.
struct StandIn {
    dir: tempfile::TempDir,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    fn start() -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopped) = (Arc::clone(&heads), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        StandIn { dir, heads, stop }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// The path and the `Authorization` header (None where there was none)
    /// of each request so far, in order.
    fn authorizations(&self) -> Vec<(String, Option<String>)> {
        let heads = self.heads.lock().unwrap();
        heads
            .iter()
            .map(|head| {
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let value = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().to_owned())
                });
                (path, value)
            })
            .collect()
    }
}

impl Drop for StandIn {
    /// Ends the accept loop, which looks at `stop` after each connection.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(self.socket());
    }
}

/// Answers the requests on one connection until the client closes it.
fn serve(stream: UnixStream, heads: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(&stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let jwt = head
            .to_ascii_lowercase()
            .contains("accept: application/jwt");
        heads.lock().unwrap().push(head);
        let json = serde_json::json!({
            "token": ISSUED, "kid": "K", "issuer": "ttd", "app": "a",
            "expires_at": unix_now() + 300,
            "uid": 0, "gid": 0, "grants": [],
        })
        .to_string();
        let (kind, body) = match jwt {
            true => ("application/jwt", ISSUED.to_owned()),
            false => ("application/json", json),
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        (&stream).write_all(answer.as_bytes())?;
    }
}

/// A projected token volume as the kubelet lays it out: `token` links to
/// `..data/token`, and `..data` to a timestamped directory that a renewal
/// replaces with one atomic rename.
struct ProjectedVolume {
    dir: tempfile::TempDir,
    renewals: usize,
}

impl ProjectedVolume {
    fn new(token: &str) -> ProjectedVolume {
        let mut volume = ProjectedVolume {
            dir: tempfile::tempdir().unwrap(),
            renewals: 0,
        };
        std::os::unix::fs::symlink("..data/token", volume.token_file()).unwrap();
        volume.renew(token);
        volume
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// Writes `token` as the kubelet's renewal does.
    fn renew(&mut self, token: &str) {
        self.renewals += 1;
        let data = format!("..2026_12_07_{:02}", self.renewals);
        let dir = self.dir.path();
        std::fs::create_dir(dir.join(&data)).unwrap();
        std::fs::write(dir.join(&data).join("token"), token).unwrap();
        std::os::unix::fs::symlink(&data, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[test]
fn the_library_sends_the_token_file_and_reads_it_again_for_each_request() {
    let agent = StandIn::start();
    let mut volume = ProjectedVolume::new(SA_TOKEN);
    let client = blocking_client(
        Client::new(agent.socket())
            .with_retry(ONCE)
            .with_kubernetes_token_file(Some(volume.token_file())),
    );
    assert_eq!(client.token(Some("ttd"), Some("a")).unwrap().token, ISSUED);
    volume.renew("renewed.service-account.token");
    client.token(Some("ttd"), Some("a")).unwrap();
    client.grants().unwrap();
    client.ready().unwrap();
    assert_eq!(
        agent.authorizations(),
        [
            ("/v1/token?issuer=ttd&app=a".into(), bearer(SA_TOKEN)),
            (
                "/v1/token?issuer=ttd&app=a".into(),
                bearer("renewed.service-account.token")
            ),
            ("/v1/grants".into(), bearer("renewed.service-account.token")),
            ("/readyz".into(), None),
        ]
    );
}

#[test]
fn without_a_token_file_no_header_and_a_named_file_that_is_missing_is_an_error() {
    let agent = StandIn::start();
    // This machine is no pod: the default file does not exist.
    assert!(!Path::new(access_token_client::DEFAULT_KUBERNETES_TOKEN_FILE).exists());
    let default = blocking_client(Client::new(agent.socket()).with_retry(ONCE));
    default.token(Some("ttd"), Some("a")).unwrap();
    assert_eq!(
        agent.authorizations(),
        [("/v1/token?issuer=ttd&app=a".into(), None)]
    );

    let absent = agent.dir.path().join("no-token");
    let named = blocking_client(
        Client::new(agent.socket())
            .with_retry(ONCE)
            .with_kubernetes_token_file(Some(absent.clone())),
    );
    let error = named.token(Some("ttd"), Some("a")).unwrap_err();
    assert!(matches!(error, Error::KubernetesToken { .. }), "{error:?}");
    assert!(
        error.to_string().contains(absent.to_str().unwrap()),
        "{error}"
    );
    assert_eq!(agent.authorizations().len(), 1, "no request without it");
}

#[test]
fn the_command_sends_the_named_file_and_never_prints_the_token() {
    let agent = StandIn::start();
    let volume = ProjectedVolume::new(SA_TOKEN);
    let file = volume.token_file();
    let file = file.to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(client_binary())
            .args(["--socket", agent.socket().to_str().unwrap()])
            .args(["--kubernetes-token-file", file])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["token", "--issuer", "ttd", "--app", "a"]).success();
    assert_eq!(single_line(&out), ISSUED);
    let status = run(&["status"]).success();
    assert!(
        status
            .stdout_text()
            .contains(&format!("service-account token: {file}")),
        "{}",
        status.stdout_text()
    );
    for out in [&out, &status] {
        assert!(!out.stdout_text().contains(SA_TOKEN));
        assert!(!out.stderr_text().contains(SA_TOKEN));
    }
    assert_eq!(
        agent.authorizations(),
        [
            ("/v1/token?issuer=ttd&app=a".into(), bearer(SA_TOKEN)),
            ("/readyz".into(), None),
            ("/v1/grants".into(), bearer(SA_TOKEN)),
        ]
    );

    let missing = agent.dir.path().join("no-token");
    let out = Command::new(client_binary())
        .args(["--socket", agent.socket().to_str().unwrap()])
        .arg("--kubernetes-token-file")
        .arg(&missing)
        .args(["token", "--issuer", "ttd", "--app", "a"])
        .output()
        .unwrap()
        .exit(1);
    assert!(
        out.stderr_text().contains(missing.to_str().unwrap()),
        "{}",
        out.stderr_text()
    );
}

/// `command` in a pod's view of the file system: a tmpfs over /run (so
/// /var/run too) in a mount namespace of its own, holding
/// `secrets/access-token-agent/token` with `token`, as the app pod's
/// projected volume does.
fn in_a_pod(command: &Command, token: &str) -> Command {
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(concat!(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/access-token-agent",
            r#" && printf %s "$0" > /run/secrets/access-token-agent/token && exec "$@""#
        ))
        .arg(token);
    run_by(unshare, command)
}

/// Runs `program args` toward the stand-in, in a pod's view and out of it:
/// the Authorization headers the stand-in saw, and the pod's output.
fn from_a_pod_and_from_a_host(program: &str, args: &[&str]) -> (Vec<Option<String>>, Output) {
    let agent = StandIn::start();
    let mut command = Command::new(program);
    toward_agent(command.args(args), &agent.socket());
    let pod = in_a_pod(&command, SA_TOKEN).output().unwrap().success();
    command.output().unwrap().success();
    let headers = agent.authorizations().into_iter().map(|(_, v)| v).collect();
    (headers, pod)
}

#[test]
fn the_command_and_the_examples_send_the_default_file_where_it_exists() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/examples");
    let python = examples.join("get_token.py");
    let curl = examples.join("curl.sh");
    let binary = client_binary();
    let runs: [(&str, Vec<&str>); 3] = [
        (
            binary.to_str().unwrap(),
            vec!["token", "--issuer", "ttd", "--app", "a"],
        ),
        ("python3", vec![python.to_str().unwrap(), "ttd", "a"]),
        ("sh", vec![curl.to_str().unwrap(), "ttd", "a"]),
    ];
    for (program, args) in runs {
        let (headers, pod) = from_a_pod_and_from_a_host(program, &args);
        assert_eq!(headers, [bearer(SA_TOKEN), None], "{program} {args:?}");
        assert_eq!(single_line(&pod), ISSUED, "{program}");
        assert!(!pod.stderr_text().contains(SA_TOKEN), "{program}");
    }
}

/// A real agent that grants every ttd app to service account `my-app` of
/// namespace `apps` and nothing by uid, and the issuer key its JWKS holds.
/// The pod binding is off: these clients run in no pod's cgroup (the
/// packaging test `deploy` runs the binding as the DaemonSet has it).
fn agent_for_pods() -> (TestToken, Daemon, IssuerKey) {
    let token = TestToken::with_ttd_key("p256");
    let issuer = IssuerKey::p256(token.path(), "cluster");
    let jwks_file = token.write_file("jwks.json", jwks(&[&issuer]));
    let extra = format!(
        "[[issuer]]\nname = \"ttd\"\n\n[kubernetes]\njwks_file = {:?}\nissuer = {ISSUER:?}\nbind_to_pod = false\n\n[[grant]]\nk8s_namespace = \"apps\"\nk8s_service_account = \"my-app\"\nissuer = \"ttd\"\napps = [\"*\"]\n",
        jwks_file.to_str().unwrap()
    );
    token.write_config(&serve_config(&token, &extra));
    let daemon = Daemon::start(&token);
    (token, daemon, issuer)
}

#[test]
fn a_real_agent_serves_the_pod_the_sent_token_names_and_nothing_without_it() {
    let (token, daemon, issuer) = agent_for_pods();
    let app_pod = Pod::new("apps", "my-app");
    let mut volume = ProjectedVolume::new(&issuer.sign(&app_pod.claims()));
    let client = blocking_client(
        Client::new(&daemon.socket)
            .with_retry(ONCE)
            .with_kubernetes_token_file(Some(volume.token_file())),
    );
    client
        .token(Some("ttd"), Some("a"))
        .expect("the pod's token");
    let granted = client.grants().unwrap();
    assert_eq!(granted.grants.len(), 1, "{granted:?}");

    // Renewed with another namespace's token: the agent sees the new one.
    let other_pod = Pod::new("other", "my-app");
    volume.renew(&issuer.sign(&other_pod.claims()));
    let refused = client.token(Some("ttd"), Some("a")).unwrap_err();
    assert!(matches!(refused, Error::NotGranted(_)), "{refused:?}");

    // No token file (the default path is absent here): nothing.
    let bare = blocking_client(Client::new(&daemon.socket).with_retry(ONCE));
    let refused = bare.token(Some("ttd"), Some("a")).unwrap_err();
    assert!(matches!(refused, Error::NotGranted(_)), "{refused:?}");
    assert!(bare.grants().unwrap().grants.is_empty());

    volume.renew(&issuer.sign(&app_pod.claims()));
    let file = volume.token_file();
    let run = |args: &[&str]| {
        Command::new(client_binary())
            .args(["--socket", daemon.socket.to_str().unwrap()])
            .arg("--kubernetes-token-file")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    run(&["token", "--issuer", "ttd", "--app", "b"]).success();
    let status = run(&["status"]).success().stdout_text();
    assert!(status.contains("issuer ttd apps *"), "{status}");

    let lines = audit_lines(&token);
    let outcomes: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            let namespace = line["k8s_namespace"].as_str().unwrap_or("-");
            (line["outcome"].as_str().unwrap_or(""), namespace)
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("issued", "apps"),
            ("refused", "other"),
            ("refused", "-"),
            ("issued", "apps")
        ],
        "{lines:?}"
    );
    for line in &lines {
        assert!(!line.to_string().contains(".eyJ"), "no token in {line}");
    }
}
