//! `make bench`: the agent against its limits, measured side by side in one
//! run on this machine, printed as Markdown (and written to BENCHMARKS.md
//! with `--write`, which keeps the file's hand-written part: see
//! [`report_file`]).
//!
//! 1. HSM ceiling: raw `C_Sign` tokens/s through cryptoki, 1 and N sessions.
//! 2. The agent signing every request (`cache = false`) at 1, 16, 64
//!    connections, as a ratio to (1) at the same number of sessions.
//! 3. The agent serving from its cache at 1, 16, 64, 256 connections, and
//!    beside its floor, a bare hyper server (`--only-floor`: this part alone).
//! 4. In-process signing with the key in memory, and agent-cached / it.
//! 5. The agent's memory idle, with 1,024 connections (the default cap) held open and a few
//!    seconds after they closed (`memory`: this section alone), and the
//!    time from exec to READY.
//! 6. Through a slow HSM (the slow module): fresh tokens at 0 to 5 ms per
//!    signature against the ideal, a crowd of apps starting at once, and a
//!    hang under load (`--only-slow-hsm`: sections 1 and 6 alone).
//! 7. Instructions per token under callgrind, cached and fresh, beside the
//!    floor's per answer: repeatable where (2) and (3) are not
//!    (`--only-instructions`: this section alone, replacing only it in the
//!    file `--write` names).
//!
//! `access-token-bench soak` (`make soak`) runs the agent for minutes at a
//! steady rate instead, and fails if memory grows or any request fails.

mod against_floor;
mod agent;
mod floor;
mod hostile;
mod instructions;
mod load;
mod memory;
mod profile;
mod report_file;
mod signing;
mod slow_hsm;
mod soak;

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use access_token_agent::hsm::{key_pairs, Access, Hsm};
use access_token_agent::key_type::Alg;
use clap::Parser;

use agent::{Fixture, EC_ISSUER, RSA_ISSUER};

#[derive(Parser)]
#[command(about = "Benchmarks the agent against the HSM ceiling and in-process signing")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Also write the report to this file.
    #[arg(long, global = true)]
    write: Option<PathBuf>,
    /// Another build of the agent (an earlier commit's, say): the fresh
    /// signing steps run on it too, in turn with this build, for a
    /// before/after ratio from one run.
    #[arg(long)]
    before_agent: Option<PathBuf>,
    /// Only sections 1 (the HSM ceiling, which section 6 compares with) and
    /// 6 (through a slow HSM).
    #[arg(long)]
    only_slow_hsm: bool,
    /// Only the agent's cached tokens beside their floor (section 3's last
    /// part).
    #[arg(long)]
    only_floor: bool,
    /// Only section 7 (instructions per token under callgrind); with
    /// `--write`, only that section of the file is replaced.
    #[arg(long)]
    only_instructions: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Minutes at a steady rate with short-lived tokens: memory, descriptors
    /// and errors; exits 1 if memory grows too much or any request fails.
    Soak(soak::SoakArgs),
    /// One load step with the agent under `perf record`, to find where its
    /// time goes.
    Profile(profile::ProfileArgs),
    /// A well-behaved client's latency alone and beside hostile loads of
    /// another user (root only), and the cost of a miss in a full cache.
    Hostile(hostile::HostileArgs),
    /// Section 5 alone: the agent's memory idle, with 1,024 connections
    /// held open, and after they closed.
    Memory {
        /// Another build of the agent, measured in turn with this one.
        #[arg(long)]
        before_agent: Option<PathBuf>,
    },
    /// The hostile side of `hostile`, run by it as uid 65534.
    #[command(hide = true)]
    Flood(hostile::FloodArgs),
    /// The floor a cached token is measured against, run by the bench.
    #[command(hide = true)]
    FloorServer(floor::FloorArgs),
}

fn main() {
    let mut args = Args::parse();
    // The agent runs in its token's directory: a relative path would miss.
    args.before_agent = args.before_agent.as_deref().map(absolute);
    if let Some(Command::Memory { before_agent }) = &mut args.command {
        *before_agent = before_agent.as_deref().map(absolute);
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime for the load generator");
    let mut report = String::new();
    let passed = match &args.command {
        None => {
            benchmarks(&args, &runtime, cores, &mut report);
            print!("{report}");
            true
        }
        Some(Command::Soak(soak)) => {
            let _ = writeln!(report, "# Soak\n");
            let _ = writeln!(report, "- date: {}", date());
            let _ = writeln!(report, "- machine: {}, {}", machine(cores), build());
            let _ = writeln!(report, "- command: `make soak`\n");
            soak::run(soak, &runtime, &mut report)
        }
        Some(Command::Profile(profile)) => profile::run(profile, &runtime),
        Some(Command::Hostile(hostile)) => {
            let _ = writeln!(report, "# Beside hostile clients\n");
            let _ = writeln!(report, "- date: {}", date());
            let _ = writeln!(report, "- machine: {}, {}", machine(cores), build());
            let _ = writeln!(
                report,
                "- command: `target/release/access-token-bench hostile`\n"
            );
            let passed = hostile::run(hostile, &runtime, &mut report);
            print!("{report}");
            passed
        }
        Some(Command::Memory { before_agent }) => {
            memory::run(
                &Fixture::new(),
                &runtime,
                before_agent.as_deref(),
                &mut report,
            );
            print!("{report}");
            true
        }
        Some(Command::Flood(flood)) => hostile::flood(flood, &runtime),
        Some(Command::FloorServer(floor)) => floor::serve(floor),
    };
    if let Some(path) = &args.write {
        let written = match args.only_instructions && args.command.is_none() {
            true => report_file::write_section(path, instructions::HEADING, &report),
            false => report_file::write(path, &report),
        };
        written.unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    if !passed {
        std::process::exit(1);
    }
}

fn benchmarks(args: &Args, runtime: &tokio::runtime::Runtime, cores: usize, report: &mut String) {
    let step = Duration::from_secs(args.seconds);
    let fixture = Fixture::new();
    if args.only_instructions {
        // The rest of the report stays the full run's: this section says
        // when and how it was measured itself.
        let alone = format!(
            "Measured alone by `access-token-bench --only-instructions` ({}; {}); the sections above come from the run in the header.",
            date(),
            machine(cores)
        );
        instructions::run(&fixture, runtime, Some(&alone), report);
        return;
    }
    header(report, args, cores);
    if args.only_floor {
        against_floor::run(&fixture, step, report);
        return;
    }
    // Measured in this order, reported in the order of the sections.
    let ceiling = hsm_ceiling(&fixture, cores, step, report);
    let slow = slow_hsm::Bench {
        fixture: &fixture,
        runtime,
        cores,
        step,
    };
    if args.only_slow_hsm {
        slow_hsm::run(&slow, &ceiling, report);
        return;
    }
    let mut baseline_section = String::new();
    let in_process = in_process(cores, step, &mut baseline_section);
    agent_fresh(&fixture, runtime, cores, step, &ceiling, args, report);
    agent_cached(&fixture, runtime, step, &in_process, report);
    against_floor::run(&fixture, step, report);
    report.push_str(&baseline_section);
    memory::run(&fixture, runtime, args.before_agent.as_deref(), report);
    report.push_str("\n\n");
    slow_hsm::run(&slow, &ceiling, report);
    report.push('\n');
    instructions::run(&fixture, runtime, None, report);
}

/// Tokens/s per (alg, threads) for the signing baselines.
pub struct Rates(Vec<(Alg, usize, f64)>);

impl Rates {
    pub fn get(&self, alg: Alg, threads: usize) -> f64 {
        self.0
            .iter()
            .find(|(a, t, _)| *a == alg && *t == threads)
            .map_or(f64::NAN, |(_, _, rate)| *rate)
    }
}

/// The cores and CPU model, and the token store.
fn machine(cores: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), SoftHSM 2 (file backend)")
}

/// Which build is measuring: figures of a debug build mean little.
fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    }
}

fn date() -> String {
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output();
    date.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn header(report: &mut String, args: &Args, cores: usize) {
    let _ = writeln!(report, "# Benchmarks\n");
    let _ = writeln!(report, "- date: {}", date());
    let _ = writeln!(report, "- machine: {}, release build", machine(cores));
    let seconds = args.seconds;
    let command = match args.only_slow_hsm {
        true => {
            format!("`access-token-bench --only-slow-hsm --seconds {seconds}` (sections 1 and 6)")
        }
        false => format!("`make bench` (`access-token-bench --seconds {seconds}`)"),
    };
    let _ = writeln!(report, "- command: {command}, {seconds} s per measurement");
    if let Some(before) = &args.before_agent {
        let _ = writeln!(
            report,
            "- before: `{}`, measured in turn with this build in section 2",
            before.display()
        );
    }
    let _ = writeln!(
        report,
        "- every figure below comes from this one run; ratios compare figures of the same run\n"
    );
}

fn hsm_ceiling(fixture: &Fixture, cores: usize, step: Duration, report: &mut String) -> Rates {
    std::env::set_var("SOFTHSM2_CONF", fixture.softhsm_conf());
    let hsm = Hsm::open(agent::MODULE.as_ref(), fixture.label(), Access::ReadOnly)
        .expect("open the token");
    hsm.login(&agent::pin(&fixture.pin_file())).expect("log in");
    let hsm = Arc::new(hsm);
    let mut rates = Vec::new();
    let _ = writeln!(
        report,
        "## 1. HSM ceiling: raw C_Sign through cryptoki, full token\n"
    );
    let _ = writeln!(
        report,
        "| alg | sessions (threads) | tokens/s | CPU µs per token |\n|---|---|---|---|"
    );
    for (alg, issuer) in [(Alg::Rs256, RSA_ISSUER), (Alg::Es256, EC_ISSUER)] {
        let key =
            key_pairs::active_signing_key(&hsm.anchor(), issuer, None, now()).expect("the key");
        for threads in [1, cores] {
            let cpu = agent::own_cpu_time();
            let rate = signing::hsm_ceiling(hsm.clone(), key.clone(), threads, step);
            let cpu =
                (agent::own_cpu_time() - cpu).as_secs_f64() * 1e6 / (rate * step.as_secs_f64());
            let _ = writeln!(
                report,
                "| {} | {threads} | {rate:.0} | {cpu:.0} |",
                alg.as_str()
            );
            rates.push((alg, threads, rate));
        }
    }
    report.push('\n');
    Rates(rates)
}

fn in_process(cores: usize, step: Duration, report: &mut String) -> Rates {
    let mut rates = Vec::new();
    let _ = writeln!(
        report,
        "## 4. In-process baseline: key in memory (OpenSSL), full token\n"
    );
    let _ = writeln!(report, "| alg | threads | tokens/s |\n|---|---|---|");
    for alg in [Alg::Rs256, Alg::Es256] {
        for threads in [1, cores] {
            let rate = signing::in_process(alg, threads, step);
            let _ = writeln!(report, "| {} | {threads} | {rate:.0} |", alg.as_str());
            rates.push((alg, threads, rate));
        }
    }
    report.push('\n');
    Rates(rates)
}

fn agent_fresh(
    fixture: &Fixture,
    runtime: &tokio::runtime::Runtime,
    cores: usize,
    step: Duration,
    ceiling: &Rates,
    args: &Args,
    report: &mut String,
) {
    fixture.write_config(false);
    let _ = writeln!(report, "## 2. Agent, fresh signing (`cache = false`)\n");
    let _ = writeln!(report, "Ratio: agent tokens/s over the HSM ceiling (1) with as many sessions as can be busy (min(connections, {cores} signing threads)). Target ≥ 0.90. Each step starts the agent afresh.\n");
    let mut columns = String::from("| alg | connections | tokens/s | errors | ratio to HSM ceiling | CPU µs per token: agent + load generator |");
    if args.before_agent.is_some() {
        columns.push_str(" before: tokens/s | before: ratio |");
    }
    let rule = "|---".repeat(columns.matches(" |").count());
    let _ = writeln!(report, "{columns}\n{rule}|");
    let mut ready = None;
    for (alg, issuer) in [(Alg::Rs256, RSA_ISSUER), (Alg::Es256, EC_ISSUER)] {
        for connections in [1, 16, 64] {
            let sessions = connections.min(cores);
            let ceiling = ceiling.get(alg, sessions);
            let mut fresh = |binary: &Path| {
                let (agent, started) = fixture.serve_from(binary);
                ready.get_or_insert(started);
                let cpu = (agent.cpu_time(), agent::own_cpu_time());
                let result = runtime.block_on(load::run(
                    &fixture.socket(),
                    connections,
                    step,
                    issuer,
                    "fresh",
                ));
                let per_token = |used: Duration| used.as_secs_f64() * 1e6 / result.ok.max(1) as f64;
                let cpu = (
                    per_token(agent.cpu_time() - cpu.0),
                    per_token(agent::own_cpu_time() - cpu.1),
                );
                drop(agent);
                (result, cpu)
            };
            let (result, (agent_cpu, load_cpu)) = fresh(&agent::agent_binary());
            let _ = write!(
                report,
                "| {} | {connections} | {:.0} | {}{} | {:.2} (vs {sessions} sessions) | {agent_cpu:.0} + {load_cpu:.0} |",
                alg.as_str(),
                result.per_second(),
                result.errors,
                first_error(&result),
                result.per_second() / ceiling
            );
            if let Some(before) = &args.before_agent {
                let (old, _) = fresh(before);
                let errors = match old.errors {
                    0 => String::new(),
                    n => format!(" ({n} errors{})", first_error(&old)),
                };
                let _ = write!(
                    report,
                    " {:.0}{errors} | {:.2} |",
                    old.per_second(),
                    old.per_second() / ceiling
                );
            }
            report.push('\n');
        }
    }
    let _ = writeln!(
        report,
        "\nTime from exec to READY=1 (keys found, self-test signed and verified): {:.0} ms\n",
        ready.unwrap_or_default().as_secs_f64() * 1000.0
    );
}

fn agent_cached(
    fixture: &Fixture,
    runtime: &tokio::runtime::Runtime,
    step: Duration,
    in_process: &Rates,
    report: &mut String,
) {
    fixture.write_config(true);
    fixture.allow_one_uid_every_connection();
    let (_agent, _) = fixture.serve();
    let _ = writeln!(report, "## 3. Agent, cached tokens\n");
    let _ = writeln!(report, "Target: ≥ 50,000 tokens/s at 64 connections with p99 under 1 ms. Ratio: agent-cached over in-process RS256 signing (4) with all cores.\n");
    let _ = writeln!(report, "| connections | tokens/s | p50 ms | p99 ms | p99.9 ms | errors | ratio to in-process RS256 |\n|---|---|---|---|---|---|---|");
    let baseline = in_process.get(
        Alg::Rs256,
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    for connections in [1, 16, 64, 256] {
        let result = runtime.block_on(load::run(
            &fixture.socket(),
            connections,
            step,
            RSA_ISSUER,
            "cached",
        ));
        let _ = writeln!(
            report,
            "| {connections} | {:.0} | {:.3} | {:.3} | {:.3} | {}{} | {:.1} |",
            result.per_second(),
            result.latency_ms(0.5),
            result.latency_ms(0.99),
            result.latency_ms(0.999),
            result.errors,
            first_error(&result),
            result.per_second() / baseline
        );
    }
}

pub fn first_error(result: &load::LoadResult) -> String {
    match &result.first_error {
        Some(error) => format!(" (first: {})", error.chars().take(80).collect::<String>()),
        None => String::new(),
    }
}

/// `path` made absolute, or the bench stops naming it.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("--before-agent {}: {e}", path.display()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
