//! Waiting without using CPU: sleeps, never spins.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How often a hang looks whether its file is gone.
const HANG_POLL: Duration = Duration::from_millis(10);

/// Sleeps `delay` plus up to `jitter`; nothing when both are zero.
pub fn sleep(delay: Duration, jitter: Duration) {
    let extra = match jitter.as_nanos() as u64 {
        0 => 0,
        range => random() % (range + 1),
    };
    let total = delay + Duration::from_nanos(extra);
    if !total.is_zero() {
        std::thread::sleep(total);
    }
}

/// Returns once `file` does not exist.
pub fn while_exists(file: &Path) {
    while file.exists() {
        std::thread::sleep(HANG_POLL);
    }
}

/// xorshift64*, one state per thread: jitter needs spread, not quality.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    // The address of a local differs per thread; never zero, as xorshift needs.
    (nanos ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}
