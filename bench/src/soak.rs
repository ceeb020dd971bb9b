//! `make soak`: the agent under a steady request rate for minutes on end,
//! with tokens short-lived enough that every cached token is signed again
//! every few seconds and connections replaced as they go. Resident memory
//! and open descriptors are taken at READY, after the first minute (once
//! every cache entry, buffer and thread exists) and at the end; every
//! answer that is not a token counts as an error.

use std::fmt::Write;
use std::time::Duration;

use crate::agent::{Fixture, EC_ISSUER, RSA_ISSUER};
use crate::load::{self, LoadResult, Pattern};

/// Apps asked for per issuer: each (issuer, app) is its own cache entry.
const APPS: usize = 50;

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Minutes of load.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Requests per second, all connections together.
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// Connections at once.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Token lifetime in seconds; a cached token is signed again after half of it.
    #[arg(long, default_value_t = 20)]
    lifetime: u64,
    /// Requests on one connection before it is closed and another opened.
    #[arg(long, default_value_t = 100)]
    reuse: u64,
    /// Largest accepted growth of resident memory from the end of the first
    /// minute to the end, in percent.
    #[arg(long, default_value_t = 5.0)]
    max_growth: f64,
}

/// Resident memory (KiB) and descriptors at one moment.
#[derive(Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
}

/// Runs the soak, appends its report to `report`, and says whether it passed.
pub fn run(args: &SoakArgs, runtime: &tokio::runtime::Runtime, report: &mut String) -> bool {
    let fixture = Fixture::new();
    fixture.write_config_with(&format!(
        "cache = true\nlifetime_seconds = {}",
        args.lifetime
    ));
    let (agent, _) = fixture.serve();
    let sample = || Sample {
        rss_kib: agent.rss_kib(),
        fds: agent.open_fds(),
    };
    let at_ready = sample();
    let apps: Vec<String> = (0..APPS).map(|i| format!("soak-{i}")).collect();
    let targets: Vec<(&str, &str)> = [RSA_ISSUER, EC_ISSUER]
        .iter()
        .flat_map(|issuer| apps.iter().map(move |app| (*issuer, app.as_str())))
        .collect();
    let mut pattern = Pattern::cycling(&targets);
    pattern.interval = Some(Duration::from_secs_f64(
        args.connections as f64 / args.rate as f64,
    ));
    pattern.reuse = Some(args.reuse);

    let _ = writeln!(
        report,
        "{} minutes at {} requests/s over {} connections (each replaced after {} requests), {} issuers × {APPS} apps, token lifetime {} s (a cached token is signed again once {} s old, at the next request for it)\n",
        args.minutes,
        args.rate,
        args.connections,
        args.reuse,
        2,
        args.lifetime,
        args.lifetime / 2
    );
    let _ = writeln!(
        report,
        "| minute | tokens | errors | p50 ms | p99 ms | RSS MiB | descriptors |\n|---|---|---|---|---|---|---|"
    );
    print!("{report}");
    let mut total = LoadResult::default();
    let mut after_first = at_ready;
    for minute in 1..=args.minutes {
        let result = runtime.block_on(load::run_pattern(
            &fixture.socket(),
            args.connections,
            Duration::from_secs(60),
            &pattern,
        ));
        let now = sample();
        if minute == 1 {
            after_first = now;
        }
        let line = format!(
            "| {minute} | {} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
            result.ok,
            result.errors,
            result.latency_ms(0.5),
            result.latency_ms(0.99),
            mib(now.rss_kib),
            now.fds
        );
        print!("{line}");
        report.push_str(&line);
        total.ok += result.ok;
        total.errors += result.errors;
        total.first_error = total.first_error.or(result.first_error);
    }
    let at_end = sample();
    let signed = counter(&fixture.socket(), "access_token_agent_cache_misses_total");
    let cached = counter(&fixture.socket(), "access_token_agent_cache_hits_total");
    let growth = percent(after_first.rss_kib, at_end.rss_kib);
    let passed = total.errors == 0 && growth < args.max_growth;
    let summary = format!(
        "\n- tokens: {}, errors: {}{}\n\
         - signed afresh: {signed}, served from the cache: {cached} (the agent's metrics)\n\
         - RSS: {:.2} MiB at READY, {:.2} MiB after the first minute, {:.2} MiB at the end: {growth:+.2} % from the first minute to the end (limit {} %), {:+.2} % from READY\n\
         - descriptors: {} at READY, {} after the first minute, {} at the end\n\
         - result: {}\n",
        total.ok,
        total.errors,
        total
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        mib(at_ready.rss_kib),
        mib(after_first.rss_kib),
        mib(at_end.rss_kib),
        args.max_growth,
        percent(at_ready.rss_kib, at_end.rss_kib),
        at_ready.fds,
        after_first.fds,
        at_end.fds,
        if passed { "pass" } else { "FAIL" }
    );
    print!("{summary}");
    report.push_str(&summary);
    passed
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percent(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / from as f64 * 100.0
}

/// A counter from the agent's `/metrics`, as text ("?" if unreadable).
fn counter(socket: &std::path::Path, name: &str) -> String {
    use std::io::{Read, Write as _};
    let read = || -> std::io::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    };
    read()
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| Some(line.strip_prefix(name)?.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".into())
}
