//! `make profile`: the agent under one load step while `perf record` samples
//! it, so the hot path of a missed target can be read from a call graph
//! instead of guessed. Prints the load's figures and leaves `perf.data`
//! (read it with `perf report -i`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::slow_hsm::SlowHsm;

use crate::agent::{metric, Fixture, EC_ISSUER, RSA_ISSUER};
use crate::load::{self, LoadResult};

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// Which key signs: es256 or rs256.
    #[arg(long, default_value = "es256")]
    alg: String,
    /// Serve from the cache instead of signing every request.
    #[arg(long)]
    cached: bool,
    /// Connections at once.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load (and of sampling).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Only the load step, without perf: for comparing a change quickly.
    #[arg(long)]
    without_perf: bool,
    /// The agent's `[signing] threads` (default: one per core).
    #[arg(long)]
    signing_threads: Option<usize>,
    /// Signatures through the slow module, sleeping this long in each C_Sign
    /// (section 6's HSM that answers in milliseconds).
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Where perf writes its samples.
    #[arg(long, default_value = "target/perf.data")]
    output: PathBuf,
}

impl ProfileArgs {
    /// Which tokens are asked for, and the app they are asked for.
    fn mode(&self) -> &'static str {
        if self.cached {
            "cached"
        } else {
            "fresh"
        }
    }
}

/// Runs the step with the agent under `perf record -g`; false when perf
/// could not record.
pub fn run(args: &ProfileArgs, runtime: &tokio::runtime::Runtime) -> bool {
    let issuer = match args.alg.as_str() {
        "es256" => EC_ISSUER,
        "rs256" => RSA_ISSUER,
        other => {
            eprintln!("--alg {other}: use es256 or rs256");
            return false;
        }
    };
    let fixture = Fixture::new();
    // Every audit line to a file, as in production.
    let mut sections = format!(
        "[audit]\nfile = {:?}\n",
        fixture.path("audit.jsonl").display().to_string()
    );
    if let Some(threads) = args.signing_threads {
        sections.push_str(&format!("\n[signing]\nthreads = {threads}\n"));
    }
    let cache = format!("cache = {}", args.cached);
    let agent = match args.delay_ms {
        Some(ms) => {
            let slow = SlowHsm::new().sign_delay(Duration::from_millis(ms));
            fixture.serve_slow(&cache, &sections, &slow)
        }
        None => {
            fixture.write_config_sections(&cache, &sections);
            fixture.serve().0
        }
    };
    if args.without_perf {
        let cpu = agent.cpu_time();
        let result = load_step(args, runtime, &fixture, issuer);
        report(args, &result, &fixture);
        // Less swayed than tokens/s by other processes sharing the cores.
        println!(
            "agent CPU: {:.2} µs per token",
            (agent.cpu_time() - cpu).as_secs_f64() * 1e6 / result.ok.max(1) as f64
        );
        return true;
    }
    // A stale file from an earlier run must not pass for this one's samples.
    let _ = std::fs::remove_file(&args.output);
    let perf = Command::new("perf")
        .args(["record", "-g", "--call-graph", "dwarf,16384", "-F", "499"])
        .arg("-o")
        .arg(&args.output)
        .arg("-p")
        .arg(agent.pid().to_string())
        .stdout(Stdio::null())
        .spawn();
    let mut perf = match perf {
        Ok(perf) => perf,
        Err(error) => {
            eprintln!("perf: {error} (apt-get install linux-perf)");
            return false;
        }
    };
    // perf needs a moment to attach before the samples mean anything.
    std::thread::sleep(Duration::from_millis(500));
    let result = load_step(args, runtime, &fixture, issuer);
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    // perf's exit status after SIGINT says nothing about the samples; the
    // file does.
    let _ = perf.wait();
    let recorded = std::fs::metadata(&args.output).is_ok_and(|file| file.len() > 0);
    report(args, &result, &fixture);
    if recorded {
        println!(
            "samples: {} (perf report -i {} --no-children)",
            args.output.display(),
            args.output.display()
        );
    }
    drop(agent);
    recorded
}

fn load_step(
    args: &ProfileArgs,
    runtime: &tokio::runtime::Runtime,
    fixture: &Fixture,
    issuer: &str,
) -> LoadResult {
    runtime.block_on(load::run(
        &fixture.socket(),
        args.connections,
        Duration::from_secs(args.seconds),
        issuer,
        args.mode(),
    ))
}

fn report(args: &ProfileArgs, result: &LoadResult, fixture: &Fixture) {
    println!(
        "{} {}, {} connections: {:.0} tokens/s, {} errors, p99 {:.3} ms",
        args.alg,
        args.mode(),
        args.connections,
        result.per_second(),
        result.errors,
        result.latency_ms(0.99)
    );
    let metric = |name: &str| metric(&fixture.socket(), &format!("access_token_agent_{name}"));
    if let Some(sessions) = metric("signing_sessions") {
        println!("signing sessions at the end: {sessions}");
    }
}
