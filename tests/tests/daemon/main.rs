//! The agent daemon end to end: a real `serve` process on a real Unix
//! socket, real SoftHSM behind it, and clients that are real processes.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::daemon::{
    audit_lines, body_of, client_as, exported_cert, log, open_directory_to_others, serve_config,
    status_of, ttd_token, Daemon,
};
use integration_tests::{OutputExt, TestToken};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

const NOBODY: u32 = 65534;

fn exported_pem(token: &TestToken) -> String {
    String::from_utf8(exported_cert(token, "pem")).expect("PEM is text")
}

fn part(token: &str, index: usize) -> String {
    let part = token.split('.').nth(index).expect("a JWS part");
    String::from_utf8(URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("UTF-8")
}

fn claims(token: &str) -> serde_json::Value {
    serde_json::from_str(&part(token, 1)).expect("JSON claims")
}

#[test]
fn token_over_the_socket_verifies_and_is_the_minted_token() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let issued = daemon
        .client()
        .token(Some("ttd"), Some("my-app"))
        .expect("a token");

    let key = DecodingKey::from_rsa_pem(exported_pem(&token).as_bytes()).expect("the exported PEM");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["platform.altinn.no"]);
    jsonwebtoken::decode::<serde_json::Value>(&issued.token, &key, &validation)
        .expect("the token verifies against the exported certificate");

    // RS256 is deterministic: the same key and instant give the same bytes,
    // so the daemon's token must be exactly what `mint` makes at its iat.
    let iat = claims(&issued.token)["iat"].as_i64().expect("iat");
    let minted = token
        .agent(&[
            "mint",
            "--issuer",
            "ttd",
            "--app",
            "my-app",
            "--now",
            &iat.to_string(),
        ])
        .success()
        .stdout_text();
    assert_eq!(issued.token, minted.trim());
    assert_eq!(issued.expires_at, iat + 300);
    assert_eq!(issued.issuer, "ttd");
    assert_eq!(issued.app, "my-app");
    assert_eq!(
        part(&issued.token, 0),
        format!(
            r#"{{"alg":"RS256","kid":"{}","x5t":"{}","typ":"JWT"}}"#,
            issued.kid,
            URL_SAFE_NO_PAD.encode(hex_bytes(&issued.kid))
        )
    );
}

#[test]
fn accept_jwt_gives_the_bare_token() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let answer = daemon.get("/v1/token?issuer=ttd&app=a", &["Accept: application/jwt"]);
    assert_eq!(status_of(&answer), 200, "{answer}");
    let body = body_of(&answer).trim();
    assert_eq!(body.split('.').count(), 3, "{body}");
    assert_eq!(claims(body)["urn:altinn:app"], "a");
}

#[test]
fn another_uid_is_refused_and_audited_while_the_granted_uid_is_served() {
    let token = ttd_token("rsa2048", "");
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let config = config.replacen("[server]\n", "[server]\nsocket_group = \"nogroup\"\n", 1);
    std::fs::write(token.config_path(), config).unwrap();
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);

    let refused = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    );
    assert_eq!(refused.code(), 3, "not granted\n{}", refused.stderr_text());
    assert!(refused.stdout.is_empty(), "no token for a refused caller");
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("the granted uid is served");

    let audit = audit_lines(&token);
    let refusal = audit
        .iter()
        .find(|line| line.to_string().contains("65534"))
        .unwrap_or_else(|| panic!("an audit line for uid 65534 in {audit:?}"));
    assert!(refusal.to_string().contains("refused"), "{refusal}");
    let issued_lines = audit
        .iter()
        .filter(|line| line.to_string().contains("issued"))
        .count();
    assert_eq!(issued_lines, 1, "{audit:?}");
    for line in &audit {
        assert!(
            !line.to_string().contains("eyJ"),
            "a token in the audit log: {line}"
        );
    }
}

#[test]
fn a_group_grant_serves_members_of_the_group() {
    let token = ttd_token(
        "rsa2048",
        "[[grant]]\ngroup = \"nogroup\"\nissuer = \"ttd\"\napps = [\"group-app\"]\n",
    );
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let config = config.replacen("[server]\n", "[server]\nsocket_group = \"nogroup\"\n", 1);
    std::fs::write(token.config_path(), config).unwrap();
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);

    let served = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "group-app"],
    );
    let served = served.success();
    assert_eq!(
        claims(served.stdout_text().trim())["urn:altinn:app"],
        "group-app"
    );
    let other_app = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "other"],
    );
    assert_eq!(other_app.code(), 3, "{}", other_app.stderr_text());
}

#[test]
fn an_exe_grant_serves_that_program_only() {
    let token = TestToken::with_ttd_key("rsa2048");
    let client = integration_tests::daemon::client_binary();
    let me = unsafe { (libc::getuid(), libc::getgid()) };
    token.write_config(&serve_config(
        &token,
        &format!(
            "[[issuer]]\nname = \"ttd\"\n\n[[grant]]\nuid = {}\nexe = {:?}\nissuer = \"ttd\"\napps = [\"*\"]\n",
            me.0,
            client.display().to_string()
        ),
    ));
    let daemon = Daemon::start(&token);
    client_as(
        me.0,
        me.1,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    )
    .success();
    // The same uid through another program (this test binary) is refused.
    let error = daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect_err("refused");
    assert!(
        matches!(error, access_token_client::Error::NotGranted(_)),
        "{error}"
    );
}

#[test]
fn a_single_grant_lets_the_caller_omit_issuer_and_app() {
    let token = TestToken::with_ttd_key("rsa2048");
    let me = unsafe { libc::getuid() };
    token.write_config(&serve_config(
        &token,
        &format!("[[issuer]]\nname = \"ttd\"\n\n[[grant]]\nuid = {me}\nissuer = \"ttd\"\napps = [\"only-app\"]\n"),
    ));
    let daemon = Daemon::start(&token);
    let issued = daemon
        .client()
        .token(None, None)
        .expect("the one granted token");
    assert_eq!(issued.issuer, "ttd");
    assert_eq!(claims(&issued.token)["urn:altinn:app"], "only-app");
}

#[test]
fn bad_requests_get_problem_documents() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);

    let unknown = daemon.get("/v1/token?issuer=nope&app=a", &[]);
    assert!(matches!(status_of(&unknown), 403 | 404), "{unknown}");
    assert!(unknown.contains("application/problem+json"), "{unknown}");

    for query in [
        "issuer=ttd&app=a&bogus=1",
        "issuer=%ff&app=a",
        "issuer=ttd&app=a%0Ab",
        "issuer",
    ] {
        let answer = daemon.get(&format!("/v1/token?{query}"), &[]);
        assert_eq!(status_of(&answer), 400, "{query}: {answer}");
        let problem: serde_json::Value =
            serde_json::from_str(body_of(&answer)).expect("problem JSON");
        assert!(
            problem["type"].as_str().is_some_and(|t| !t.is_empty()),
            "{problem}"
        );
        assert_eq!(problem["status"], 400);
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{problem}"
        );
    }

    let huge = format!("X-Filler: {}", "a".repeat(64 * 1024));
    let answer = daemon.get("/v1/token?issuer=ttd&app=a", &[&huge]);
    assert!(
        answer.is_empty() || matches!(status_of(&answer), 400 | 413 | 431),
        "{answer:.200}"
    );
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("still serving");
}

#[test]
fn an_unknown_issuer_granted_to_the_caller_is_404() {
    let token = ttd_token(
        "rsa2048",
        &format!(
            "[[grant]]\nuid = {}\nissuer = \"other\"\napps = [\"*\"]\n",
            unsafe { libc::getuid() }
        ),
    );
    let daemon = Daemon::start(&token);
    let error = daemon
        .client()
        .token(Some("other"), Some("a"))
        .expect_err("not configured");
    assert!(
        matches!(error, access_token_client::Error::UnknownIssuer(_)),
        "{error}"
    );
}

#[test]
fn the_cache_serves_one_token_until_its_refresh_point() {
    // ECDSA signatures differ every time, so equal tokens prove a cache hit.
    let token = ttd_token(
        "p256",
        "[token]\nlifetime_seconds = 4\nvalid_from_adjustment_seconds = -1\n",
    );
    let daemon = Daemon::start(&token);
    let client = daemon.client();
    let first = client.token(Some("ttd"), Some("a")).unwrap();
    let again = client.token(Some("ttd"), Some("a")).unwrap();
    assert_eq!(first.token, again.token, "served from the cache");
    let other_app = client.token(Some("ttd"), Some("b")).unwrap();
    assert_ne!(first.token, other_app.token);

    // More than half of the 4 s lifetime gone: a fresh token.
    let iat = claims(&first.token)["iat"].as_i64().unwrap();
    while integration_tests::unix_now() <= iat + 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let later = client.token(Some("ttd"), Some("a")).unwrap();
    assert_ne!(
        first.token, later.token,
        "refreshed after half its lifetime"
    );
    assert!(claims(&later.token)["iat"].as_i64().unwrap() > iat);
}

#[test]
fn without_the_cache_every_request_is_signed_anew() {
    let token = ttd_token("p256", "[token]\ncache = false\n");
    let daemon = Daemon::start(&token);
    let client = daemon.client();
    let first = client.token(Some("ttd"), Some("a")).unwrap();
    let second = client.token(Some("ttd"), Some("a")).unwrap();
    assert_ne!(first.token, second.token);
    let pem = exported_pem(&token);
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["platform.altinn.no"]);
    for issued in [first, second] {
        jsonwebtoken::decode::<serde_json::Value>(&issued.token, &key, &validation)
            .expect("ES256 verifies");
    }
}

#[test]
fn sighup_adds_grants_and_activates_a_new_key() {
    let token = ttd_token("rsa2048", "");
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let config = config.replacen("[server]\n", "[server]\nsocket_group = \"nogroup\"\n", 1);
    std::fs::write(token.config_path(), &config).unwrap();
    open_directory_to_others(&token);
    let mut daemon = Daemon::start(&token);
    let old_kid = daemon.client().token(Some("ttd"), Some("a")).unwrap().kid;
    let refused = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    );
    assert_eq!(refused.code(), 3);

    // A newer key for ttd (its certificate's not-before is later) and a grant for nobody.
    std::thread::sleep(Duration::from_millis(1100));
    token.generate("ttd", None).success();
    let grant = "\n[[grant]]\nuid = 65534\nissuer = \"ttd\"\napps = [\"*\"]\n";
    std::fs::write(token.config_path(), format!("{config}{grant}")).unwrap();
    let kept_open = daemon.client();
    kept_open.token(Some("ttd"), Some("warm")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");

    let served = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    );
    served.success();
    let new = kept_open
        .token(Some("ttd"), Some("b"))
        .expect("the kept-open client still works");
    assert_ne!(new.kid, old_kid, "the newly enrolled key is active");

    // A broken config on reload is refused; the old one keeps serving.
    std::fs::write(token.config_path(), "[hsm\nbroken").unwrap();
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.process.try_wait().unwrap().is_none(),
        "still running:\n{}",
        log(&token)
    );
    let still = daemon
        .client()
        .token(Some("ttd"), Some("c"))
        .expect("old config serves");
    assert_eq!(still.kid, new.kid);
    assert!(log(&token).contains("config"), "the refusal is logged");
}

#[test]
fn sighup_reopens_the_audit_file_after_rotation() {
    let token = ttd_token("rsa2048", "");
    let mut daemon = Daemon::start(&token);
    let client = daemon.client();
    client.token(Some("ttd"), Some("before")).unwrap();
    // What logrotate does: move the file away, then SIGHUP.
    let path = token.path().join("audit.jsonl");
    let rotated = token.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    client.token(Some("ttd"), Some("after")).unwrap();

    let apps_in = |file: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), log(&token)))
            .lines()
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).unwrap();
                json["app"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(apps_in(&rotated), ["before"]);
    assert_eq!(apps_in(&path), ["after"]);
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_removes_the_socket() {
    use std::io::{Read, Write};
    let token = ttd_token("rsa2048", "");
    let mut daemon = Daemon::start(&token);
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"GET /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    daemon.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(b"Connection: close\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert_eq!(status_of(&answer), 200, "{answer}\n{}", log(&token));

    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", log(&token));
    assert!(!daemon.socket.exists(), "the socket it bound is removed");
}

#[test]
fn socket_activation_serves_on_the_inherited_listener() {
    let token = ttd_token("rsa2048", "");
    let socket = token.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let daemon = Daemon::spawn(&token, |command| {
        integration_tests::daemon::pass_listener(command, &listener)
    });
    let mut daemon = daemon.ready(&token);
    assert!(
        !token.path().join("agent.sock").exists(),
        "it did not bind its own socket"
    );
    daemon.socket = socket.clone();
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("served on the inherited socket");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(socket.exists(), "a socket systemd owns is left in place");
}

#[test]
fn health_readiness_and_metrics() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    assert_eq!(status_of(&daemon.get("/healthz", &[])), 200);
    assert_eq!(status_of(&daemon.get("/readyz", &[])), 200);
    daemon.client().token(Some("ttd"), Some("a")).unwrap();
    daemon.client().token(Some("ttd"), Some("a")).unwrap();
    let metrics = daemon.get("/metrics", &[]);
    assert_eq!(status_of(&metrics), 200);
    assert_eq!(daemon.metric("access_token_agent_tokens_issued_total"), 2.0);
    assert_eq!(daemon.metric("access_token_agent_cache_hits_total"), 1.0);
    assert!(metrics.contains("access_token_agent_certificate_not_after_seconds{issuer=\"ttd\""));
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
