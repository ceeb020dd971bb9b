//! The client library, the `access-token` command and the examples in
//! client/examples, against a real agent on a real socket with SoftHSM
//! behind it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use access_token_client::{blocking, Client, Error, Retry};
use integration_tests::daemon::{audit_lines, exported_cert, ttd_token, Daemon};
use integration_tests::{sha1_thumbprint, verify_jwt, TestToken};

/// No retries: each answer as the agent gives it.
const ONCE: Retry = Retry {
    attempts: 1,
    first_delay: Duration::from_millis(50),
    max_delay: Duration::from_secs(2),
};

fn blocking_client(client: Client) -> blocking::Client {
    blocking::Client::wrap(client).expect("a client runtime")
}

/// The exported certificate as a PEM file in the token's directory.
fn cert_pem_file(token: &TestToken) -> std::path::PathBuf {
    token.write_file("ttd.pem", exported_cert(token, "pem"))
}

/// The socket inodes the process `pid` holds open (`socket:[N]` links in
/// /proc/PID/fd): its listener, and one per connection it has accepted.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the agent's /proc/PID/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?.to_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Issued tokens according to the agent's audit file.
fn issued_count(token: &TestToken) -> usize {
    audit_lines(token)
        .iter()
        .filter(|line| line["outcome"] == "issued")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_client_gets_a_token_that_verifies() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let client = Client::new(&daemon.socket);
    let issued = client
        .token(Some("ttd"), Some("my-app"))
        .await
        .expect("a token");

    let pem = exported_cert(&token, "pem");
    let claims = verify_jwt(&issued.token, &pem, "ttd");
    assert_eq!(claims["urn:altinn:app"], "my-app");
    assert_eq!(issued.expires_at, claims["exp"].as_i64().unwrap());
    assert_eq!(issued.kid, sha1_thumbprint(&cert_pem_file(&token)));
    assert_eq!(
        (issued.issuer.as_str(), issued.app.as_str()),
        ("ttd", "my-app")
    );
}

#[test]
fn blocking_client_gets_a_token_that_verifies() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let client = blocking_client(Client::new(&daemon.socket));
    let issued = client.token(Some("ttd"), Some("b")).expect("a token");
    let claims = verify_jwt(&issued.token, &exported_cert(&token, "pem"), "ttd");
    assert_eq!(claims["urn:altinn:app"], "b");
    assert_eq!(issued.kid, sha1_thumbprint(&cert_pem_file(&token)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_client_keeps_its_connection_alive() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let before = socket_inodes(daemon.pid());
    let client = Client::new(&daemon.socket).with_retry(ONCE);
    client.token(Some("ttd"), Some("a")).await.unwrap();
    let first = socket_inodes(daemon.pid());
    assert_eq!(first.difference(&before).count(), 1, "one connection");
    for app in ["a", "b", "c", "d", "e", "f"] {
        client.token(Some("ttd"), Some(app)).await.unwrap();
        client.grants().await.unwrap();
    }
    assert_eq!(
        socket_inodes(daemon.pid()),
        first,
        "the same one connection"
    );
    assert_eq!(issued_count(&token), 7);
}

#[test]
fn the_blocking_client_keeps_its_connection_alive() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let before = socket_inodes(daemon.pid());
    let client = blocking_client(Client::new(&daemon.socket).with_retry(ONCE));
    client.token(Some("ttd"), Some("a")).unwrap();
    let first = socket_inodes(daemon.pid());
    assert_eq!(first.difference(&before).count(), 1, "one connection");
    for app in ["a", "b", "c", "d", "e", "f"] {
        client.token(Some("ttd"), Some(app)).unwrap();
        client.ready().unwrap();
    }
    assert_eq!(
        socket_inodes(daemon.pid()),
        first,
        "the same one connection"
    );
}

/// `ttd_token` plus a grant for `other`, an issuer the agent does not have.
fn token_granting_an_unknown_issuer(key_type: &str, extra: &str) -> TestToken {
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    ttd_token(
        key_type,
        &format!("[[grant]]\nuid = {me}\nissuer = \"other\"\napps = [\"*\"]\n\n{extra}"),
    )
}

#[test]
fn refusals_are_typed_and_carry_the_agents_problem() {
    let token = token_granting_an_unknown_issuer("p256", "");
    let daemon = Daemon::start(&token);
    let client = blocking_client(Client::new(&daemon.socket));

    let refused = client.token(Some("nope"), Some("a")).unwrap_err();
    assert!(matches!(refused, Error::NotGranted(_)), "{refused:?}");
    let problem = refused.problem().expect("the agent's problem");
    assert_eq!(problem.status, 403);
    assert_eq!(problem.short_name(), "not-granted");
    assert_eq!(problem.kind, "urn:access-token-agent:problem:not-granted");
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    assert!(problem.detail.contains(&format!("uid {me}")), "{problem:?}");
    assert!(refused.to_string().contains(&problem.detail), "{refused}");

    let unknown = client.token(Some("other"), Some("a")).unwrap_err();
    assert!(matches!(unknown, Error::UnknownIssuer(_)), "{unknown:?}");
    assert_eq!(unknown.problem().unwrap().status, 404);
    assert_eq!(unknown.problem().unwrap().short_name(), "unknown-issuer");

    let malformed = client.token(Some("ttd"), Some("a\nb")).unwrap_err();
    assert!(matches!(malformed, Error::BadRequest(_)), "{malformed:?}");
    assert_eq!(malformed.problem().unwrap().short_name(), "bad-request");
    assert!(!malformed.problem().unwrap().detail.is_empty());

    // Two granted issuers: leaving the issuer out is ambiguous.
    let ambiguous = client.token(None, Some("a")).unwrap_err();
    assert!(matches!(ambiguous, Error::BadRequest(_)), "{ambiguous:?}");
    assert_eq!(
        ambiguous.problem().unwrap().short_name(),
        "parameter-required"
    );

    let refusals = audit_lines(&token)
        .iter()
        .filter(|line| line["outcome"] == "refused")
        .count();
    assert_eq!(refusals, 4, "each refusal asked the agent once");
}

#[test]
fn an_absent_socket_is_unreachable_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let retry = Retry {
        attempts: 3,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let client = blocking_client(Client::new(&socket).with_retry(retry));
    let started = Instant::now();
    let error = client.token(Some("ttd"), Some("a")).unwrap_err();
    let waited = started.elapsed();
    match &error {
        Error::Unreachable { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{error}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(error.problem().is_none());
    assert!(
        error.to_string().contains(socket.to_str().unwrap()),
        "{error}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "two waits of 100 and 200 ms, then the error: {waited:?}"
    );
}

#[test]
fn a_request_during_an_agent_restart_is_served_by_the_new_agent() {
    const GAP: Duration = Duration::from_millis(300);
    let token = ttd_token("p256", "");
    let mut first = Daemon::start(&token);
    let client = blocking_client(Client::new(&first.socket));
    client
        .token(Some("ttd"), Some("a"))
        .expect("the first agent serves");
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0));
    let without_retry = blocking_client(Client::new(&first.socket).with_retry(ONCE));
    let gap_error = without_retry.token(Some("ttd"), Some("a")).unwrap_err();
    assert!(
        matches!(gap_error, Error::Unreachable { .. }),
        "the socket is gone between the agents: {gap_error:?}"
    );

    std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            std::thread::sleep(GAP);
            Daemon::start(&token)
        });
        let started = Instant::now();
        let issued = client
            .token(Some("ttd"), Some("b"))
            .expect("served after the restart, thanks to the retry");
        assert!(started.elapsed() >= GAP, "{:?}", started.elapsed());
        verify_jwt(&issued.token, &exported_cert(&token, "pem"), "ttd");
        let second = second.join().expect("the second agent started");
        assert!(second.process.id() != first.process.id());
    });
    assert_eq!(issued_count(&token), 2);
}

#[test]
fn a_request_during_a_socket_activated_restart_waits_in_the_held_listener() {
    const GAP: Duration = Duration::from_millis(300);
    let token = ttd_token("p256", "");
    let socket = token.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let activated = |token: &TestToken| {
        let mut daemon = Daemon::spawn(token, |command| {
            integration_tests::daemon::pass_listener(command, &listener)
        })
        .ready(token);
        daemon.socket = socket.clone();
        daemon
    };
    let mut first = activated(&token);
    let client = blocking_client(Client::new(&socket));
    client
        .token(Some("ttd"), Some("a"))
        .expect("the first agent serves");
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0));
    assert!(socket.exists(), "the held socket stays, as systemd's does");

    std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            std::thread::sleep(GAP);
            activated(&token)
        });
        let started = Instant::now();
        let issued = client
            .token(Some("ttd"), Some("b"))
            .expect("served by the next agent");
        assert!(started.elapsed() >= GAP, "{:?}", started.elapsed());
        verify_jwt(&issued.token, &exported_cert(&token, "pem"), "ttd");
        second.join().expect("the second agent started");
    });
}

/// Rewrites the config so the agent serves at most `max` connections.
fn limit_connections(token: &TestToken, max: usize) {
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let config = config.replacen(
        "[server]\n",
        &format!("[server]\nmax_connections = {max}\n"),
        1,
    );
    std::fs::write(token.config_path(), config).unwrap();
}

#[test]
fn a_503_is_retried_after_the_agents_retry_after_and_only_so_often() {
    let token = ttd_token("p256", "");
    limit_connections(&token, 1);
    let daemon = Daemon::start(&token);

    let held = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let twice = Retry {
        attempts: 2,
        ..Retry::default()
    };
    let started = Instant::now();
    let error = blocking_client(Client::new(&daemon.socket).with_retry(twice))
        .token(Some("ttd"), Some("a"))
        .unwrap_err();
    match &error {
        Error::Unavailable {
            problem,
            retry_after,
        } => {
            assert_eq!(problem.short_name(), "too-many-connections");
            assert_eq!(*retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "one Retry-After wait between two attempts: {waited:?}"
    );

    std::thread::scope(|scope| {
        scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let started = Instant::now();
        blocking_client(Client::new(&daemon.socket))
            .token(Some("ttd"), Some("a"))
            .expect("served once the connection is free");
        assert!(started.elapsed() >= Duration::from_secs(1));
    });
}

#[test]
fn the_cache_answers_without_asking_until_the_margin() {
    // ECDSA signatures differ every time and the agent's cache is off, so a
    // second identical token can only come from the client's cache.
    let token = ttd_token("p256", "[token]\nlifetime_seconds = 6\ncache = false\n");
    let daemon = Daemon::start(&token);
    let client = blocking_client(
        Client::new(&daemon.socket)
            .with_retry(ONCE)
            .with_cache(Duration::from_secs(4)),
    );
    let first = client.token(Some("ttd"), Some("a")).unwrap();
    let again = client.token(Some("ttd"), Some("a")).unwrap();
    assert_eq!(first, again);
    assert_eq!(issued_count(&token), 1, "the second came from the cache");
    let other = client.token(Some("ttd"), Some("b")).unwrap();
    assert_ne!(other.token, first.token);
    assert_eq!(issued_count(&token), 2);

    while integration_tests::unix_now() < first.expires_at - 4 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fresh = client.token(Some("ttd"), Some("a")).unwrap();
    assert_ne!(fresh.token, first.token, "within the margin: a new token");
    assert!(fresh.expires_at > first.expires_at);
    assert_eq!(issued_count(&token), 3);
    verify_jwt(&fresh.token, &exported_cert(&token, "pem"), "ttd");
}
