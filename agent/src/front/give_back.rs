//! Memory given back to the system after many connections closed.
//!
//! glibc keeps what the agent frees for its next allocations, and returns
//! to the system only free memory at the top of a heap: after thousands of
//! connections closed, most of what they held stayed resident among the
//! few allocations that live on. So once the open connections have fallen
//! to half of their peak, and that peak was at least [`MIN_PEAK`], the
//! agent asks glibc to give back every free page (`malloc_trim`), which
//! takes it a few milliseconds on a blocking thread.

use std::time::Duration;

use super::admission::Occupancy;

/// How often the open connections are compared with their peak.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The fewest connections whose closing is worth a trim: a few MiB of
/// hyper's buffers, had they all been busy at once.
const MIN_PEAK: usize = 256;

/// Checks every [`CHECK_INTERVAL`], for as long as the agent serves.
pub(super) async fn after_closes(occupancy: Occupancy) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    loop {
        ticks.tick().await;
        if is_due(occupancy.peak(), occupancy.open()) {
            occupancy.reset_peak();
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

fn is_due(peak: usize, open: usize) -> bool {
    peak >= MIN_PEAK && open <= peak / 2
}

/// Gives the free pages of every arena back to the system.
#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and may run beside allocations.
    unsafe { libc::malloc_trim(0) };
}

/// Other C libraries' allocators give memory back by themselves, or not at all.
#[cfg(not(target_env = "gnu"))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_half_of_a_large_peak_closed() {
        assert!(is_due(10_000, 5_000));
        assert!(is_due(10_000, 0));
        assert!(!is_due(10_000, 5_001), "most are still open");
        assert!(!is_due(MIN_PEAK - 1, 0), "too few to matter");
    }
}
