//! `[hsm]`: which PKCS#11 token holds the keys, and how to log in.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[hsm]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// The token is found by label because slot ids change when tokens are added.
    pub token_label: String,
    /// File holding the user PIN; a trailing newline is ignored.
    pub pin_file: Option<PathBuf>,
    /// Name of a systemd credential (`LoadCredential=`) holding the PIN.
    pub pin_credential: Option<String>,
}

impl HsmConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.token_label.trim().is_empty() {
            return Err("`hsm.token_label` is empty; set it to the label the token was initialised with (softhsm2-util --show-slots lists them)".into());
        }
        match (&self.pin_file, &self.pin_credential) {
            (None, None) => Err("`[hsm]` has neither `pin_file` nor `pin_credential`; set one so the agent can log in to the token".into()),
            (Some(_), Some(_)) => Err("`[hsm]` sets both `pin_file` and `pin_credential`; keep one of them".into()),
            (Some(file), None) if !file.is_file() => Err(format!(
                "`hsm.pin_file` = {}: no such file; create it with the user PIN (mode 0600) or fix the path",
                file.display()
            )),
            (None, Some(name)) if name.is_empty() || name.contains('/') => Err(format!(
                "`hsm.pin_credential` = {name:?} is not a credential name; use the name given to LoadCredential= (no slashes)"
            )),
            _ if !self.module.is_file() => Err(format!(
                "`hsm.module` = {}: no such file; install the PKCS#11 module (for SoftHSM: apt-get install softhsm2) or fix the path",
                self.module.display()
            )),
            _ => Ok(()),
        }
    }
}
