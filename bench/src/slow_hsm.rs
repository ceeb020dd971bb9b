//! Section 6: the agent in front of an HSM that answers in milliseconds,
//! through the slow module (SoftHSM plus a sleep in C_Sign, so a waiting
//! signature costs no CPU, as on a network HSM). Every step starts an agent
//! afresh, with the default config and with `max_sessions` = the cores (one
//! session per core, as the agent signed before it sized its pool), in
//! turn, so that each ratio compares figures of the same minutes.

use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use access_token_agent::key_type::Alg;
use integration_tests::slow_hsm::SlowHsm;

use crate::agent::{metric, Agent, Fixture, EC_ISSUER, RSA_ISSUER};
use crate::load::{self, LoadResult, Pattern};
use crate::Rates;

const CONNECTIONS: usize = 64;
const DELAYS_MS: [u64; 4] = [0, 1, 2, 5];
const CROWD: usize = 1000;
const SESSIONS: &str = "access_token_agent_signing_sessions";

/// The two configurations compared: the default, and one session per core.
fn configs(cores: usize) -> [(&'static str, String); 2] {
    [
        ("default", String::new()),
        (
            "one per core",
            format!("[signing]\nmax_sessions = {cores}\n"),
        ),
    ]
}

/// The signing sessions and threads seen while `work` ran.
struct Peaks {
    /// The most signing sessions, and their mean over the samples.
    sessions: f64,
    mean_sessions: f64,
    threads: usize,
}

impl Peaks {
    /// `mean (peak)`.
    fn sessions(&self) -> String {
        format!("{:.0} ({:.0})", self.mean_sessions, self.sessions)
    }
}

/// Runs `work` while another thread samples the agent every 100 ms.
fn sampled<T>(agent: &Agent, socket: &Path, work: impl FnOnce() -> T) -> (T, Peaks) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peaks = Peaks {
                sessions: 0.0,
                mean_sessions: 0.0,
                threads: 0,
            };
            let (mut sum, mut samples) = (0.0, 0.0);
            while !done.load(Ordering::Relaxed) {
                let sessions = metric(socket, SESSIONS).unwrap_or(0.0);
                peaks.sessions = peaks.sessions.max(sessions);
                (sum, samples) = (sum + sessions, samples + 1.0);
                peaks.threads = peaks.threads.max(agent.threads());
                std::thread::sleep(Duration::from_millis(100));
            }
            peaks.mean_sessions = sum / f64::max(samples, 1.0);
            peaks
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        (result, sampler.join().expect("the sampler"))
    })
}

fn delay(ms: u64) -> SlowHsm {
    SlowHsm::new().sign_delay(Duration::from_millis(ms))
}

/// What every step of the section runs on.
pub struct Bench<'a> {
    pub fixture: &'a Fixture,
    pub runtime: &'a tokio::runtime::Runtime,
    pub cores: usize,
    pub step: Duration,
}

pub fn run(bench: &Bench, ceiling: &Rates, report: &mut String) {
    let Bench {
        fixture,
        runtime,
        cores,
        ..
    } = *bench;
    let _ = writeln!(report, "## 6. Through a slow HSM\n");
    let _ = writeln!(report, "The slow module (`tests/slow-hsm`) in front of the same SoftHSM token sleeps in each C_Sign. Each step starts an agent afresh, with the default config and with `max_sessions = {cores}` (one session per core, as before the pool sized itself), in turn. Sessions: the signing sessions `/metrics` showed, sampled every 100 ms: their mean (and the most).\n");
    fresh(bench, ceiling, report);
    crowd(fixture, runtime, cores, report);
    hang(fixture, runtime, report);
}

fn fresh(bench: &Bench, ceiling: &Rates, report: &mut String) {
    let Bench {
        fixture,
        runtime,
        cores,
        step,
    } = *bench;
    let _ = writeln!(
        report,
        "### Fresh tokens at {CONNECTIONS} connections (`cache = false`)\n"
    );
    let _ = writeln!(report, "Ideal: min(mean sessions / delay, the HSM ceiling of section 1 with {cores} sessions). Target at 2 ms: ≥ 0.8 of the ideal with the default config.\n");
    let _ = writeln!(report, "| alg | delay ms | tokens/s | errors | sessions | ideal | ratio to ideal | one per core: tokens/s | sessions | ratio to ideal | default / one per core |\n|---|---|---|---|---|---|---|---|---|---|---|");
    for (alg, issuer) in [(Alg::Es256, EC_ISSUER), (Alg::Rs256, RSA_ISSUER)] {
        let ceiling = ceiling.get(alg, cores);
        for ms in DELAYS_MS {
            let ideal = |sessions: f64| match ms {
                0 => ceiling,
                _ => (sessions * 1000.0 / ms as f64).min(ceiling),
            };
            let mut cells = Vec::new();
            let mut rates = Vec::new();
            for (_, signing) in configs(cores) {
                let agent = fixture.serve_slow("cache = false", &signing, &delay(ms));
                let socket = fixture.socket();
                let (result, peaks) = sampled(&agent, &socket, || {
                    runtime.block_on(load::run(&socket, CONNECTIONS, step, issuer, "fresh"))
                });
                drop(agent);
                let rate = result.per_second();
                let ideal = ideal(peaks.mean_sessions);
                cells.push(format!(
                    "{rate:.0} | {}{} | {} | {ideal:.0} | {:.2}",
                    result.errors,
                    crate::first_error(&result),
                    peaks.sessions(),
                    rate / ideal
                ));
                rates.push(rate);
            }
            // The baseline's own columns leave out its errors and ideal.
            let baseline: Vec<&str> = cells[1].split(" | ").collect();
            let _ = writeln!(
                report,
                "| {} | {ms} | {} | {} | {} | {} | {:.1} |",
                alg.as_str(),
                cells[0],
                baseline[0],
                baseline[2],
                baseline[4],
                rates[0] / rates[1]
            );
        }
    }
    report.push('\n');
}

fn crowd(fixture: &Fixture, runtime: &tokio::runtime::Runtime, cores: usize, report: &mut String) {
    integration_tests::daemon::raise_open_files_limit();
    let _ = writeln!(
        report,
        "### Cold start: {CROWD} distinct apps at once, 2 ms per signature\n"
    );
    let _ = writeln!(report, "{CROWD} connections opened at once, one request each for its own app (ES256, cache on and empty). Latency from the moment all began. Target: all answered with a token, p99 ≤ 250 ms.\n");
    let _ = writeln!(report, "| config | tokens | refused | p50 ms | p99 ms | max ms | sessions |\n|---|---|---|---|---|---|---|");
    for (name, signing) in configs(cores) {
        let agent = fixture.serve_slow("cache = true", &signing, &delay(2));
        let socket = fixture.socket();
        let (result, peaks) = sampled(&agent, &socket, || {
            runtime.block_on(load::burst(&socket, CROWD, EC_ISSUER, "app-"))
        });
        drop(agent);
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
            result.ok,
            kinds(&result),
            result.latency_ms(0.5),
            result.latency_ms(0.99),
            result.latency_ms(1.0),
            peaks.sessions()
        );
    }
    report.push('\n');
}

/// Before, during and after a 10 s hang of C_Sign.
fn hang(fixture: &Fixture, runtime: &tokio::runtime::Runtime, report: &mut String) {
    let hang_file = fixture.path("hang");
    let slow = delay(2).hang_while(&hang_file, "C_Sign");
    let agent = fixture.serve_slow("cache = false", "[signing]\ntimeout_seconds = 2\n", &slow);
    let socket = fixture.socket();
    let _ = writeln!(report, "### A hang of 10 s under load\n");
    let _ = writeln!(report, "{CONNECTIONS} connections asking for fresh ES256 tokens (2 ms per signature) without pause; C_Sign blocks for the middle phase; `timeout_seconds = 2`, so that both the deadline and the refusals that follow show. Every request must be answered. Threads: the most sampled in the phase.\n");
    let _ = writeln!(report, "| phase | seconds | tokens | refused | threads | descriptors at its end |\n|---|---|---|---|---|---|");
    let pattern = Pattern::cycling(&[(EC_ISSUER, "fresh")]);
    let phases = [
        ("before", 5, false),
        ("C_Sign hangs", 10, true),
        ("after", 10, false),
    ];
    let mut first_threads = None;
    for (name, seconds, hangs) in phases {
        if hangs {
            std::fs::write(&hang_file, "").expect("create the hang file");
        }
        let (result, peaks) = sampled(&agent, &socket, || {
            let phase =
                load::run_pattern(&socket, CONNECTIONS, Duration::from_secs(seconds), &pattern);
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(seconds + 30), phase).await
            })
        });
        if hangs {
            let _ = std::fs::remove_file(&hang_file);
        }
        let Ok(result) = result else {
            let _ = writeln!(
                report,
                "| {name} | {seconds} | requests left unanswered 30 s past the phase | | | |"
            );
            continue;
        };
        first_threads.get_or_insert(peaks.threads);
        let _ = writeln!(
            report,
            "| {name} | {:.1} | {} | {} | {} | {} |",
            result.elapsed.as_secs_f64(),
            result.ok,
            kinds(&result),
            peaks.threads,
            agent.open_fds()
        );
    }
    let _ = writeln!(
        report,
        "\nThreads {} before the hang and {} a second after the last phase.\n",
        first_threads.unwrap_or(0),
        {
            std::thread::sleep(Duration::from_secs(1));
            agent.threads()
        }
    );
}

/// Refusals by kind, `503 hsm-unavailable: 12, …`, or `0`.
fn kinds(result: &LoadResult) -> String {
    if result.kinds.is_empty() {
        return "0".into();
    }
    let kinds: Vec<String> = result
        .kinds
        .iter()
        .map(|(kind, count)| format!("{kind}: {count}"))
        .collect();
    kinds.join(", ")
}
