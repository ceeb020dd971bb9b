//! The limits: bodies on GET, oversized and unreadable heads, header and
//! idle deadlines, and the connection cap, each refused with an answer and
//! then a close.

use std::time::{Duration, Instant};

use integration_tests::http::Connection;
use tokio::net::UnixStream;

use super::{wide_grants, Server};

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
    let filler = format!("X-Filler: {}", "a".repeat(3000));
    assert_eq!(fits.get("/healthz", &[&filler]).await.status, 200);
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
    assert_eq!(server.client().await.get("/healthz", &[]).await.status, 200);
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
        assert_eq!(client.get("/healthz", &[]).await.status, 200);
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
    assert_eq!(first.get("/healthz", &[]).await.status, 200);
    assert_eq!(second.get("/healthz", &[]).await.status, 200);
    let mut third = server.client().await;
    let reply = third.get("/healthz", &[]).await;
    assert_eq!(
        (reply.status, reply.problem().as_str()),
        (503, "too-many-connections")
    );
    assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
    assert!(third.closed_within(Duration::from_secs(2)).await);
    // A freed place is taken by the next connection.
    drop(first);
    let mut fourth = None;
    for _ in 0..50 {
        let mut client = server.client().await;
        if client.get("/healthz", &[]).await.status == 200 {
            fourth = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fourth.is_some(), "a connection under the cap is served");
    assert_eq!(second.get("/healthz", &[]).await.status, 200);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_burst_over_the_cap_gets_503_on_every_connection() {
    let server = Server::start(wide_grants(), |c| c.max_connections = 1).await;
    let mut held = server.client().await;
    assert_eq!(held.get("/healthz", &[]).await.status, 200);
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
    let mut burst: Vec<Connection> = queued
        .into_iter()
        .map(|stream| Connection::new(UnixStream::from_std(stream).unwrap()))
        .collect();
    for (i, client) in burst.iter_mut().enumerate() {
        let reply = client
            .reply()
            .await
            .unwrap_or_else(|| panic!("connection {i} closed without an answer"));
        assert_eq!(reply.status, 503, "connection {i}");
        assert_eq!(
            reply.header("retry-after").as_deref(),
            Some("1"),
            "connection {i}"
        );
        assert!(client.closed_within(Duration::from_secs(2)).await);
    }
    assert_eq!(held.get("/healthz", &[]).await.status, 200);
    server.shut_down().await.unwrap();
}
