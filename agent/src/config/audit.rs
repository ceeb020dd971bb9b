//! `[audit]`: where audit lines go besides the log.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[audit]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A file the lines are appended to; created with mode 0640.
    pub file: Option<PathBuf>,
    /// No token while the file cannot take lines (503 `audit-unavailable`).
    /// Off by default: a full disk, which any local user may cause on a
    /// shared file system, would otherwise stop every application; the
    /// failure shows on `/readyz` and `/metrics` either way.
    pub required: bool,
}

impl AuditConfig {
    /// `required` guards the file's lines: without a file it would guard
    /// nothing and read as a promise the agent cannot keep.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.required && self.file.is_none() {
            return Err(
                "`audit.required` = true needs `audit.file`: it refuses tokens while that file cannot take lines; name the file, or drop `required`"
                    .into(),
            );
        }
        Ok(())
    }
}
