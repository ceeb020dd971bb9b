//! The wall clock that token claims, certificate validity and the cache's
//! refresh points are read against.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds since the Unix epoch, truncated as Altinn truncates them.
pub fn unix_now() -> i64 {
    since_epoch().as_secs() as i64
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    since_epoch().as_millis() as i64
}

/// Unix seconds as RFC 3339 UTC, e.g. `2026-01-01T00:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// An instant as operators write it: RFC 3339 with any offset
/// (`2026-03-01T12:00:00Z`, `2026-03-01T13:00:00+01:00`), or Unix seconds.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("{text:?} is too many seconds"));
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|e| {
            format!(
                "{text:?} is neither RFC 3339 (e.g. 2026-03-01T12:00:00Z) nor Unix seconds ({e})"
            )
        })
}

/// A clock set before 1970 reads as the epoch itself.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn instants_are_read_as_rfc3339_or_unix_seconds() {
        assert_eq!(parse_instant("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        assert_eq!(
            parse_instant("2026-01-01T01:00:00+01:00"),
            Ok(1_767_225_600)
        );
        assert_eq!(parse_instant("1767225600"), Ok(1_767_225_600));
        for bad in ["", "2026-01-01", "tomorrow", "-5", "99999999999999999999"] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
    }
}
