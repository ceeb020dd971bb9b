//! `[hsm]`: which PKCS#11 token holds the keys, how to log in, and the
//! environment the module's vendor client library reads.

use std::collections::BTreeMap;
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
    /// Variables set in the agent's own environment before the module is
    /// loaded, for client libraries configured that way (p11-kit's
    /// `P11_KIT_SERVER_ADDRESS`, a vendor's configuration file path).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
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
            _ => self.environment.iter().try_for_each(|(name, value)| {
                check_variable(name, value)
                    .map_err(|why| format!("`hsm.environment` {name:?}: {why}"))
            }),
        }
    }
}

/// Why `name = value` cannot be handed to the module, if it cannot.
fn check_variable(name: &str, value: &str) -> Result<(), String> {
    const OWN: [&str; 5] = [
        "ACCESS_TOKEN_AGENT_",
        "NOTIFY_SOCKET",
        "LISTEN_",
        "WATCHDOG_",
        "CREDENTIALS_DIRECTORY",
    ];
    if name.is_empty() {
        Err("an empty name names no variable; write NAME = \"value\"".into())
    } else if name.contains('=') {
        Err("a name cannot contain '=': the environment holds NAME=value, so the rest would become part of the value; remove the '='".into())
    } else if name.contains('\0') || value.contains('\0') {
        Err("contains a NUL byte, which ends a C string: the module would see another name or value than the one written; remove it".into())
    } else if name.starts_with("LD_") {
        Err("the dynamic loader reads LD_ variables only when a program starts, so setting one here changes nothing; set it with the unit's Environment= instead".into())
    } else if OWN.iter().any(|own| name.starts_with(own)) {
        Err("the agent itself, or systemd talking to it, uses this variable; it is not the module's to change".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_variables_pass() {
        for (name, value) in [
            ("P11_KIT_SERVER_ADDRESS", "unix:path=/run/p11-kit/pkcs11"),
            ("ChrystokiConfigurationPath", "/etc/luna"),
            ("SOFTHSM2_CONF", ""),
        ] {
            assert_eq!(check_variable(name, value), Ok(()), "{name}");
        }
    }

    #[test]
    fn unsafe_or_meaningless_names_are_refused_with_the_reason() {
        for (name, value, why) in [
            ("", "x", "an empty name"),
            ("A=B", "x", "cannot contain '='"),
            ("A\0B", "x", "NUL byte"),
            ("A", "x\0y", "NUL byte"),
            ("LD_PRELOAD", "/tmp/x.so", "only when a program starts"),
            ("NOTIFY_SOCKET", "/tmp/n", "the agent itself"),
            ("ACCESS_TOKEN_AGENT_LOG", "debug", "the agent itself"),
        ] {
            let message = check_variable(name, value).unwrap_err();
            assert!(message.contains(why), "{name:?}: {message}");
        }
    }
}
