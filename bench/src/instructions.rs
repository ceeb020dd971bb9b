//! Section 7: instructions per token, counted by callgrind. On a machine
//! shared with other work, tokens/s and CPU time swing by tens of percent
//! from one run to the next; the instructions a token costs repeat to about
//! 1 %, so a change of a few percent in the agent's own work shows here
//! when it cannot show in sections 2 and 3.
//!
//! Agent and floor ([`crate::floor`]) each run under `valgrind
//! --tool=callgrind`; after a warm-up the counts are zeroed
//! (`callgrind_control --zero`), a fixed number of requests is sent, and
//! the dump (`callgrind_control --dump`) divided by it is the cost of one
//! answer, all threads together.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tokio::runtime::Runtime;

use crate::agent::{Fixture, EC_ISSUER};
use crate::floor::Floor;
use crate::load::{self, LoadResult};

/// The section's heading, by which `--only-instructions --write` finds it.
pub const HEADING: &str = "## 7. Instructions per token (callgrind)";

/// Kept-alive connections each step sends on.
const CONNECTIONS: usize = 8;
/// Requests per connection before the counts are zeroed: connections,
/// caches and the signing sessions settle, and their start is not counted.
const WARM_UP: u64 = 50;
/// Requests per connection counted, cached (and the floor) and fresh:
/// about a minute each under valgrind, which runs the agent some 50 times
/// slower.
const CACHED: u64 = 4_000;
const FRESH: u64 = 500;
/// Targets: the agent's instructions per cached token, and per fresh token
/// outside the signature, over the floor's per answer.
const CACHED_TARGET: f64 = 3.0;
const FRESH_TARGET: f64 = 4.5;
/// `[signing] timeout_seconds` for the agent under valgrind: the default
/// 10 s is far above a signature's time natively, but valgrind slows the
/// agent and serialises its threads, and a refused signature would leave
/// the count short of tokens.
const SIGNING_TIMEOUT_SECONDS: u64 = 120;
/// SoftHSM's functions whose inclusive cost is the signature.
const SIGNATURE: [&str; 2] = ["C_SignInit", "C_Sign"];
const SOFTHSM: &str = "libsofthsm2.so";
/// The agent's default log level: a JSON line on stderr for every token,
/// as in production (where it goes to the journal).
const LOG: &str = "info";
/// The app of every request: the token whose bytes the floor answers, and
/// with the cache off, signed afresh each time.
const APP: &str = "cached";

/// Counts that one step under callgrind measured.
struct Counted {
    /// Tokens received.
    tokens: u64,
    errors: u64,
    /// The dump of the counted requests.
    dump: PathBuf,
    /// Instructions in all, every thread.
    instructions: u64,
}

impl Counted {
    fn per_token(&self, instructions: u64) -> f64 {
        instructions as f64 / self.tokens.max(1) as f64
    }
}

/// Measures agent and floor and writes the section. `alone`, if given,
/// says when and where a run of this section alone was measured.
pub fn run(fixture: &Fixture, runtime: &Runtime, alone: Option<&str>, report: &mut String) {
    let _ = writeln!(report, "{HEADING}\n");
    if let Some(alone) = alone {
        let _ = writeln!(report, "{alone}\n");
    }
    if !installed("valgrind") || !installed("callgrind_control") {
        let _ = writeln!(
            report,
            "Not measured: valgrind not found (`apt-get install valgrind`).\n"
        );
        return;
    }
    let bench = Bench {
        fixture,
        runtime,
        callgrind: Callgrind::new(),
    };
    let started = Instant::now();
    let measured = bench.measure();
    write_report(report, &measured);
    // Relative to the checkout, as `make bench` runs it: the report is
    // committed, and an absolute path names one machine's checkout.
    let cwd = std::env::current_dir().unwrap_or_default();
    let dir = &bench.callgrind.dir;
    let _ = writeln!(
        report,
        "Dumps kept in `{}/` for `callgrind_annotate --inclusive=yes`; the section took {:.0} s.\n",
        dir.strip_prefix(&cwd).unwrap_or(dir).display(),
        started.elapsed().as_secs_f64()
    );
}

/// Whether `program` is on the PATH.
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What every step runs on.
struct Bench<'a> {
    fixture: &'a Fixture,
    runtime: &'a Runtime,
    callgrind: Callgrind,
}

impl Bench<'_> {
    fn measure(&self) -> Measured {
        let (cached, body) = self.agent(true, LOG, "agent-cached", CACHED);
        let (quiet, _) = self.agent(true, "warn", "agent-cached-warn", CACHED);
        let (fresh, _) = self.agent(false, LOG, "agent-fresh", FRESH);
        let signature = inclusive(&fresh.dump, &SIGNATURE, SOFTHSM);
        Measured {
            cached,
            quiet,
            floor: self.floor(&body),
            fresh,
            signature,
            switches: self.switches_per_fresh_token(),
        }
    }

    /// The agent under callgrind with the cache on or off, logging at
    /// `log`, counted over `per_connection` requests on each connection;
    /// also returns the token's bytes, which the floor answers with.
    fn agent(&self, cache: bool, log: &str, name: &str, per_connection: u64) -> (Counted, String) {
        write_config(self.fixture, cache);
        let agent = self
            .fixture
            .serve_wrapped(log, |command| self.callgrind.wrap(name, command));
        let socket = self.fixture.socket();
        let body = crate::against_floor::cached_token(&socket, EC_ISSUER);
        let step = Step {
            name,
            pid: agent.pid(),
            socket: &socket,
            per_connection,
        };
        (step.count(self.runtime, &self.callgrind), body)
    }

    /// The floor answering `body` as the agent answers a cached token.
    fn floor(&self, body: &str) -> Counted {
        let floor = Floor::start_with(
            self.fixture.token().path(),
            &self.fixture.path("floor.sock"),
            body.as_bytes(),
            |command| self.callgrind.wrap("floor", command),
        );
        let step = Step {
            name: "floor",
            pid: floor.pid(),
            socket: floor.socket(),
            per_connection: CACHED,
        };
        step.count(self.runtime, &self.callgrind)
    }

    /// Thread switches per fresh ES256 token, natively: under valgrind,
    /// which runs one thread at a time and hands its lock from thread to
    /// thread, the switches would be valgrind's, not the agent's.
    fn switches_per_fresh_token(&self) -> f64 {
        write_config(self.fixture, false);
        let agent = self.fixture.serve_wrapped(LOG, |command| command);
        let socket = self.fixture.socket();
        let send = |per_connection| {
            self.runtime.block_on(load::run_count(
                &socket,
                CONNECTIONS,
                per_connection,
                EC_ISSUER,
                APP,
            ))
        };
        send(WARM_UP);
        let before = context_switches(agent.pid());
        let result = send(FRESH);
        let switches = context_switches(agent.pid()).saturating_sub(before);
        switches as f64 / result.ok.max(1) as f64
    }
}

/// The bench's config with the cache on or off, and the signing deadline
/// raised for valgrind's pace.
fn write_config(fixture: &Fixture, cache: bool) {
    fixture.write_config_sections(
        &format!("cache = {cache}"),
        &format!("[signing]\ntimeout_seconds = {SIGNING_TIMEOUT_SECONDS}\n"),
    );
}

/// One counted step: a server under callgrind and the requests sent to it.
struct Step<'a> {
    /// The dump's name in [`Callgrind::dir`].
    name: &'a str,
    pid: i32,
    socket: &'a Path,
    per_connection: u64,
}

impl Step<'_> {
    /// Warms up, zeroes the counts, sends the counted requests and dumps.
    fn count(&self, runtime: &Runtime, callgrind: &Callgrind) -> Counted {
        let warm_up = self.send(runtime, WARM_UP);
        assert_eq!(
            warm_up.errors, 0,
            "{}: {:?}",
            self.name, warm_up.first_error
        );
        callgrind.control(self.pid, "--zero");
        let result = self.send(runtime, self.per_connection);
        let dump = callgrind.dump(self.name, self.pid);
        Counted {
            tokens: result.ok,
            errors: result.errors,
            instructions: total(&dump),
            dump,
        }
    }

    fn send(&self, runtime: &Runtime, per_connection: u64) -> LoadResult {
        runtime.block_on(load::run_count(
            self.socket,
            CONNECTIONS,
            per_connection,
            EC_ISSUER,
            APP,
        ))
    }
}

/// Servers run under callgrind, their dumps written to one directory.
struct Callgrind {
    dir: PathBuf,
}

impl Callgrind {
    /// Dumps go to `target/callgrind/`, emptied first, so that they can be
    /// read again after the run.
    fn new() -> Callgrind {
        let target = integration_tests::process::profile_dir();
        let dir = target.parent().unwrap_or(&target).join("callgrind");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create target/callgrind");
        Callgrind { dir }
    }

    /// `command` run under callgrind instead, with the same arguments,
    /// environment and directory.
    fn wrap(&self, name: &str, command: Command) -> Command {
        let mut valgrind = Command::new("valgrind");
        valgrind
            .arg("--tool=callgrind")
            // Only errors on stderr: the floor's is the bench's own.
            .arg("--quiet")
            // One count for all threads: a token's work is shared between
            // the I/O threads, the signing threads and the audit writer.
            .arg("--separate-threads=no")
            .arg(format!(
                "--callgrind-out-file={}/{name}.%p",
                self.dir.display()
            ))
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => valgrind.env(key, value),
                None => valgrind.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            valgrind.current_dir(dir);
        }
        valgrind
    }

    /// `callgrind_control <what> <pid>`; it returns once valgrind has done it.
    fn control(&self, pid: i32, what: &str) {
        let output = Command::new("callgrind_control")
            .arg(what)
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run callgrind_control");
        assert!(
            output.status.success(),
            "callgrind_control {what} {pid}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Dumps the counts since the zero; returns the dump's path, the
    /// first part of `name`'s process: `<name>.<pid>.1`.
    fn dump(&self, name: &str, pid: i32) -> PathBuf {
        self.control(pid, "--dump");
        let dump = self.dir.join(format!("{name}.{pid}.1"));
        assert!(dump.is_file(), "no dump {}", dump.display());
        dump
    }
}

/// The total of a dump's first event, `Ir`: its `summary:` line, callgrind's
/// own counter over every thread (with `--separate-threads=no`), which
/// `callgrind_annotate` reports as PROGRAM TOTALS. (The `totals:` line sums
/// the dump's cost lines instead and differs by about 0.1 %.)
fn total(dump: &Path) -> u64 {
    let text = std::fs::read_to_string(dump).expect("read the dump");
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|counts| counts.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in {}", dump.display()))
}

/// The inclusive instructions of `functions` of `object` in `dump`, summed,
/// from `callgrind_annotate --inclusive=yes`, which follows the call graph.
fn inclusive(dump: &Path, functions: &[&str], object: &str) -> u64 {
    let output = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(dump)
        .output()
        .expect("run callgrind_annotate");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| annotated(line, object))
        .filter(|(_, function)| functions.contains(function))
        .map(|(count, _)| count)
        .sum()
}

/// The count and function of an annotate line such as `1,234 (5.6%)
/// ???:C_Sign [/usr/lib/softhsm/libsofthsm2.so]`, if of `object`.
fn annotated<'l>(line: &'l str, object: &str) -> Option<(u64, &'l str)> {
    let line = line.trim_start();
    let (count, rest) = line.split_once(' ')?;
    let count = count.replace(',', "").parse().ok()?;
    let (place, in_object) = rest.rsplit_once(" [")?;
    if !in_object.trim_end_matches(']').ends_with(object) {
        return None;
    }
    // `file:function`; a C++ method (`SoftHSM::C_Sign(…)`) keeps its
    // class and arguments, so that only the C entry point matches.
    let (_, function) = place.split_once(':')?;
    Some((count, function))
}

/// Voluntary and involuntary context switches of every thread of `pid`
/// (`/proc/PID/task/*/status`): a process's own status counts only its
/// main thread.
fn context_switches(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .map(|status| status.lines().filter_map(switches_in).sum::<u64>())
        .sum()
}

/// The count of a `voluntary_ctxt_switches:` or `nonvoluntary_ctxt_switches:`
/// line of a status file.
fn switches_in(line: &str) -> Option<u64> {
    let value = line
        .strip_prefix("voluntary_ctxt_switches:")
        .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))?;
    value.trim().parse().ok()
}

/// Everything the section reports.
struct Measured {
    cached: Counted,
    /// Cached, logging at `warn`: no line per token.
    quiet: Counted,
    fresh: Counted,
    floor: Counted,
    /// Inclusive instructions of C_SignInit and C_Sign in the fresh dump.
    signature: u64,
    switches: f64,
}

impl Measured {
    /// Instructions per fresh token outside C_SignInit and C_Sign.
    fn fresh_outside(&self) -> f64 {
        let outside = self.fresh.instructions.saturating_sub(self.signature);
        self.fresh.per_token(outside)
    }
}

fn write_report(report: &mut String, m: &Measured) {
    let _ = writeln!(
        report,
        "Instructions (valgrind's `Ir`, user space only) per answer, all threads of the server together: unlike the tokens/s above they repeat to about 1 % on a shared machine. Agent and floor each run under `valgrind --tool=callgrind`; after READY and a warm-up of {WARM_UP} requests per connection the counts are zeroed (`callgrind_control --zero`), {CONNECTIONS} kept-alive connections send the counted requests, and the dump (`callgrind_control --dump`) over the tokens received is the figure. The agent: the bench's config, no audit file, the default log level (`info`: a JSON line per token on stderr, here to a file), and `[signing] timeout_seconds = {SIGNING_TIMEOUT_SECONDS}`, raised from 10 so that valgrind's slowness is never taken for a hung HSM. The floor: section 3's bare hyper server answering the cached ES256 token's bytes.\n"
    );
    let floor = m.floor.per_token(m.floor.instructions);
    let _ = writeln!(
        report,
        "| ES256 token | agent instructions | floor instructions | agent / floor | target | |\n|---|---|---|---|---|---|"
    );
    let cached = m.cached.per_token(m.cached.instructions);
    row(report, "cached", (cached, None), floor, Some(CACHED_TARGET));
    let quiet = m.quiet.per_token(m.quiet.instructions);
    let label = "cached, log level `warn` (no line per token)";
    row(report, label, (quiet, None), floor, None);
    let fresh = m.fresh.per_token(m.fresh.instructions);
    let label = "fresh, outside C_SignInit + C_Sign";
    row(
        report,
        label,
        (m.fresh_outside(), Some(fresh)),
        floor,
        Some(FRESH_TARGET),
    );
    if m.signature == 0 {
        // A SoftHSM without its symbols, say: the row above is then the
        // whole token, not what lies outside the signature.
        let _ = writeln!(report, "\n**C_SignInit and C_Sign were not found in the fresh dump's annotation: the fresh row counts the signature too.**");
    }
    let _ = writeln!(
        report,
        "\nFresh: SoftHSM's C_SignInit and C_Sign, with all they call (`callgrind_annotate --inclusive=yes`), cost {} per token. Tokens counted (errors): cached {} ({}), at `warn` {} ({}), fresh {} ({}), floor {} ({}).\n",
        thousands(m.fresh.per_token(m.signature)),
        m.cached.tokens,
        m.cached.errors,
        m.quiet.tokens,
        m.quiet.errors,
        m.fresh.tokens,
        m.fresh.errors,
        m.floor.tokens,
        m.floor.errors,
    );
    let _ = writeln!(
        report,
        "Thread switches per fresh ES256 token (voluntary and involuntary, all the agent's threads, `/proc/PID/task/*/status`), measured without valgrind, which runs one thread at a time, over {} tokens on {CONNECTIONS} connections: **{:.2}**. A hand-off to a signing thread and back costs two.\n",
        FRESH * CONNECTIONS as u64,
        m.switches
    );
}

/// A table row: the agent's instructions per token (and the total they
/// are part of) against the floor's, and the target for their ratio if
/// there is one.
fn row(
    report: &mut String,
    label: &str,
    agent: (f64, Option<f64>),
    floor: f64,
    target: Option<f64>,
) {
    let (agent, total) = agent;
    let of = total.map_or(String::new(), |total| format!(" (of {})", thousands(total)));
    let ratio = agent / floor;
    let (target, verdict) = match target {
        Some(target) => (format!("≤ {target}"), verdict(ratio, target)),
        None => (String::new(), ""),
    };
    let _ = writeln!(
        report,
        "| {label} | {}{of} | {} | {ratio:.1} | {target} | {verdict} |",
        thousands(agent),
        thousands(floor)
    );
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio <= target {
        "met"
    } else {
        "missed"
    }
}

/// `n` rounded, with thousands separated: 44,100.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotate_lines_give_count_and_c_function() {
        let line =
            "  505,394,937 (44.44%)  ???:C_Sign [/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so]";
        assert_eq!(annotated(line, SOFTHSM), Some((505_394_937, "C_Sign")));
        let small = "   90,000 ( 0.01%)  ???:C_SignInit [/usr/lib/softhsm/libsofthsm2.so]";
        assert_eq!(annotated(small, SOFTHSM), Some((90_000, "C_SignInit")));
        let method =
            "  9 (0.1%)  ???:SoftHSM::C_Sign(unsigned long) [/usr/lib/softhsm/libsofthsm2.so]";
        assert_ne!(annotated(method, SOFTHSM).map(|(_, f)| f), Some("C_Sign"));
        let elsewhere = "  12 (0.1%)  ???:C_Sign [/usr/lib/other.so]";
        assert_eq!(annotated(elsewhere, SOFTHSM), None);
        assert_eq!(annotated("1,234 (100.0%)  PROGRAM TOTALS", SOFTHSM), None);
    }

    #[test]
    fn the_total_is_the_summary_line() {
        let dump = std::env::temp_dir().join(format!("callgrind-test-{}", std::process::id()));
        std::fs::write(
            &dump,
            "events: Ir\nsummary: 1179128171\nfn=x\n1 2\ntotals: 1179172832\n",
        )
        .unwrap();
        assert_eq!(total(&dump), 1_179_128_171);
        let _ = std::fs::remove_file(dump);
    }

    #[test]
    fn switches_are_read_from_both_lines() {
        assert_eq!(switches_in("voluntary_ctxt_switches:\t12"), Some(12));
        assert_eq!(switches_in("nonvoluntary_ctxt_switches:\t3"), Some(3));
        assert_eq!(switches_in("Threads:\t9"), None);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(44_100.4), "44,100");
        assert_eq!(thousands(574_000.0), "574,000");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
