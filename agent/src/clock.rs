//! The wall clock that token claims, certificate validity and the cache's
//! refresh points are read against.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, truncated as Altinn truncates them.
pub fn unix_now() -> i64 {
    since_epoch().as_secs() as i64
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    since_epoch().as_millis() as i64
}

/// A clock set before 1970 reads as the epoch itself.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
