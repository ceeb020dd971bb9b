//! `[signing]`: the signing threads and their queue.

use serde::Deserialize;

/// The `[signing]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Signing threads, each with its own session [default: number of cores];
    /// capped so that they fit the token's session limit.
    pub threads: Option<usize>,
    /// Signatures that may wait for a thread; more are refused as overloaded.
    pub queue_size: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            threads: None,
            queue_size: 256,
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
        Ok(())
    }
}
