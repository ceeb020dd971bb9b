//! Shutdown: accepting stops and the socket goes at once, requests in flight
//! are finished, silent connections are not waited for, and the wait has a
//! bound.

use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use super::{token_for, wide_grants, Server};

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let server = Server::start(wide_grants(), |_| {}).await;
    let mut busy = server.client().await;
    let mut idle = server.client().await;
    assert_eq!(idle.get("/healthz", &[]).await.status, 200);
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
    assert_eq!(server.client().await.get("/healthz", &[]).await.status, 200);
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
