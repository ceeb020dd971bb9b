//! `[audit]`: where audit lines go besides the log.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[audit]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A file the lines are appended to; created with mode 0640.
    pub file: Option<PathBuf>,
}
