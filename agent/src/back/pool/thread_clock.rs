//! This thread's CPU time and involuntary context switches, read around a
//! signature (two system calls each way, about a microsecond in all).

use std::time::Duration;

/// A reading of the calling thread's clocks.
#[derive(Debug, Clone, Copy)]
pub struct ThreadClock {
    cpu: Duration,
    preemptions: i64,
}

impl ThreadClock {
    /// The calling thread's clocks now.
    pub fn now() -> ThreadClock {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both calls write into locals of the right type; they
        // cannot fail for the calling thread, and a zero reading is harmless.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe {
            libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time);
            libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        }
        ThreadClock {
            cpu: Duration::new(time.tv_sec as u64, time.tv_nsec as u32),
            preemptions: usage.ru_nivcsw,
        }
    }

    /// CPU time used since `self`, and whether the thread was preempted
    /// meanwhile (time off the CPU waiting for a core).
    pub fn since(&self) -> (Duration, bool) {
        let now = ThreadClock::now();
        (
            now.cpu.saturating_sub(self.cpu),
            now.preemptions > self.preemptions,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_costs_no_cpu_and_work_does() {
        let start = ThreadClock::now();
        std::thread::sleep(Duration::from_millis(20));
        let (slept, _) = start.since();
        assert!(slept < Duration::from_millis(10), "{slept:?}");
        let start = ThreadClock::now();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let (worked, _) = start.since();
        assert!(worked > Duration::ZERO, "{worked:?} for {x}");
    }
}
