//! A uid's turn, through the real routes: its rate of cache misses, its
//! place among the signatures in flight, its rate of everything that gets
//! no token, and who may read `/metrics`.

use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use integration_tests::http::Connection;
use integration_tests::PATIENCE;
use tokio::net::UnixStream;

use super::{grant, my_uid, wide_grants, Server};
use crate::config::PerUidRate;

/// Another uid for connections made by [`connect_as`].
const OTHER: u32 = 65534;

/// Polls `done` until it holds; panics after [`PATIENCE`] naming `what`.
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `access_token_agent_requests_paced_total{reason}`, read from the
/// registry (a request for `/metrics` would count against the rate itself).
async fn paced(server: &Server, reason: &str) -> u64 {
    let text = server.front.metrics.render();
    let line = format!("access_token_agent_requests_paced_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.parse().unwrap())
}

/// A connection made by a thread whose effective uid alone is `uid`
/// (SO_PEERCRED reports the effective ids of the thread that connected);
/// the raw system call changes that thread only, unlike glibc's wrapper.
fn connect_as(uid: u32, socket: &Path) -> Connection {
    let socket = socket.to_owned();
    let stream = std::thread::spawn(move || {
        // SAFETY: setresuid with -1 leaves those ids; this thread only.
        let set = |euid: u32| unsafe { libc::syscall(libc::SYS_setresuid, -1, euid, -1) };
        assert_eq!(set(uid), 0, "seteuid({uid}) needs root");
        let stream = StdStream::connect(&socket);
        assert_eq!(set(0), 0);
        stream.unwrap()
    })
    .join()
    .unwrap();
    stream.set_nonblocking(true).unwrap();
    Connection::new(UnixStream::from_std(stream).unwrap())
}

/// Sends a request for a `slow` token on a new connection of `uid`.
async fn ask_slow(server: &Server, uid: u32, app: &str) -> Connection {
    let mut client = match uid == my_uid() {
        true => server.client().await,
        false => connect_as(uid, &server.socket),
    };
    let request = format!("GET /v1/token?issuer=slow&app={app} HTTP/1.1\r\nHost: x\r\n\r\n");
    client.send(&request).await;
    client
}

async fn slow_in_flight(server: &Server, n: usize, what: &str) {
    wait_until(what, async || {
        server.source.slow_in_flight.load(Ordering::SeqCst) == n
    })
    .await;
}

#[tokio::test]
async fn misses_past_the_burst_wait_their_turn_and_hits_never_do() {
    let server = Server::start(wide_grants(), |c| {
        c.cache_misses_per_uid = PerUidRate {
            per_second: 50.0,
            burst: 2,
        }
    })
    .await;
    let mut client = server.client().await;
    for _ in 0..20 {
        let reply = client.get("/v1/token?issuer=cached&app=a", &[]).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(paced(&server, "cache-miss").await, 0, "hits are not paced");
    for n in 0..4 {
        let target = format!("/v1/token?issuer=ttd&app={}", ["my-app", "other"][n % 2]);
        assert_eq!(client.get(&target, &[]).await.status, 200);
    }
    assert_eq!(paced(&server, "cache-miss").await, 2, "two past the burst");
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_uid_alone_signs_past_its_share() {
    let server = Server::start(wide_grants(), |c| c.max_signing_per_uid = 1).await;
    let mut waiting = Vec::new();
    for n in 0..3 {
        waiting.push(ask_slow(&server, my_uid(), &format!("a{n}")).await);
    }
    slow_in_flight(&server, 3, "three signatures of one uid at once").await;
    assert_eq!(paced(&server, "signing").await, 0);
    server.source.release.notify_waiters();
    for client in &mut waiting {
        assert_eq!(client.reply().await.unwrap().status, 200);
    }
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_freed_place_goes_to_the_waiting_uid_below_its_share() {
    let mut grants = wide_grants();
    grants.push(grant(OTHER, "slow", &["*"]));
    let server = Server::start(grants, |c| c.max_signing_per_uid = 1).await;
    server.source.places.store(2, Ordering::SeqCst);
    let mut mine = vec![
        ask_slow(&server, my_uid(), "mine-1").await,
        ask_slow(&server, my_uid(), "mine-2").await,
    ];
    slow_in_flight(&server, 2, "both places taken by one uid").await;
    let mut theirs = ask_slow(&server, OTHER, "theirs").await;
    wait_until("the other uid to wait for a place", async || {
        paced(&server, "signing").await == 1
    })
    .await;
    mine.push(ask_slow(&server, my_uid(), "mine-3").await);
    wait_until("a third of mine to wait too", async || {
        paced(&server, "signing").await == 2
    })
    .await;
    // One place frees: it goes to the uid with none in flight.
    server.source.release.notify_one();
    wait_until("a third signature to begin", async || {
        server.source.slow_begun.lock().unwrap().len() == 3
    })
    .await;
    assert_eq!(server.source.slow_begun.lock().unwrap()[2], "theirs");
    while server.source.slow_begun.lock().unwrap().len() < 4 {
        server.source.release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.source.release.notify_waiters();
    for client in mine.iter_mut().chain([&mut theirs]) {
        assert_eq!(client.reply().await.unwrap().status, 200);
    }
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn every_other_route_counts_against_the_refusal_rate() {
    let server = Server::start(wide_grants(), |c| {
        c.refusals_per_uid = PerUidRate {
            per_second: 50.0,
            burst: 4,
        }
    })
    .await;
    let mut client = server.client().await;
    for target in ["/healthz", "/readyz", "/v1/grants", "/metrics", "/nowhere"].repeat(4) {
        client.get(target, &[]).await;
    }
    assert!(
        paced(&server, "other-route").await >= 12,
        "20 requests, a burst of 4: {} paced",
        paced(&server, "other-route").await
    );
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn unreadable_requests_in_a_loop_wait_their_turn_before_the_close() {
    let server = Server::start(wide_grants(), |c| {
        c.refusals_per_uid = PerUidRate {
            per_second: 50.0,
            burst: 2,
        }
    })
    .await;
    for _ in 0..10 {
        let mut client = server.client().await;
        client.send("NOT HTTP AT ALL\r\n\r\n").await;
        assert_eq!(client.reply().await.unwrap().status, 400);
        assert!(client.closed_within(PATIENCE).await);
    }
    // Each connection holds its place until its turn: the waits end later.
    wait_until(
        "8 of 10 unreadable requests, a burst of 2, to be paced",
        async || paced(&server, "unreadable").await >= 8,
    )
    .await;
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn metrics_uids_keeps_metrics_from_the_others() {
    let server = Server::start(wide_grants(), |c| c.metrics_uids = Some(vec![my_uid() + 1])).await;
    let reply = server.client().await.get("/metrics", &[]).await;
    assert_eq!(
        (reply.status, reply.problem().as_str()),
        (403, "not-granted")
    );
    assert!(reply.json()["detail"]
        .as_str()
        .unwrap()
        .contains("server.metrics_uids"));
    server.shut_down().await.unwrap();
}
