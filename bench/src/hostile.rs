//! `access-token-bench hostile`: a well-behaved client's latency alone and
//! beside a hostile user's load, each hostile load a process of uid 65534
//! (this binary again, `flood`), so that the agent sees another user. Root
//! only: the hostile process drops to uid 65534.
//!
//! The well-behaved client asks, on one connection, for its cached token
//! (P-256) as fast as it is answered, and in a second step for a new app
//! name (RSA, a fresh signature each) every 20 ms. The hostile loads:
//! - `idle`: 1,100 connections opened and kept, one request each;
//! - `fresh`: 64 connections, a new app name on every request (granted `*`);
//! - `refused`: 8 connections repeating a request it is not granted;
//! - `metrics`: 128 connections asking for `/metrics` back to back.
//!
//! Also the cache alone, in process: the cost of a miss with the cache
//! empty and full (10,000 entries).

use std::fmt::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_token_agent::back::cache::{Cache, MAX_ENTRIES};
use access_token_agent::hsm::sign::SignedToken;

use crate::agent::{Fixture, EC_ISSUER, RSA_ISSUER};
use crate::load::{self, LoadResult, Pattern};

const NOBODY: u32 = 65534;

#[derive(clap::Args)]
pub struct HostileArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Another build of the agent to measure (an earlier commit's, say).
    #[arg(long)]
    agent: Option<PathBuf>,
}

/// `flood`: the hostile side, run as uid 65534.
#[derive(clap::Args)]
pub struct FloodArgs {
    socket: PathBuf,
    /// `idle`, `fresh`, `refused` or `metrics`.
    kind: String,
    seconds: u64,
}

/// Runs the hostile load `args.kind` until its time is up.
pub fn flood(args: &FloodArgs, runtime: &tokio::runtime::Runtime) -> bool {
    let time = Duration::from_secs(args.seconds);
    match args.kind.as_str() {
        "idle" => {
            let held = runtime.block_on(load::hold_connections(&args.socket, 1100, EC_ISSUER));
            std::thread::sleep(time);
            drop(held);
        }
        "fresh" => {
            let names: Vec<String> = (0..200_000).map(|n| format!("flood-{n}")).collect();
            let targets: Vec<(&str, &str)> =
                names.iter().map(|n| (EC_ISSUER, n.as_str())).collect();
            let pattern = Pattern::cycling(&targets);
            runtime.block_on(load::run_pattern(&args.socket, 64, time, &pattern));
        }
        "refused" => {
            let pattern = Pattern::cycling(&[(RSA_ISSUER, "not-mine")]);
            runtime.block_on(load::run_pattern(&args.socket, 8, time, &pattern));
        }
        "metrics" => {
            let pattern = Pattern::paths(&["/metrics"]);
            runtime.block_on(load::run_pattern(&args.socket, 128, time, &pattern));
        }
        other => panic!("no flood {other:?}"),
    }
    true
}

pub fn run(args: &HostileArgs, runtime: &tokio::runtime::Runtime, report: &mut String) -> bool {
    let step_time = Duration::from_secs(args.seconds);
    let fixture = Fixture::new();
    fixture.write_config(true);
    open_to_nobody(&fixture);
    let binary = args
        .agent
        .clone()
        .unwrap_or_else(crate::agent::agent_binary);
    let (agent, _) = fixture.serve_from(&binary);
    let socket = fixture.socket();
    let _ = writeln!(
        report,
        "## Beside hostile clients: `{}`\n",
        binary.display()
    );
    let _ = writeln!(report, "A well-behaved client (this uid) alone, then beside a hostile load of uid 65534, {} s each; latencies in ms. Target: within 2× of alone.\n", args.seconds);
    let _ = writeln!(report, "| well-behaved client | hostile load | tokens | errors | p50 | p99 | p50 / alone | p99 / alone |\n|---|---|---|---|---|---|---|---|");
    let cached = |_: &str| Pattern::cycling(&[(EC_ISSUER, "mine")]);
    for (name, pattern) in [
        (
            "cached token, back to back",
            &cached as &dyn Fn(&str) -> Pattern,
        ),
        ("new app every 20 ms (RSA)", &new_names),
    ] {
        let probe =
            |step: &str| runtime.block_on(load::run_pattern(&socket, 1, step_time, &pattern(step)));
        let alone = probe("none");
        row(report, name, "none", &alone, &alone);
        for kind in ["idle", "fresh", "refused", "metrics"] {
            let mut hostile = spawn_flood(&socket, kind, args.seconds + 2);
            std::thread::sleep(Duration::from_millis(1500));
            let beside = probe(kind);
            let _ = hostile.kill();
            let _ = hostile.wait();
            row(report, name, kind, &beside, &alone);
        }
    }
    drop(agent);
    report.push('\n');
    cache_misses(report);
    true
}

/// A new RSA app name every 20 ms, none asked for in an earlier `step`:
/// each one a fresh signature.
fn new_names(step: &str) -> Pattern {
    let names: Vec<String> = (0..10_000).map(|n| format!("mine-{step}-{n}")).collect();
    let targets: Vec<(&str, &str)> = names.iter().map(|n| (RSA_ISSUER, n.as_str())).collect();
    let mut pattern = Pattern::cycling(&targets);
    pattern.interval = Some(Duration::from_millis(20));
    pattern
}

fn row(report: &mut String, name: &str, kind: &str, result: &LoadResult, alone: &LoadResult) {
    let (p50, p99) = (result.latency_ms(0.5), result.latency_ms(0.99));
    let _ = writeln!(
        report,
        "| {name} | {kind} | {} | {} | {p50:.3} | {p99:.3} | {:.2} | {:.2} |",
        result.ok,
        result.errors,
        p50 / alone.latency_ms(0.5),
        p99 / alone.latency_ms(0.99)
    );
}

/// Grants uid 65534 every app of the P-256 issuer (none of the RSA one)
/// and lets it reach the socket.
fn open_to_nobody(fixture: &Fixture) {
    integration_tests::daemon::open_socket_to_others(fixture.token());
    let path = fixture.token().config_path();
    let config = std::fs::read_to_string(&path).expect("agent.toml")
        + &format!("\n[[grant]]\nuid = {NOBODY}\nissuer = {EC_ISSUER:?}\napps = [\"*\"]\n");
    std::fs::write(path, config).expect("agent.toml");
}

fn spawn_flood(socket: &Path, kind: &str, seconds: u64) -> Child {
    let me = std::env::current_exe().expect("this binary");
    Command::new(me)
        .arg("flood")
        .arg(socket)
        .arg(kind)
        .arg(seconds.to_string())
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the hostile load as uid 65534")
}

/// Time per miss in the cache alone: into an empty one, and into a full one.
fn cache_misses(report: &mut String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let cache = Arc::new(Cache::new(300, 0.5));
    let kid: Arc<str> = Arc::from("K1");
    let misses = |cache: &Cache, prefix: &str, count: usize| -> Duration {
        let started = Instant::now();
        for n in 0..count {
            let app = format!("{prefix}-{n}");
            let signed = runtime.block_on(cache.get_or_sign("ttd", &app, &kid, |completion| {
                completion.complete(Ok(SignedToken {
                    token: "t".into(),
                    expires_at: i64::MAX / 2000,
                }))
            }));
            assert!(signed.is_ok());
        }
        started.elapsed() / count as u32
    };
    let empty = misses(&cache, "first", MAX_ENTRIES);
    let full = misses(&cache, "more", MAX_ENTRIES);
    let _ = writeln!(report, "Cache misses, in process (no signature): {:.2} µs each while filling an empty cache, {:.2} µs each into a full one ({MAX_ENTRIES} entries); ratio {:.1}.\n", empty.as_secs_f64() * 1e6, full.as_secs_f64() * 1e6, full.as_secs_f64() / empty.as_secs_f64());
}
