//! `[signing]`: the signing threads, their queue, and how long a signature
//! may take.

use std::time::Duration;

use serde::Deserialize;

/// The longest `timeout_seconds`: beyond five minutes a client has long
/// given up, and a hung HSM would go unnoticed as long.
const MAX_TIMEOUT_SECONDS: u64 = 300;

/// The `[signing]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Signing threads, each with its own session [default: number of cores];
    /// capped so that they fit the token's session limit.
    pub threads: Option<usize>,
    /// Signatures that may wait for a thread; more are refused as overloaded.
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
            queue_size: 256,
            timeout_seconds: 10,
        }
    }
}

impl SigningConfig {
    /// The configured thread count, else the number of cores.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
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

    #[test]
    fn a_signature_may_take_ten_seconds_by_default() {
        assert_eq!(signing("").unwrap().timeout(), Duration::from_secs(10));
        assert_eq!(
            signing("timeout_seconds = 300").unwrap().timeout_seconds,
            300
        );
    }

    #[test]
    fn a_timeout_of_zero_or_over_five_minutes_is_refused_by_name() {
        for bad in [0, 301] {
            let err = signing(&format!("timeout_seconds = {bad}")).unwrap_err();
            assert!(
                err.contains(&format!("`signing.timeout_seconds` = {bad}")),
                "{err}"
            );
            assert!(err.contains("between 1 and 300"), "{err}");
        }
    }
}
