//! Section 5: the agent's resident memory idle, with the default
//! `server.max_connections` (1,024) held open (each with one answered
//! token request), and a few seconds after they all closed; and the time
//! from exec to READY.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::{Agent, Fixture, RSA_ISSUER};
use crate::load;

/// Connections held open at once: the default `server.max_connections`.
const HELD: usize = 1_024;
/// `server.max_connections` as its default, and `max_connections_per_uid`
/// as high (the load generator is one uid standing for many clients).
const MAX_CONNECTIONS: usize = 1_024;
/// How long after the last connection closed memory is read again.
const SETTLE: Duration = Duration::from_secs(3);
/// The target: resident memory with the connections held. What stays
/// resident after they closed is reported: glibc keeps freed memory for
/// the agent's next allocations, and nothing gives it back on purpose.
const HELD_TARGET_MIB: f64 = 64.0;

/// Resident memory in KiB at each moment, and the time to READY.
struct Measured {
    ready: Duration,
    idle: u64,
    held: u64,
    held_count: usize,
    after: u64,
}

impl Measured {
    /// KiB per held connection above idle.
    fn per_connection(&self) -> f64 {
        self.held.saturating_sub(self.idle) as f64 / self.held_count.max(1) as f64
    }

    /// The resident memory and per-connection cells of row `index`
    /// (idle, held, after).
    fn cells(&self, index: usize) -> String {
        let kib = [self.idle, self.held, self.after][index];
        let per_connection = match index {
            1 => format!("{:.1} KiB", self.per_connection()),
            _ => String::new(),
        };
        format!("{:.1} MiB | {per_connection}", kib as f64 / 1024.0)
    }
}

/// Measures this build (and `before`, in turn, if given) and writes the section.
pub fn run(
    fixture: &Fixture,
    runtime: &tokio::runtime::Runtime,
    before: Option<&Path>,
    report: &mut String,
) {
    raise_open_files(MAX_CONNECTIONS as u64 + 256);
    let now = measure(fixture, runtime, &crate::agent::agent_binary());
    let old = before.map(|binary| measure(fixture, runtime, binary));
    let _ = writeln!(report, "## 5. Agent memory and start-up\n");
    let _ = writeln!(report, "`max_connections = {MAX_CONNECTIONS}`. Target: at most {HELD_TARGET_MIB:.0} MiB with {HELD} connections held open, each with one answered token request; what stays {} s after they all closed is reported.\n", SETTLE.as_secs());
    let mut columns = String::from("| moment | resident memory | per connection | target |");
    if old.is_some() {
        columns.push_str(" before: resident memory | before: per connection |");
    }
    let rule = "|---".repeat(columns.matches(" |").count());
    let _ = writeln!(report, "{columns}\n{rule}|");
    let rows = [
        ("idle after READY".to_owned(), String::new()),
        (
            format!("{} connections held open", now.held_count),
            format!("≤ {HELD_TARGET_MIB:.0} MiB"),
        ),
        (
            format!("{} s after they all closed", SETTLE.as_secs()),
            String::new(),
        ),
    ];
    for (index, (moment, target)) in rows.into_iter().enumerate() {
        let _ = write!(report, "| {moment} | {} | {target} |", now.cells(index));
        if let Some(old) = &old {
            let _ = write!(report, " {} |", old.cells(index));
        }
        report.push('\n');
    }
    let _ = writeln!(
        report,
        "\nTime from exec to READY=1 (cached config): {:.0} ms",
        now.ready.as_secs_f64() * 1000.0
    );
}

/// One agent of `binary`: idle, with the connections held, after they closed.
fn measure(fixture: &Fixture, runtime: &tokio::runtime::Runtime, binary: &Path) -> Measured {
    fixture.write_config(true);
    fixture.set_server(&format!(
        "max_connections = {MAX_CONNECTIONS}\nmax_connections_per_uid = {MAX_CONNECTIONS}\n"
    ));
    let (agent, ready) = fixture.serve_from(binary);
    let (idle, idle_fds) = (agent.rss_kib(), agent.open_fds());
    let held = runtime.block_on(load::hold_connections(&fixture.socket(), HELD, RSA_ISSUER));
    let (at_held, held_count) = (agent.rss_kib(), held.len());
    drop(held);
    wait_for_fds(&agent, idle_fds);
    std::thread::sleep(SETTLE);
    Measured {
        ready,
        idle,
        held: at_held,
        held_count,
        after: agent.rss_kib(),
    }
}

/// Waits (up to 30 s) until the agent has closed its side of the
/// connections, down to the descriptors it had idle.
fn wait_for_fds(agent: &Agent, idle: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.open_fds() > idle && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Raises this process's open-files limit to `needed` (the hard limit too,
/// which root may): it holds a descriptor per connection, and so does the
/// agent, which inherits the limit.
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        limit.rlim_max = limit.rlim_max.max(needed);
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            eprintln!(
                "cannot raise the open-files limit to {needed}: {}; fewer connections may be held",
                std::io::Error::last_os_error()
            );
        }
    }
}
