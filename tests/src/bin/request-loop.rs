//! `request-loop SOCKET CONNECTIONS REQUESTS TARGET...`: sends REQUESTS
//! GETs in all over CONNECTIONS kept-alive connections, cycling through the
//! TARGETs, and prints one JSON line tallying the answers: how many of each
//! status, how many carried a token, and what went wrong on the way.
//!
//! A client process of its own, so that a test can run it as another user
//! and the agent sees that user's credentials on the socket.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use integration_tests::http::{get, Connection};

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    tokens: u64,
    closed: u64,
    errors: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, connections, requests, targets @ ..] = args.as_slice() else {
        eprintln!("usage: request-loop SOCKET CONNECTIONS REQUESTS TARGET...");
        std::process::exit(2);
    };
    let connections: usize = connections.parse().expect("CONNECTIONS is a number");
    let requests: usize = requests.parse().expect("REQUESTS is a number");
    assert!(!targets.is_empty(), "give at least one TARGET");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let tally = runtime.block_on(run(
        PathBuf::from(socket),
        connections,
        requests,
        targets.to_vec(),
    ));
    let json = serde_json::json!({
        "statuses": tally.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        "tokens": tally.tokens,
        "closed": tally.closed,
        "errors": tally.errors,
    });
    println!("{json}");
}

async fn run(socket: PathBuf, connections: usize, requests: usize, targets: Vec<String>) -> Tally {
    let socket = Arc::new(socket);
    let targets = Arc::new(targets);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            // Connection c sends requests c, c + connections, c + 2·connections, …
            let share = (requests + connections - 1 - c) / connections;
            let (socket, targets) = (socket.clone(), targets.clone());
            tokio::spawn(
                async move { one_connection(&socket, c, connections, share, &targets).await },
            )
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let part = task.await.expect("a connection task");
        for (status, n) in part.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.tokens += part.tokens;
        total.closed += part.closed;
        total.errors.extend(part.errors);
    }
    total
}

async fn one_connection(
    socket: &std::path::Path,
    first: usize,
    stride: usize,
    count: usize,
    targets: &[String],
) -> Tally {
    let mut tally = Tally::default();
    let mut connection = None;
    for i in 0..count {
        if connection.is_none() {
            match Connection::connect(socket).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    tally.errors.push(format!("connect: {e}"));
                    continue;
                }
            }
        }
        let target = &targets[(first + i * stride) % targets.len()];
        let answer = connection
            .as_mut()
            .expect("connected")
            .exchange(&get(target, &[]))
            .await;
        match answer {
            Ok(Some(reply)) => {
                *tally.statuses.entry(reply.status).or_default() += 1;
                if reply.token().is_some() || reply.text().contains("eyJ") {
                    tally.tokens += 1;
                }
                if reply.header("connection").as_deref() == Some("close") {
                    connection = None;
                }
            }
            Ok(None) => {
                tally.closed += 1;
                connection = None;
            }
            Err(e) => {
                tally.errors.push(e);
                connection = None;
            }
        }
    }
    tally
}
