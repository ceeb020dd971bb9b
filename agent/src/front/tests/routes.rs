//! The routes: tokens as JSON and as a bare JWT, refusals as problem
//! documents with stable types, what is audited, `/v1/grants`, health,
//! readiness and metrics.

use super::{grant, my_uid, status, token_for, wide_grants, Server};

#[tokio::test]
async fn token_as_json_and_as_bare_jwt() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut client = server.client().await;
    let reply = client.get("/v1/token?issuer=ttd&app=my-app", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    let json = reply.json();
    assert_eq!(json["token"], token_for("ttd", "my-app"));
    assert_eq!(json["kid"], "KID1");
    assert_eq!(json["issuer"], "ttd");
    assert_eq!(json["app"], "my-app");
    assert_eq!(json["expires_at"], 2_000_000_000);
    // Same keep-alive connection, bare token this time.
    let reply = client
        .get(
            "/v1/token?issuer=ttd&app=other",
            &["Accept: application/jwt"],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/jwt")
    );
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
        let reply = client.get(target, &[]).await;
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
    assert_eq!(reply.header("allow").as_deref(), Some("GET"));

    // Every token request above was counted and audited as refused.
    let metrics = client.get("/metrics", &[]).await;
    let text = String::from_utf8(metrics.body).unwrap();
    for counted in [
        "tokens_refused_total{reason=\"not-granted\"} 2\n",
        "tokens_refused_total{reason=\"bad-request\"} 3\n",
    ] {
        assert!(text.contains(counted), "{text}");
    }
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
        status(&mut client, "/v1/token?issuer=ttd&app=my-app").await,
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
    let reply = client.get("/v1/token", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["issuer"], "ttd");
    assert_eq!(reply.json()["app"], "my-app");
    assert_eq!(reply.json()["token"], token_for("ttd", "my-app"));
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn grants_lists_what_the_caller_may_have() {
    let mut grants = wide_grants();
    grants.push(grant(my_uid() + 1, "hidden", &["x"]));
    let server = Server::start(grants, |_| {}).await;
    let reply = server.client().await.get("/v1/grants", &[]).await;
    assert_eq!(reply.status, 200);
    let json = reply.json();
    assert_eq!(json["uid"], my_uid());
    let listed: Vec<_> = json["grants"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 6, "{json}");
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
    let health = client.get("/healthz", &[]).await;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(client.get("/readyz", &[]).await.status, 200);
    *server.source.not_ready.lock().unwrap() = Some("not logged in to the token".into());
    let ready = client.get("/readyz", &[]).await;
    assert_eq!((ready.status, ready.problem().as_str()), (503, "not-ready"));
    assert_eq!(ready.json()["detail"], "not logged in to the token");
    client.get("/v1/token?issuer=ttd&app=my-app", &[]).await;
    let metrics = client.get("/metrics", &[]).await;
    assert_eq!(
        metrics.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("access_token_agent_tokens_issued_total 1\n"),
        "{text}"
    );
    server.shut_down().await.unwrap();
}
