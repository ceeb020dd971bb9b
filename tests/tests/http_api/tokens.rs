//! Tokens over the socket: what `mint` makes, as JSON or a bare JWT, from
//! the cache until its refresh point or signed anew; on one connection
//! kept alive through pauses; bad requests as problem documents; health,
//! readiness and metrics.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::daemon::{body_of, status_of, ttd_token, Daemon};
use integration_tests::http::{get, Connection, Reply};
use integration_tests::on_every_store;
use integration_tests::{unix_now, OutputExt};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use integration_tests::jwt::claims;

use crate::{exported_pem, part};

on_every_store! {
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

/// Longer than a connection waits for its next request before the agent
/// sets hyper's buffers aside (100 ms); what is asserted holds either way.
const PAUSE: Duration = Duration::from_millis(300);

/// `reply` is a token for app `app`.
fn assert_token_for(reply: Option<Reply>, app: &str) {
    let reply = reply.unwrap_or_else(|| panic!("closed before answering for {app}"));
    let token = reply.token().unwrap_or_else(|| panic!("{app}: {reply:?}"));
    assert_eq!(claims(&token)["urn:altinn:app"], app);
}

#[test]
fn a_connection_kept_alive_through_pauses_loses_no_bytes() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let ask = |app: &str, extra: &[&str]| get(&format!("/v1/token?issuer=ttd&app={app}"), extra);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = Connection::connect(&daemon.socket).await.unwrap();
        tokio::time::sleep(PAUSE).await;
        client.send(ask("first", &[])).await;
        assert_token_for(client.reply().await, "first");

        // A whole request and the start of the next; the rest after a pause.
        tokio::time::sleep(PAUSE).await;
        let third = ask("third", &[]);
        let (start, rest) = third.split_at(20);
        client
            .send([ask("second", &[]), start.to_vec()].concat())
            .await;
        assert_token_for(client.reply().await, "second");
        tokio::time::sleep(PAUSE).await;
        client.send(rest).await;
        assert_token_for(client.reply().await, "third");

        // A head one byte under `server.max_header_bytes` (8192).
        tokio::time::sleep(PAUSE).await;
        let filler = format!(
            "X-Filler: {}",
            "a".repeat(8191 - ask("big", &[]).len() - 12)
        );
        let big = ask("big", &[&filler]);
        assert_eq!(big.len(), 8191);
        client.send(big).await;
        assert_token_for(client.reply().await, "big");

        // A hundred requests in one write.
        tokio::time::sleep(PAUSE).await;
        let apps: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
        client
            .send(
                apps.iter()
                    .flat_map(|app| ask(app, &[]))
                    .collect::<Vec<u8>>(),
            )
            .await;
        for app in &apps {
            assert_token_for(client.reply().await, app);
        }
    });
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

on_every_store! {
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
        while unix_now() <= iat + 2 {
            std::thread::sleep(Duration::from_millis(100));
        }
        let later = client.token(Some("ttd"), Some("a")).unwrap();
        assert_ne!(
            first.token, later.token,
            "refreshed after half its lifetime"
        );
        assert!(claims(&later.token)["iat"].as_i64().unwrap() > iat);
    }
}

on_every_store! {
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
}

on_every_store! {
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
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
