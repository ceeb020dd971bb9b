//! One JSON audit line per issued or refused token request; never the token.

use serde::Deserialize;

/// `[audit]`: where audit lines go besides the log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub file: Option<std::path::PathBuf>,
}

/// The audit sink.
#[derive(Debug)]
pub struct Audit {
    config: AuditConfig,
}

impl Audit {
    pub fn open(config: &AuditConfig) -> std::io::Result<Audit> {
        Ok(Audit {
            config: config.clone(),
        })
    }
}
