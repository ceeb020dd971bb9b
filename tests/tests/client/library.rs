//! The client library, async and blocking: tokens that verify, one kept-alive
//! connection, typed refusals, bounded retries through restarts and 503s,
//! timeouts, and its own cache.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use access_token_client::{Client, Error, Retry};
use integration_tests::daemon::{
    add_server_settings, audit_lines, exported_cert, pass_listener, ttd_token, Daemon,
};
use integration_tests::{sha1_thumbprint, unix_now, verify_jwt, TestToken};

use crate::{blocking_client, cert_pem_file, issued_count, token_granting_an_unknown_issuer, ONCE};

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

/// Asks for 31 tokens through one client (`connect` makes it, `ask` asks
/// for the app given) and checks that the agent saw one connection all along.
fn assert_one_connection<C>(connect: impl FnOnce(&Path) -> C, ask: impl Fn(&C, &str)) {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let before = socket_inodes(daemon.pid());
    let client = connect(&daemon.socket);
    ask(&client, "app-0");
    let first = socket_inodes(daemon.pid());
    assert_eq!(first.difference(&before).count(), 1, "one connection");
    // A lost race to reuse the connection opens a new one: ask many times.
    for n in 1..=30 {
        ask(&client, &format!("app-{n}"));
    }
    let last = socket_inodes(daemon.pid());
    assert_eq!(last, first, "the same one connection");
    assert_eq!(issued_count(&token), 31);
}

#[test]
fn the_async_client_keeps_its_connection_alive() {
    // Worker threads run the connection's task beside the request's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    assert_one_connection(
        |socket| Client::new(socket).with_retry(ONCE),
        |client, app| {
            runtime
                .block_on(client.token(Some("ttd"), Some(app)))
                .unwrap();
        },
    );
}

#[test]
fn the_blocking_client_keeps_its_connection_alive() {
    assert_one_connection(
        |socket| blocking_client(Client::new(socket).with_retry(ONCE)),
        |client, app| {
            client.token(Some("ttd"), Some(app)).unwrap();
        },
    );
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
        second.join().expect("the second agent started");
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
        let mut daemon =
            Daemon::spawn(token, |command| pass_listener(command, &listener)).ready(token);
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

#[test]
fn an_agent_that_does_not_answer_times_out_and_is_not_retried() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let client =
        blocking_client(Client::new(&daemon.socket).with_timeout(Duration::from_millis(500)));
    client.token(Some("ttd"), Some("a")).unwrap();

    // Stopped, the agent still has its socket: connections queue, nothing answers.
    daemon.signal(libc::SIGSTOP);
    wait_until_stopped(daemon.pid());
    let started = Instant::now();
    let error = client.token(Some("ttd"), Some("b")).unwrap_err();
    let waited = started.elapsed();
    daemon.signal(libc::SIGCONT);
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(
        error.to_string().contains("did not answer within 0.5 s"),
        "{error}"
    );
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(1500),
        "one attempt, no retries: {waited:?}"
    );
    client
        .token(Some("ttd"), Some("c"))
        .expect("served again once the agent runs");
}

/// kill(SIGSTOP) returns before the process stops; wait for state `T`.
fn wait_until_stopped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        if state == Some(Some('T')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the agent did not stop");
}

#[test]
fn a_503_is_retried_after_the_agents_retry_after_and_only_so_often() {
    let token = ttd_token("p256", "");
    add_server_settings(&token, "max_connections = 1");
    let daemon = Daemon::start(&token);

    let held = daemon.connect_accepted();
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
            // Freed while the client below waits out its Retry-After.
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

    while unix_now() < first.expires_at - 4 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fresh = client.token(Some("ttd"), Some("a")).unwrap();
    assert_ne!(fresh.token, first.token, "within the margin: a new token");
    assert!(fresh.expires_at > first.expires_at);
    assert_eq!(issued_count(&token), 3);
    verify_jwt(&fresh.token, &exported_cert(&token, "pem"), "ttd");
}
