//! The client library, the `access-token` command and the examples in
//! client/examples, against a real agent on a real socket with SoftHSM
//! behind it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use access_token_client::{blocking, Client, Error, Retry};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::daemon::{
    audit_lines, client_as, client_binary, exported_cert, open_directory_to_others, ttd_token,
    Daemon,
};
use integration_tests::{
    jws_part, openssl, rsa_self_signed, sha1_thumbprint, ttd_pem, ttd_pfx, verify_jwt, OutputExt,
    TestToken,
};

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

/// The `access-token` command with `ACCESS_TOKEN_AGENT_SOCKET` = `socket`.
fn access_token(socket: &Path, args: &[&str]) -> Output {
    toward_agent(Command::new(client_binary()).args(args), socket)
        .output()
        .expect("run access-token")
}

/// The one line a command printed, without its newline; panics on more.
fn single_line(out: &Output) -> String {
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {text:?}");
    assert!(text.ends_with('\n'));
    lines[0].to_owned()
}

#[test]
fn the_token_command_prints_the_bare_token_or_the_header() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let pem = exported_cert(&token, "pem");

    let out = access_token(&daemon.socket, &["token", "--issuer", "ttd", "--app", "a"]).success();
    let bare = single_line(&out);
    assert_eq!(verify_jwt(&bare, &pem, "ttd")["urn:altinn:app"], "a");
    assert!(out.stderr.is_empty(), "{}", out.stderr_text());

    // --socket wins over the environment.
    let out = Command::new(client_binary())
        .env(
            access_token_client::SOCKET_ENV,
            token.path().join("absent.sock"),
        )
        .args(["--socket", daemon.socket.to_str().unwrap()])
        .args(["token", "--issuer", "ttd", "--app", "b", "--header"])
        .output()
        .unwrap()
        .success();
    let line = single_line(&out);
    let header = line
        .strip_prefix("PlatformAccessToken: ")
        .unwrap_or_else(|| panic!("a header line: {line:?}"));
    assert_eq!(verify_jwt(header, &pem, "ttd")["urn:altinn:app"], "b");
}

#[test]
fn the_token_command_exit_codes_tell_the_failures_apart() {
    let token = token_granting_an_unknown_issuer("p256", "");
    let daemon = Daemon::start(&token);
    let run = |args: &[&str]| access_token(&daemon.socket, args);

    let not_granted = run(&["token", "--issuer", "nope", "--app", "a"]).exit(3);
    assert!(not_granted.stdout.is_empty());
    assert!(
        not_granted.stderr_text().contains("no grant for"),
        "the agent's detail: {}",
        not_granted.stderr_text()
    );
    let unknown = run(&["token", "--issuer", "other", "--app", "a"]).exit(4);
    assert!(
        unknown.stderr_text().contains("other"),
        "{}",
        unknown.stderr_text()
    );
    let malformed = run(&["token", "--issuer", "ttd", "--app", "a\nb"]).exit(2);
    assert!(malformed.stderr_text().contains("bad request"));
    let usage = run(&["token", "--issuer"]).exit(2);
    assert!(
        usage.stderr_text().contains("--issuer"),
        "{}",
        usage.stderr_text()
    );
    run(&["token", "--bogus"]).exit(2);
    run(&["frobnicate"]).exit(2);

    let absent = token.path().join("absent.sock");
    let unreachable = access_token(&absent, &["token", "--issuer", "ttd", "--app", "a"]).exit(5);
    let message = unreachable.stderr_text();
    assert!(message.contains(absent.to_str().unwrap()), "{message}");
    assert!(message.contains("ACCESS_TOKEN_AGENT_SOCKET"), "{message}");

    let help = run(&["--help"]).success().stdout_text();
    for (code, meaning) in [
        (2, "usage"),
        (3, "not granted"),
        (4, "unknown issuer"),
        (5, "unreachable"),
        (7, "verify"),
    ] {
        assert!(
            help.lines()
                .any(|line| line.starts_with(&format!("  {code}  ")) && line.contains(meaning)),
            "exit code {code} ({meaning}) in --help:\n{help}"
        );
    }
}

#[test]
fn status_shows_readiness_and_the_callers_grants() {
    let token = token_granting_an_unknown_issuer("p256", "");
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let config = config.replacen("[server]\n", "[server]\nsocket_group = \"nogroup\"\n", 1);
    std::fs::write(token.config_path(), config).unwrap();
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);
    let out = access_token(&daemon.socket, &["status"]).success();
    let text = out.stdout_text();
    assert!(text.contains("ready: yes"), "{text}");
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    assert!(text.contains(&format!("uid {me}")), "{text}");
    assert!(text.contains("issuer ttd apps *"), "{text}");
    assert!(text.contains("issuer other apps *"), "{text}");

    // Another user without grants is told so.
    let nobody = client_as(65534, 65534, &daemon.socket, &["status"]);
    let text = nobody.success().stdout_text();
    assert!(text.contains("ready: yes"), "{text}");
    assert!(text.contains("granted: nothing"), "{text}");

    let absent = token.path().join("absent.sock");
    access_token(&absent, &["status"]).exit(5);
}

#[test]
fn status_says_not_ready_while_the_hsm_is_away() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let tokens = token.path().join("tokens");
    std::fs::rename(&tokens, token.path().join("tokens.away")).unwrap();
    let deadline = Instant::now() + integration_tests::daemon::PATIENCE;
    let out = loop {
        let out = access_token(&daemon.socket, &["status"]);
        if out.code() != 0 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.exit(6);
    assert!(
        out.stdout_text().contains("ready: no"),
        "{}",
        out.stdout_text()
    );
    assert!(
        out.stdout_text().contains("issuer ttd"),
        "grants still shown"
    );
    let refused = access_token(&daemon.socket, &["token", "--issuer", "ttd", "--app", "a"]);
    let message = refused.exit(6).stderr_text();
    assert!(
        message.starts_with("access-token: agent unavailable: "),
        "{message}"
    );
    std::fs::rename(token.path().join("tokens.away"), &tokens).unwrap();
}

/// The JSON a `decode` output line `name: {...}` starts, up to the next
/// line that starts without indentation.
fn decoded_json(text: &str, name: &str) -> serde_json::Value {
    let start = text
        .find(&format!("{name}: "))
        .unwrap_or_else(|| panic!("{name} in {text}"))
        + name.len()
        + 2;
    let rest = &text[start..];
    let end = rest.find("\n}").expect("the JSON's closing brace") + 2;
    serde_json::from_str(&rest[..end]).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
}

#[test]
fn decode_shows_header_claims_and_time_left() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let issued = blocking_client(Client::new(&daemon.socket))
        .token(Some("ttd"), Some("a"))
        .unwrap();
    let before = integration_tests::unix_now();
    let out = access_token(&daemon.socket, &["decode", &issued.token]).success();
    let after = integration_tests::unix_now();
    let text = out.stdout_text();
    assert_eq!(decoded_json(&text, "header"), jws_part(&issued.token, 0));
    assert_eq!(decoded_json(&text, "claims"), jws_part(&issued.token, 1));
    let left: i64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("time left: ")?
                .strip_suffix(" s")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("time left in {text}"));
    assert!(
        (issued.expires_at - after..=issued.expires_at - before).contains(&left),
        "{left}"
    );

    let expired = mint_at(&altinn_ttd_token(), integration_tests::unix_now() - 3600);
    let text = access_token(&daemon.socket, &["decode", &expired])
        .success()
        .stdout_text();
    assert!(text.contains("time left: none, expired"), "{text}");
    access_token(&daemon.socket, &["decode", "not-a-token"]).exit(2);
}

/// A token holding Altinn's ttd test key (tests/data/ttd-org.pfx), whose
/// certificate is valid from 2020 to 2030, so tokens can be minted in the
/// past; generated keys' certificates start now.
fn altinn_ttd_token() -> TestToken {
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let pfx = token.path().join("ttd-org.pfx");
    std::fs::copy(ttd_pfx(), &pfx).unwrap();
    let pfx = pfx.to_str().unwrap();
    let args = ["keys", "import", "--issuer", "ttd", "--pfx", pfx];
    token.agent(&args).success();
    token
}

/// A token for ttd/a minted by the agent as of `now` (Unix seconds).
fn mint_at(token: &TestToken, now: i64) -> String {
    let now = now.to_string();
    let args = ["mint", "--issuer", "ttd", "--app", "a", "--now", &now];
    token.agent(&args).success().stdout_text().trim().to_owned()
}

/// `token` with its claims replaced by `claims` and its signature kept.
fn with_claims(token: &str, claims: &serde_json::Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{}.{claims}.{}", parts[0], parts[2])
}

#[test]
fn verify_checks_tokens_as_platform_does_and_says_what_fails() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let issued = blocking_client(Client::new(&daemon.socket))
        .token(Some("ttd"), Some("a"))
        .unwrap();
    let socket = &daemon.socket;
    let verify = |cert: &Path, jwt: &str| {
        access_token(socket, &["verify", "--cert", cert.to_str().unwrap(), jwt])
    };

    let pem = token.write_file("ttd.pem", exported_cert(&token, "pem"));
    let der = token.write_file("ttd.der", exported_cert(&token, "der"));
    let keyvault = token.write_file("ttd.b64", exported_cert(&token, "keyvault"));
    assert_eq!(
        openssl(token.path(), &["x509", "-inform", "der", "-in", "ttd.der"]).stdout,
        std::fs::read(&pem).unwrap(),
        "the DER export is the PEM's certificate"
    );
    for cert in [&pem, &der, &keyvault] {
        let out = verify(cert, &issued.token).success();
        assert!(
            out.stdout_text().starts_with("valid"),
            "{}",
            out.stdout_text()
        );
    }

    let mut claims = jws_part(&issued.token, 1);
    claims["urn:altinn:app"] = "someone-elses-app".into();
    let tampered = verify(&pem, &with_claims(&issued.token, &claims)).exit(7);
    let tampered = tampered.stderr_text();
    assert!(
        tampered.contains("altered after it was signed"),
        "{tampered}"
    );

    let minted_at = integration_tests::unix_now() - 3600;
    let expired = verify(&ttd_pem(), &mint_at(&altinn_ttd_token(), minted_at)).exit(7);
    let expired = expired.stderr_text();
    // Altinn's lifetime is 300 s: exp is the minting time plus 300.
    assert!(
        expired.contains(&format!("expired at {}", minted_at + 300)),
        "{expired}"
    );

    let other = rsa_self_signed(token.path(), "other", 2048, "/CN=other");
    let wrong = verify(&other.cert, &issued.token).exit(7);
    let wrong = wrong.stderr_text();
    assert!(
        wrong.contains(&sha1_thumbprint(&pem)),
        "names the signer: {wrong}"
    );
    assert!(
        wrong.contains(&sha1_thumbprint(&other.cert)),
        "and this cert: {wrong}"
    );

    let messages: BTreeSet<_> = [&tampered, &expired, &wrong].into_iter().collect();
    assert_eq!(messages.len(), 3, "each failure has its own message");

    // The certificate outside its validity: Platform refuses it too.
    let far_future = (integration_tests::unix_now() + 100 * 365 * 86_400).to_string();
    let pem_path = pem.to_str().unwrap();
    let args = [
        "verify",
        "--now",
        &far_future,
        "--cert",
        pem_path,
        &issued.token,
    ];
    let late = access_token(socket, &args).exit(7);
    assert!(
        late.stderr_text().contains("certificate has expired"),
        "{}",
        late.stderr_text()
    );

    let not_a_cert = token.write_file("garbage.pem", "hello");
    let out = verify(&not_a_cert, &issued.token).exit(2);
    assert!(
        out.stderr_text().contains("certificate"),
        "{}",
        out.stderr_text()
    );
}

/// `client/examples/NAME`.
fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../client/examples")
        .join(name)
}

/// `command` with the agent's socket in its environment and no proxy
/// settings (curl would send the request for Platform through one).
fn toward_agent<'c>(command: &'c mut Command, socket: &Path) -> &'c mut Command {
    for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(proxy);
    }
    command
        .env(access_token_client::SOCKET_ENV, socket)
        .stdin(Stdio::null())
}

/// Runs `program example args` toward the agent at `socket`.
fn run_example(program: &str, name: &str, socket: &Path, args: &[&str]) -> Output {
    toward_agent(Command::new(program).arg(example(name)).args(args), socket)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (install it: hsm-config/install-deps.sh): {e}"))
}

#[test]
fn the_python_example_prints_a_token_or_the_agents_refusal() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let out = run_example(
        "python3",
        "get_token.py",
        &daemon.socket,
        &["ttd", "py-app"],
    );
    let printed = single_line(&out.success());
    let claims = verify_jwt(&printed, &exported_cert(&token, "pem"), "ttd");
    assert_eq!(claims["urn:altinn:app"], "py-app");

    let refused = run_example("python3", "get_token.py", &daemon.socket, &["nope", "a"]).exit(1);
    let message = refused.stderr_text();
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("not-granted"), "{message}");
    assert!(refused.stdout.is_empty());
    run_example("python3", "get_token.py", &daemon.socket, &["ttd"]).exit(2);
}

/// A one-request HTTP server on 127.0.0.1 standing in for Platform: it
/// answers 200 "ok" and hands back the request head it received.
fn platform_stand_in() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/register/api/v1/parties",
        listener.local_addr().unwrap()
    );
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the example's request");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(&stream);
        let mut head = String::new();
        while reader.read_line(&mut head).unwrap() > 2 {}
        (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        head
    });
    (url, server)
}

/// The `PlatformAccessToken` header's value in a request head.
fn sent_token(head: &str) -> &str {
    head.lines()
        .find_map(|line| line.strip_prefix("PlatformAccessToken: "))
        .unwrap_or_else(|| panic!("a PlatformAccessToken header in {head}"))
}

#[test]
fn the_curl_example_prints_a_token_and_sends_it_as_the_header() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let pem = exported_cert(&token, "pem");
    let out = run_example("sh", "curl.sh", &daemon.socket, &["ttd", "curl-app"]);
    let printed = single_line(&out.success());
    assert_eq!(
        verify_jwt(&printed, &pem, "ttd")["urn:altinn:app"],
        "curl-app"
    );

    let (url, platform) = platform_stand_in();
    let out = run_example("sh", "curl.sh", &daemon.socket, &["ttd", "b", &url]).success();
    assert_eq!(out.stdout_text(), "ok", "Platform's answer");
    let head = platform.join().unwrap();
    assert_eq!(
        verify_jwt(sent_token(&head), &pem, "ttd")["urn:altinn:app"],
        "b"
    );

    let refused = run_example("sh", "curl.sh", &daemon.socket, &["nope", "a"]).exit(1);
    assert!(
        refused.stderr_text().contains("not-granted"),
        "{}",
        refused.stderr_text()
    );
    assert!(refused.stdout.is_empty());
}

#[test]
fn the_header_line_pipes_into_curl() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let (url, platform) = platform_stand_in();
    let pipeline =
        r#""$0" token --issuer ttd --app piped --header | curl --silent --show-error -H @- "$1""#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(pipeline)
        .arg(client_binary())
        .arg(&url);
    let out = toward_agent(&mut command, &daemon.socket).output().unwrap();
    assert_eq!(out.success().stdout_text(), "ok");
    let head = platform.join().unwrap();
    let claims = verify_jwt(sent_token(&head), &exported_cert(&token, "pem"), "ttd");
    assert_eq!(claims["urn:altinn:app"], "piped");
}
