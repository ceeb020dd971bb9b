//! How many signing sessions the HSM in use needs.
//!
//! SoftHSM signs in the agent's own process: a signature is CPU work, and
//! more sessions than cores only make them contend. A network HSM is the
//! other way round: a signature is a millisecond or more of waiting and
//! almost no local CPU, and the HSM signs dozens at once. Each signing
//! thread measures what its signatures cost: the wall time, and its own
//! CPU time (`CLOCK_THREAD_CPUTIME_ID`).
//!
//! Time off the CPU is either waiting for the HSM or, on a busy machine,
//! waiting for a core, and only the first is worth another session. The
//! kernel does not tell them apart per thread (its scheduler statistics
//! are often compiled out), but they differ in shape: the HSM's wait is
//! there in every signature, a core's only in those that found every core
//! taken. So the wait is taken from the lower edge of the samples
//! ([`floor`]), and a signature during which the thread was preempted is
//! left out altogether. (A mean, tried first, took the waits for a core
//! for the HSM's: RSA behind 2 ms grew to 32 sessions that then contended
//! for two cores.)
//!
//! The rule: while signatures wait less than they compute, the pool keeps
//! `threads` sessions (the cores). Beyond that it may grow to
//! `threads × (wall / CPU)`, enough signatures in flight to keep as many
//! cores busy as a CPU-bound HSM would, never past `max_sessions` and the
//! token's own limit, and never once its own signatures keep the cores
//! busy ([`Sizing::fills_the_cores`]). It grows only while jobs queue. A
//! session beyond the rule's count by more than an eighth ([`kept`]) leaves
//! after its signature, and sessions idle for [`IDLE_CLOSE`] close again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How long a session beyond `threads` may stay idle before it closes.
pub const IDLE_CLOSE: Duration = Duration::from_secs(5);

/// The pool's measured signing costs and its bounds.
#[derive(Debug)]
pub struct Sizing {
    /// Sessions kept open whatever the load: `signing.threads`.
    base: usize,
    /// The most sessions: `signing.max_sessions` within the token's limit,
    /// lowered should the token refuse a session.
    cap: AtomicUsize,
    /// Over recent signatures, in nanoseconds: the lower edge of the time
    /// off the CPU (not preempted), and the mean CPU time.
    waiting: AtomicU64,
    cpu: AtomicU64,
    /// The cores this process may use, read once: the standard library
    /// reads cgroup files for it on every call (a dozen system calls).
    cores: f64,
}

impl Sizing {
    pub fn new(base: usize, cap: usize) -> Sizing {
        Sizing {
            base,
            cap: AtomicUsize::new(cap.max(base)),
            waiting: AtomicU64::new(0),
            cpu: AtomicU64::new(0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        }
    }

    pub fn base(&self) -> usize {
        self.base
    }

    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed)
    }

    /// One signature took `wall`, of which `cpu` on this thread's CPU; a
    /// `preempted` one says nothing about the HSM and is left out.
    pub fn record(&self, wall: Duration, cpu: Duration, preempted: bool) {
        if preempted {
            return;
        }
        let waiting = wall.saturating_sub(cpu).as_nanos() as u64;
        floor(&self.waiting, waiting);
        average(&self.cpu, cpu.as_nanos() as u64);
    }

    /// How many sessions signing needs now: [`sessions_for`] the estimates.
    pub fn target(&self) -> usize {
        sessions_for(
            self.base,
            self.cap(),
            self.waiting.load(Ordering::Relaxed),
            self.cpu.load(Ordering::Relaxed),
        )
    }

    /// Whether `workers` signing threads, at the measured costs, keep every
    /// core busy with their own signatures: more could only wait for a
    /// core. (The rule's count says the same when `threads` is the cores.)
    pub fn fills_the_cores(&self, workers: usize) -> bool {
        let cpu = self.cpu.load(Ordering::Relaxed) as f64;
        let wall = cpu + self.waiting.load(Ordering::Relaxed) as f64;
        wall > 0.0 && workers as f64 * cpu / wall >= self.cores
    }

    /// The estimates, in microseconds: waiting and CPU time per signature.
    pub fn estimates_micros(&self) -> (u64, u64) {
        (
            self.waiting.load(Ordering::Relaxed) / 1_000,
            self.cpu.load(Ordering::Relaxed) / 1_000,
        )
    }

    /// The token refused a session with `open` sessions in use: it stays
    /// at that.
    pub fn limit_to(&self, open: usize) {
        self.cap.fetch_min(open.max(self.base), Ordering::Relaxed);
    }
}

/// The rule: `base` while signatures wait less than they compute, else
/// `base × (waiting + cpu) / cpu`, within `base..=cap`.
pub fn sessions_for(base: usize, cap: usize, waiting: u64, cpu: u64) -> usize {
    if cpu == 0 || waiting < cpu {
        return base;
    }
    let wanted = (base as u64).saturating_mul(waiting + cpu).div_ceil(cpu);
    usize::try_from(wanted)
        .unwrap_or(usize::MAX)
        .clamp(base, cap.max(base))
}

/// How many threads the pool keeps when its target is `target`: an eighth
/// more, at least one. The target moves with its estimates by a session or
/// two from one signature to the next; leaving at once above it closed and
/// reopened hundreds of sessions a second.
pub fn kept(target: usize) -> usize {
    target + (target / 8).max(1)
}

/// Follows the lower edge of the waits: half the way down to a lower
/// sample, 1/32 of the way up to a higher one. It settles near the few
/// lowest samples of the last hundred or so, and follows an HSM that slows
/// down within a few hundred signatures.
fn floor(floor: &AtomicU64, sample: u64) {
    follow(floor, sample, 2, 32);
}

/// Moves `average` 1/64 of the way to `sample`: a change shows within a
/// few hundred signatures. Contended signatures' CPU time varies by half
/// from one to the next, and at 1/8 the pool's target swung with it.
fn average(average: &AtomicU64, sample: u64) {
    follow(average, sample, 64, 64);
}

/// Moves `estimate` towards `sample`: 1/`down` of the way to a lower one,
/// 1/`up` to a higher one; the first sample is taken as it is.
fn follow(estimate: &AtomicU64, sample: u64, down: u64, up: u64) {
    let old = estimate.load(Ordering::Relaxed);
    let new = match old {
        0 => sample,
        _ if sample < old => old - (old - sample) / down,
        _ => old + (sample - old) / up,
    };
    // Racing threads may overwrite each other's sample: an estimate loses
    // nothing by it.
    estimate.store(new.max(1), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICRO: u64 = 1_000;

    #[test]
    fn cpu_bound_signatures_keep_the_cores() {
        // SoftHSM: P-256 and RSA-2048, a little waiting on its own locks.
        assert_eq!(sessions_for(2, 32, 10 * MICRO, 45 * MICRO), 2);
        assert_eq!(sessions_for(2, 32, 90 * MICRO, 570 * MICRO), 2);
        assert_eq!(sessions_for(2, 32, 0, 0), 2, "nothing measured yet");
    }

    #[test]
    fn waiting_signatures_get_enough_sessions_to_keep_the_cores_busy() {
        // RSA-2048 behind 2 ms of network: 2 × 2.57 / 0.57, rounded up.
        assert_eq!(sessions_for(2, 32, 2_000 * MICRO, 570 * MICRO), 10);
        // P-256 behind 2 ms: far more than the cap allows.
        assert_eq!(sessions_for(2, 32, 2_000 * MICRO, 45 * MICRO), 32);
        assert_eq!(sessions_for(2, 6, 2_000 * MICRO, 45 * MICRO), 6);
    }

    #[test]
    fn a_cap_below_the_cores_never_takes_the_base_away() {
        assert_eq!(sessions_for(4, 2, 2_000 * MICRO, 45 * MICRO), 4);
        let sizing = Sizing::new(2, 32);
        sizing.limit_to(1);
        assert_eq!(sizing.cap(), 2);
    }

    #[test]
    fn preempted_signatures_are_left_out() {
        let sizing = Sizing::new(2, 32);
        let ms = Duration::from_millis;
        sizing.record(ms(20), ms(1), true);
        assert_eq!(
            sizing.target(),
            2,
            "a preempted signature waited for a core"
        );
        for _ in 0..8 {
            sizing.record(ms(3), ms(1), false);
        }
        assert_eq!(sizing.target(), 6, "2 × (2 + 1) / 1");
    }

    #[test]
    fn waits_for_a_core_on_top_of_the_hsms_do_not_count() {
        // RSA behind 2 ms, 0.8 ms of CPU; three signatures in ten find a
        // core free, the others also wait up to 6 ms (3 on average) for one.
        let sizing = Sizing::new(2, 32);
        let us = Duration::from_micros;
        for i in 0..400u64 {
            let for_a_core = if i % 10 < 3 { 0 } else { (i * 337) % 6_000 };
            sizing.record(us(2_800 + for_a_core), us(800), false);
        }
        let (waiting, _) = sizing.estimates_micros();
        assert!((2_000..2_500).contains(&waiting), "{waiting} µs");
        // 2 × 2.8 / 0.8 is 7; the mean wait (4 ms) would have made it 13.
        assert!((7..=8).contains(&sizing.target()), "{}", sizing.target());
    }

    #[test]
    fn an_hsm_that_slows_down_is_followed() {
        let sizing = Sizing::new(2, 32);
        let us = Duration::from_micros;
        for _ in 0..100 {
            sizing.record(us(1_050), us(50), false);
        }
        for _ in 0..300 {
            sizing.record(us(5_050), us(50), false);
        }
        let (waiting, _) = sizing.estimates_micros();
        assert!(waiting > 4_500, "{waiting} µs");
    }

    #[test]
    fn a_target_that_wobbles_keeps_its_sessions() {
        assert_eq!(kept(2), 3);
        assert_eq!(kept(15), 16);
        assert_eq!(kept(32), 36);
    }

    #[test]
    fn the_pool_stops_where_its_own_signatures_fill_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let sizing = Sizing::new(1, 1024);
        // Each signature 1 ms of CPU in 4 ms: four threads fill one core.
        sizing.record(Duration::from_millis(4), Duration::from_millis(1), false);
        assert!(!sizing.fills_the_cores(1) || cores == 1);
        assert!(sizing.fills_the_cores(4 * cores));
    }
}
