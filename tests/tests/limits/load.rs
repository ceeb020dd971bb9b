//! Load: 1,000 clients at once on top of 500 slow clients holding half-sent
//! request heads and 100 idle keep-alive connections, against a connection
//! cap below their sum. Legitimate requests keep succeeding, the connections
//! over the cap get 503 with Retry-After, the slow and idle connections are
//! closed on their deadlines, and afterwards the agent holds no more
//! descriptors than before.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::daemon::{
    add_server_settings, exported_cert, log_tail, open_fds, raise_open_files_limit, ttd_token,
    wait_open_fds_at_most, with_open_files_soft_limit, Daemon,
};
use integration_tests::http::{get, Connection};
use integration_tests::verify_jwt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Barrier;

const CAP: usize = 1200;
const SLOW: usize = 500;
const IDLE: usize = 100;
const CLIENTS: usize = 1000;
/// Tokens each client must get.
const REQUESTS: usize = 3;
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How early a deadline may seem to fire (clocks of two processes), and how
/// late the agent may close on a busy two-core machine.
const EARLY: Duration = Duration::from_millis(250);
const LATE: Duration = Duration::from_secs(4);
/// No client may take longer than this in all.
const CLIENT_PATIENCE: Duration = Duration::from_secs(40);

/// What one legitimate client saw.
#[derive(Default)]
struct Client {
    tokens: Vec<String>,
    first_was_token: bool,
    /// 503 answers, each checked for Retry-After and its problem type.
    refused: usize,
    /// Connections closed without an answer.
    unanswered: usize,
    errors: Vec<String>,
}

async fn legitimate(socket: PathBuf, index: usize, first_answers: Arc<Barrier>) -> Client {
    let request = get(&format!("/v1/token?issuer=ttd&app=app{}", index % 10), &[]);
    let mut seen = Client::default();
    let mut connection: Option<Connection> = None;
    let mut waited = false;
    let deadline = Instant::now() + CLIENT_PATIENCE;
    while seen.tokens.len() < REQUESTS && Instant::now() < deadline {
        let mut pause = Duration::ZERO;
        if connection.is_none() {
            match Connection::connect(&socket).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    seen.errors.push(format!("connect: {e}"));
                    pause = Duration::from_millis(50);
                }
            }
        }
        if let Some(open) = connection.as_mut() {
            match open.exchange(&request).await {
                Ok(Some(reply)) if reply.status == 200 => match reply.token() {
                    Some(token) => {
                        seen.first_was_token |= !waited;
                        seen.tokens.push(token);
                    }
                    None => seen
                        .errors
                        .push(format!("200 without a token: {}", reply.text())),
                },
                Ok(Some(reply)) if reply.status == 503 => {
                    seen.refused += 1;
                    let retry_after = reply.header("retry-after").and_then(|v| v.parse().ok());
                    let kind = reply.problem_type().unwrap_or_default();
                    match retry_after {
                        Some(seconds)
                            if seconds > 0
                                && (kind == "too-many-connections" || kind == "overloaded") =>
                        {
                            pause = Duration::from_secs(seconds);
                        }
                        _ => seen.errors.push(format!(
                            "a 503 of type {kind:?} (Retry-After {retry_after:?}): {}",
                            reply.text()
                        )),
                    }
                    connection = None;
                }
                Ok(Some(reply)) => {
                    seen.errors
                        .push(format!("answered {}: {}", reply.status, reply.text()));
                    connection = None;
                }
                Ok(None) => {
                    seen.unanswered += 1;
                    connection = None;
                    pause = Duration::from_millis(100);
                }
                Err(e) => {
                    seen.errors.push(e);
                    connection = None;
                }
            }
        }
        if !waited {
            // Hold the connection until every client has its first answer,
            // so that all of them are connected at once.
            first_answers.wait().await;
            waited = true;
        }
        tokio::time::sleep(pause).await;
    }
    if !waited {
        first_answers.wait().await;
    }
    if seen.tokens.len() < REQUESTS {
        seen.errors.push(format!(
            "only {} tokens in {CLIENT_PATIENCE:?}",
            seen.tokens.len()
        ));
    }
    seen
}

/// Sends half a request head, then a byte every 300 ms; returns how long
/// after connecting the agent closed the connection.
async fn slow(socket: PathBuf, set_up: Arc<Barrier>) -> Result<Duration, String> {
    let mut stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connected = Instant::now();
    let head = b"GET /v1/token?issuer=ttd&app=slow HTTP/1.1\r\nHost: agent\r\nX-Slow: ";
    stream
        .write_all(head)
        .await
        .map_err(|e| format!("write: {e}"))?;
    set_up.wait().await;
    let mut answer = Vec::new();
    let closed = async {
        loop {
            let mut buf = [0u8; 1024];
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(300)) => {
                    if stream.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(CLIENT_PATIENCE, closed)
        .await
        .map_err(|_| "never closed".to_string())?;
    if answer.starts_with(b"HTTP/1.1 2") {
        return Err(format!("answered: {}", String::from_utf8_lossy(&answer)));
    }
    Ok(connected.elapsed())
}

/// Gets one token, then waits; returns how long after the answer the
/// agent closed the connection.
async fn idle(socket: PathBuf, set_up: Arc<Barrier>) -> Result<Duration, String> {
    let mut connection = Connection::connect(&socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let reply = connection
        .exchange(&get("/v1/token?issuer=ttd&app=idle", &[]))
        .await;
    let answered = Instant::now();
    set_up.wait().await;
    match reply {
        Ok(Some(reply)) if reply.status == 200 => {}
        other => return Err(format!("no token first: {other:?}")),
    }
    match tokio::time::timeout(CLIENT_PATIENCE, connection.read_reply()).await {
        Ok(Ok(None)) => Ok(answered.elapsed()),
        Ok(other) => Err(format!("not a plain close: {other:?}")),
        Err(_) => Err("never closed".into()),
    }
}

/// The largest descriptor count of `pid` seen until `stop` is set.
fn watch_descriptors(pid: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let peak = AtomicUsize::new(0);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            peak.fetch_max(open_fds(pid), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak.load(Ordering::Relaxed)
    })
}

fn seconds_range(times: &[Duration]) -> (f64, f64) {
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    (min.as_secs_f64(), max.as_secs_f64())
}

#[test]
fn a_thousand_clients_and_five_hundred_slow_ones_against_the_cap() {
    let limit = raise_open_files_limit();
    assert!(
        limit >= 4096,
        "this test holds {} connections and needs a hard open-files limit of at least 4096 (ulimit -Hn is {limit})",
        SLOW + IDLE + CLIENTS
    );
    // SAFETY: getgid cannot fail.
    let my_gid = unsafe { libc::getgid() };
    // A grant by gid: every accept also reads the peer's groups from /proc.
    let token = ttd_token(
        "p256",
        &format!("[[grant]]\ngid = {my_gid}\nissuer = \"ttd\"\napps = [\"*\"]\n"),
    );
    add_server_settings(
        &token,
        &format!(
            "max_connections = {CAP}\nmax_connections_per_uid = {CAP}\nheader_read_timeout_seconds = {}\nidle_timeout_seconds = {}",
            HEADER_TIMEOUT.as_secs_f64(),
            IDLE_TIMEOUT.as_secs_f64()
        ),
    );
    // Started as systemd starts services, with a soft limit of 1024 descriptors.
    let mut daemon =
        Daemon::spawn(&token, |command| with_open_files_soft_limit(command, 1024)).ready(&token);
    let pid = daemon.pid();
    let pem = String::from_utf8(exported_cert(&token, "pem")).unwrap();
    daemon.client().token(Some("ttd"), Some("warm")).unwrap();
    let fds_before = open_fds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = watch_descriptors(pid, stop.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let socket = daemon.socket.clone();
    let started = Instant::now();
    let (clients, slow_closes, idle_closes) = runtime.block_on(async {
        let set_up = Arc::new(Barrier::new(SLOW + IDLE + 1));
        let slow: Vec<_> = (0..SLOW)
            .map(|_| tokio::spawn(slow(socket.clone(), set_up.clone())))
            .collect();
        let idle: Vec<_> = (0..IDLE)
            .map(|_| tokio::spawn(idle(socket.clone(), set_up.clone())))
            .collect();
        set_up.wait().await;
        let first_answers = Arc::new(Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| tokio::spawn(legitimate(socket.clone(), i, first_answers.clone())))
            .collect();
        let mut results = (Vec::new(), Vec::new(), Vec::new());
        for task in clients {
            results.0.push(task.await.unwrap());
        }
        for task in slow {
            results.1.push(task.await.unwrap());
        }
        for task in idle {
            results.2.push(task.await.unwrap());
        }
        results
    });
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = peak.join().unwrap();
    drop(runtime);

    let errors: Vec<&String> = clients.iter().flat_map(|c| &c.errors).collect();
    let tokens: usize = clients.iter().map(|c| c.tokens.len()).sum();
    let refused: usize = clients.iter().map(|c| c.refused).sum();
    let unanswered: usize = clients.iter().map(|c| c.unanswered).sum();
    let first_tokens = clients.iter().filter(|c| c.first_was_token).count();
    let slow_closes: Vec<Duration> = slow_closes
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a slow client: {e}")))
        .collect();
    let idle_closes: Vec<Duration> = idle_closes
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("an idle client: {e}")))
        .collect();
    let (slow_min, slow_max) = seconds_range(&slow_closes);
    let (idle_min, idle_max) = seconds_range(&idle_closes);
    eprintln!(
        "{CLIENTS} clients, {SLOW} slow, {IDLE} idle, cap {CAP}: {tokens} tokens in {:.1} s \
         ({first_tokens} clients served at their first attempt), {refused} answers 503, \
         {unanswered} closed unanswered; slow closed after {slow_min:.2}–{slow_max:.2} s, \
         idle after {idle_min:.2}–{idle_max:.2} s; descriptors {fds_before} before, peak {peak}",
        elapsed.as_secs_f64()
    );

    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(tokens, CLIENTS * REQUESTS);
    assert!(refused > 0, "more connections than the cap, yet no 503");
    assert_eq!(
        unanswered, 0,
        "connections over the cap closed without a 503"
    );
    assert!(
        first_tokens > 0,
        "served while the slow clients held their connections"
    );
    let header = HEADER_TIMEOUT.as_secs_f64();
    let idle = IDLE_TIMEOUT.as_secs_f64();
    assert!(
        slow_min >= header - EARLY.as_secs_f64(),
        "a slow client closed early: {slow_min}"
    );
    assert!(
        slow_max <= header + LATE.as_secs_f64(),
        "a slow client closed late: {slow_max}"
    );
    assert!(
        idle_min >= idle - EARLY.as_secs_f64(),
        "an idle client closed early: {idle_min}"
    );
    assert!(
        idle_max <= idle + LATE.as_secs_f64(),
        "an idle client closed late: {idle_max}"
    );
    // A socket per connection under the cap, one per refusal being read,
    // and a few opened for a moment while accepting.
    let bound = fds_before + CAP + 64 + 16;
    assert!(
        peak <= bound,
        "{peak} descriptors open at the peak; the cap allows {bound}"
    );

    let distinct: HashSet<&String> = clients.iter().flat_map(|c| &c.tokens).collect();
    for token in distinct {
        verify_jwt(token, pem.as_bytes(), "ttd");
    }
    assert!(
        daemon.process.try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        log_tail(&token)
    );
    daemon
        .client()
        .token(Some("ttd"), Some("after"))
        .expect("served after the load");
    let fds_after = wait_open_fds_at_most(pid, fds_before + 4, Duration::from_secs(10));
    assert!(
        fds_after <= fds_before + 4,
        "descriptors: {fds_before} before, {fds_after} after"
    );
}
