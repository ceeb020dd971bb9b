//! `[certificate]`: how early the agent warns that a certificate expires.

use serde::Deserialize;

/// The longest warning window accepted, in days (ten years, the longest
/// validity `keys generate` gives).
const MAX_WARNING_DAYS: i64 = 3650;

/// The `[certificate]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateConfig {
    /// Days before an active certificate's notAfter from which `keys list`,
    /// `/readyz` and `/metrics` warn that it expires.
    pub expiry_warning_days: i64,
}

impl Default for CertificateConfig {
    fn default() -> Self {
        CertificateConfig {
            expiry_warning_days: 30,
        }
    }
}

impl CertificateConfig {
    /// The warning window in seconds.
    pub fn expiry_warning_seconds(&self) -> i64 {
        self.expiry_warning_days * 86_400
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let days = self.expiry_warning_days;
        if !(1..=MAX_WARNING_DAYS).contains(&days) {
            return Err(format!(
                "`certificate.expiry_warning_days` = {days} must be from 1 to {MAX_WARNING_DAYS}: the days before a certificate expires from which the agent warns (default 30)"
            ));
        }
        Ok(())
    }
}
