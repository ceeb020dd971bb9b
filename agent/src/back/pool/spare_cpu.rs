//! Whether the machine has CPU to spare: the other half of the sizing rule.
//!
//! A signing thread off the CPU may be waiting for the HSM, or for a core
//! (it was woken, and every core is busy). Only the first is worth another
//! session, and the kernel does not tell them apart per thread without
//! scheduler statistics that are often compiled out. But a busy machine
//! does: when less than half a core is idle, another session could only
//! take CPU from the sessions already signing. So, once per [`WINDOW`], one
//! signing thread reads `/proc/stat` and moves the pool one session towards
//! the machine's limit: one more while half a core is idle, one fewer while
//! none is. One step per window, because each step changes what the next
//! window measures.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::try_lock;

/// The shortest span the idle share is measured over.
pub const WINDOW: Duration = Duration::from_millis(100);

/// Idle cores below which the pool does not grow.
pub const SPARE_CORES: f64 = 0.5;

/// The last reading of `/proc/stat` and the verdict drawn from it.
#[derive(Debug, Default)]
pub struct SpareCpu {
    last: Mutex<Option<Reading>>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    ticks: Ticks,
}

/// CPU time of all cores, in clock ticks: all of it, and the idle part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    pub total: u64,
    pub idle: u64,
}

impl SpareCpu {
    /// Once a window has passed, to the first thread that asks: whether at
    /// least half a core was idle over it. `None` to every other caller, and
    /// for the first window. A machine whose `/proc/stat` cannot be read
    /// always has CPU to spare: the signatures' wait times decide alone.
    pub fn verdict(&self) -> Option<bool> {
        // Another thread is taking this window's verdict.
        let mut last = try_lock(&self.last)?;
        let now = Instant::now();
        if last.is_some_and(|reading| now.duration_since(reading.at) < WINDOW) {
            return None;
        }
        let Some(ticks) = read_ticks() else {
            return Some(true);
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let before = last.replace(Reading { at: now, ticks })?;
        Some(spare_cores(before.ticks, ticks, cores) >= SPARE_CORES)
    }
}

/// Idle cores, on average, between two readings.
pub fn spare_cores(before: Ticks, after: Ticks, cores: usize) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let idle = after.idle.saturating_sub(before.idle);
    idle as f64 / total as f64 * cores as f64
}

fn read_ticks() -> Option<Ticks> {
    parse_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The first (`cpu`) line of `/proc/stat`: user nice system idle iowait irq
/// softirq steal; idle and iowait are idle.
pub fn parse_ticks(stat: &str) -> Option<Ticks> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let idle = fields.get(3)? + fields.get(4)?;
    Some(Ticks {
        total: fields.iter().sum(),
        idle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_gives_total_and_idle_ticks() {
        let stat = "cpu  656850 0 198107 336135 7391 0 1626 1612 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let ticks = parse_ticks(stat).unwrap();
        assert_eq!(ticks.idle, 336135 + 7391);
        assert_eq!(ticks.total, 656850 + 198107 + 336135 + 7391 + 1626 + 1612);
        assert_eq!(parse_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn idle_share_becomes_idle_cores() {
        let before = Ticks {
            total: 1000,
            idle: 500,
        };
        let busy = Ticks {
            total: 1200,
            idle: 510,
        };
        assert!(
            spare_cores(before, busy, 2) < SPARE_CORES,
            "5 % of two cores idle"
        );
        let quiet = Ticks {
            total: 1200,
            idle: 650,
        };
        assert_eq!(spare_cores(before, quiet, 2), 1.5);
        assert_eq!(spare_cores(before, before, 2), 0.0, "no time passed");
    }
}
