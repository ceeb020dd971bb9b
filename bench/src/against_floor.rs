//! Section 3's last part: the agent serving cached tokens beside the floor
//! ([`crate::floor`]), one light generator each, alternated, so that what
//! the agent adds to a cached token shows as one ratio. The agent writes
//! every audit line to its `[audit] file`, as in production.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use integration_tests::daemon::body_of;
use integration_tests::http::{get, raw_exchange};

use crate::agent::{cpu_time_of, Fixture, RSA_ISSUER};
use crate::floor::Floor;
use crate::load::{self, LoadResult};

/// Connections the light generator keeps.
const CONNECTIONS: usize = 64;
/// Agent and floor take turns this many times.
const ROUNDS: usize = 3;
/// Target: agent tokens/s over the floor's.
const TARGET: f64 = 0.8;

/// One side's figures over all rounds.
#[derive(Default)]
struct Side {
    tokens: u64,
    seconds: f64,
    cpu: Duration,
    errors: u64,
    per_round: Vec<f64>,
    /// Each round's p99 latency, ms: what 64 connections cost the server
    /// measured, beside section 3's p99 target.
    p99: Vec<f64>,
}

impl Side {
    fn add(&mut self, result: &LoadResult, cpu: Duration) {
        self.tokens += result.ok;
        self.errors += result.errors;
        self.seconds += result.elapsed.as_secs_f64();
        self.cpu += cpu;
        self.per_round.push(result.per_second());
        self.p99.push(result.latency_ms(0.99));
    }

    fn per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds
    }

    fn cpu_us_per_token(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.tokens.max(1) as f64
    }
}

/// Measures and reports the agent against its floor.
pub fn run(fixture: &Fixture, step: Duration, report: &mut String) {
    let audit = fixture.path("audit-floor.jsonl");
    let _ = std::fs::remove_file(&audit);
    fixture.write_config_sections(
        "cache = true",
        &format!("[audit]\nfile = {:?}\n", audit.display().to_string()),
    );
    fixture.allow_one_uid_every_connection();
    let (mut agent_side, mut floor_side) = (Side::default(), Side::default());
    {
        let (agent, _) = fixture.serve();
        let body = cached_token(&fixture.socket(), RSA_ISSUER);
        let floor = Floor::start(
            fixture.token().path(),
            &fixture.path("floor.sock"),
            body.as_bytes(),
        );
        for _ in 0..ROUNDS {
            let before = agent.cpu_time();
            let result = light(&fixture.socket(), step);
            agent_side.add(&result, agent.cpu_time() - before);
            let before = cpu_time_of(floor.pid());
            let result = light(floor.socket(), step);
            floor_side.add(&result, cpu_time_of(floor.pid()) - before);
        }
    }
    // Counted once the agent has stopped: a clean stop writes what it holds.
    let lines = std::fs::read_to_string(&audit)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    write_report(report, &agent_side, &floor_side, lines);
}

/// The bare JWS the agent answers for `issuer`'s cached token (one
/// request, so that the cache holds it).
pub fn cached_token(socket: &Path, issuer: &str) -> String {
    let target = format!("/v1/token?issuer={issuer}&app=cached");
    let answer = raw_exchange(
        socket,
        &get(&target, &["Accept: application/jwt", "Connection: close"]),
        Duration::from_secs(10),
    );
    let body = body_of(&answer);
    assert_eq!(body.split('.').count(), 3, "a JWS from the agent: {answer}");
    body.to_string()
}

/// One load step from a single-threaded generator: light, so that the two
/// cores are left to the server measured.
fn light(socket: &Path, step: Duration) -> LoadResult {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the light generator");
                runtime.block_on(load::run(socket, CONNECTIONS, step, RSA_ISSUER, "cached"))
            })
            .join()
            .expect("the light generator")
    })
}

fn write_report(report: &mut String, agent: &Side, floor: &Side, audit_lines: usize) {
    let _ = writeln!(
        report,
        "### Against the floor\n\nThe floor: a bare hyper server (`bench/src/floor.rs`) answering the same bytes as a cached token, on a runtime like the agent's. One single-threaded generator, {CONNECTIONS} kept-alive connections, agent and floor in turn {ROUNDS} times. The agent writes an audit line per token to its `[audit] file`. Target: agent / floor ≥ {TARGET}.\n"
    );
    let _ = writeln!(
        report,
        "| round | agent tokens/s | floor tokens/s | agent / floor | agent p99 ms | floor p99 ms |\n|---|---|---|---|---|---|"
    );
    for round in 0..agent.per_round.len().min(floor.per_round.len()) {
        let (a, f) = (agent.per_round[round], floor.per_round[round]);
        let (a99, f99) = (agent.p99[round], floor.p99[round]);
        let _ = writeln!(
            report,
            "| {} | {a:.0} | {f:.0} | {:.2} | {a99:.3} | {f99:.3} |",
            round + 1,
            a / f
        );
    }
    let _ = writeln!(
        report,
        "| all | {:.0} | {:.0} | **{:.2}** | | |\n",
        agent.per_second(),
        floor.per_second(),
        agent.per_second() / floor.per_second()
    );
    let _ = writeln!(
        report,
        "CPU µs per token: agent {:.1}, floor {:.1}. Errors: agent {}, floor {}. Audit lines written: {audit_lines} for {} tokens served (and one to fill the cache).\n",
        agent.cpu_us_per_token(),
        floor.cpu_us_per_token(),
        agent.errors,
        floor.errors,
        agent.tokens,
    );
}
