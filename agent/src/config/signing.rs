//! `[signing]`: the signing threads and their sessions, their queue, and
//! how long a signature may take.

use std::time::Duration;

use serde::Deserialize;

/// The most sessions `max_sessions` may ask for: far beyond what any HSM
/// serves one client at once (Thales advises about 30 per Luna).
const MAX_SESSIONS: usize = 1024;

/// The longest `timeout_seconds`: beyond five minutes a client has long
/// given up, and a hung HSM would go unnoticed as long.
const MAX_TIMEOUT_SECONDS: u64 = 300;

/// The `[signing]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Signing threads kept open, each with its own session [default: number
    /// of cores]: what CPU-bound signing needs. Capped so that they fit the
    /// token's session limit.
    pub threads: Option<usize>,
    /// The most signing sessions (and threads) at once, used while
    /// signatures mostly wait on the HSM; also capped by the token's limit.
    pub max_sessions: usize,
    /// Signatures that may wait for a thread, per `threads` sessions (the
    /// queue grows with the pool); more are refused as overloaded.
    pub queue_size: usize,
    /// How long a request waits for its signature before it is answered
    /// 503; also how long the HSM may leave a call unanswered before the
    /// agent counts it as not answering.
    pub timeout_seconds: u64,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            threads: None,
            max_sessions: 32,
            queue_size: 256,
            timeout_seconds: 10,
        }
    }
}

impl SigningConfig {
    /// The configured thread count, else the number of cores (at most
    /// `max_sessions`).
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
                .min(self.max_sessions)
        })
    }

    /// [`SigningConfig::timeout_seconds`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(threads) = self.threads {
            if !(1..=256).contains(&threads) {
                return Err(format!(
                    "`signing.threads` = {threads} must be between 1 and 256; leave it out to use one thread per core"
                ));
            }
        }
        if !(1..=MAX_SESSIONS).contains(&self.max_sessions) {
            return Err(format!(
                "`signing.max_sessions` = {} must be between 1 and {MAX_SESSIONS} (the most signing sessions at once; default 32)",
                self.max_sessions
            ));
        }
        if let Some(threads) = self.threads.filter(|threads| *threads > self.max_sessions) {
            return Err(format!(
                "`signing.threads` = {threads} is more than `signing.max_sessions` = {}; raise `signing.max_sessions` or lower `signing.threads`",
                self.max_sessions
            ));
        }
        if self.queue_size == 0 {
            return Err(
                "`signing.queue_size` = 0 must be at least 1 (signatures that may wait for a thread)"
                    .into(),
            );
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout_seconds) {
            return Err(format!(
                "`signing.timeout_seconds` = {} must be between 1 and {MAX_TIMEOUT_SECONDS} (how long a request waits for the HSM's signature; default 10)",
                self.timeout_seconds
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing(text: &str) -> Result<SigningConfig, String> {
        let config: SigningConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    /// `key = value` is refused, naming the key and the range `between`.
    fn refused(key: &str, value: u64, between: &str) {
        let err = signing(&format!("{key} = {value}")).unwrap_err();
        assert!(err.contains(&format!("`signing.{key}` = {value}")), "{err}");
        assert!(err.contains(between), "{err}");
    }

    #[test]
    fn a_signature_may_take_ten_seconds_by_default() {
        assert_eq!(signing("").unwrap().timeout(), Duration::from_secs(10));
        assert_eq!(
            signing("timeout_seconds = 300").unwrap().timeout_seconds,
            300
        );
    }

    #[test]
    fn sessions_beyond_the_cores_are_allowed_up_to_32_by_default() {
        let default = signing("").unwrap();
        assert_eq!(default.max_sessions, 32);
        assert!(default.threads() <= 32);
        let small = signing("max_sessions = 1").unwrap();
        assert_eq!(small.threads(), 1, "the cores, capped by max_sessions");
    }

    #[test]
    fn values_out_of_range_are_refused_by_name() {
        refused("max_sessions", 0, "between 1 and 1024");
        refused("max_sessions", 1025, "between 1 and 1024");
        refused("timeout_seconds", 0, "between 1 and 300");
        refused("timeout_seconds", 301, "between 1 and 300");
    }

    #[test]
    fn more_threads_than_max_sessions_is_refused_naming_both() {
        let err = signing("threads = 8\nmax_sessions = 4").unwrap_err();
        assert!(err.contains("`signing.threads` = 8"), "{err}");
        assert!(err.contains("`signing.max_sessions` = 4"), "{err}");
    }
}
