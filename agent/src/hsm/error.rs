//! PKCS#11 failures turned into messages a person can act on.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

use crate::exit;

/// What went wrong talking to the HSM, with the fix in the message.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {path} ({reason}); check `hsm.module` and that the module's package is installed")]
    ModuleLoad { path: PathBuf, reason: String },
    #[error("no token labelled {label:?} in the PKCS#11 module (tokens seen: {seen}); check `hsm.token_label`, or create the token (softhsm2-util --init-token --free --label {label})")]
    TokenNotFound { label: String, seen: String },
    #[error("more than one token is labelled {label:?} ({tokens}); the agent logs in to none of them, so that the PIN is never tried on the wrong one: give each token a unique label and set `hsm.token_label` to it, or, if one is a proxy of the other (p11-kit), set `hsm.module` to the module that lists the HSM once")]
    AmbiguousToken { label: String, tokens: String },
    #[error("the token refused the PIN (CKR_PIN_INCORRECT); one attempt was made and no retry will be, so the retry counter is not burnt; fix the PIN file and start again")]
    WrongPin,
    #[error("the token's user PIN is locked (CKR_PIN_LOCKED); a security officer must unlock it (softhsm2-util or the HSM's own tool) before the agent can log in")]
    PinLocked,
    #[error("no key for issuer {issuer:?}{kid} on the token{why}; enrol one with `access-token-agent keys import` or `keys generate` (a session that is not logged in also sees no private keys)")]
    KeyNotFound {
        issuer: String,
        kid: String,
        /// What is wrong with the issuer's objects, when anything is.
        why: String,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{operation} failed: {rv}")]
    Pkcs11 { operation: String, rv: Ckr },
}

/// A PKCS#11 return value with its CKR_ name, for messages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ckr(pub RvError);

impl Ckr {
    /// `CKR_PIN_INCORRECT`-style name, a stable metric label.
    pub fn name(self) -> String {
        let debug = format!("{:?}", self.0);
        let mut name = String::from("CKR");
        for c in debug.chars() {
            if c.is_ascii_uppercase() {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }
}

impl std::fmt::Display for Ckr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl HsmError {
    /// Wraps a cryptoki error from `operation` (e.g. "C_Sign").
    pub fn from_cryptoki(operation: &str, error: CkError) -> HsmError {
        match error {
            CkError::Pkcs11(RvError::PinIncorrect, _) => HsmError::WrongPin,
            CkError::Pkcs11(RvError::PinLocked, _) => HsmError::PinLocked,
            CkError::Pkcs11(rv, _) => HsmError::Pkcs11 {
                operation: operation.to_owned(),
                rv: Ckr(rv),
            },
            other => HsmError::Invalid {
                what: operation.to_owned(),
                reason: other.to_string(),
            },
        }
    }

    /// The PKCS#11 return value behind this error, if there is one.
    pub fn ckr(&self) -> Option<Ckr> {
        match self {
            HsmError::WrongPin => Some(Ckr(RvError::PinIncorrect)),
            HsmError::PinLocked => Some(Ckr(RvError::PinLocked)),
            HsmError::Pkcs11 { rv, .. } => Some(*rv),
            _ => None,
        }
    }

    /// Whether reopening sessions and logging in again may cure this error:
    /// the token went away, the session died, or the login was lost.
    pub fn is_connection_fault(&self) -> bool {
        matches!(
            self.ckr().map(|c| c.0),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceError
                    | RvError::DeviceRemoved
                    | RvError::DeviceMemory
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::UserNotLoggedIn
                    | RvError::KeyHandleInvalid
                    | RvError::ObjectHandleInvalid
                    | RvError::GeneralError
                    | RvError::CryptokiNotInitialized
            )
        ) || matches!(self, HsmError::TokenNotFound { .. })
    }

    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            HsmError::WrongPin => exit::WRONG_PIN,
            // Restarting cannot tell the tokens apart.
            HsmError::AmbiguousToken { .. } => exit::CONFIG,
            HsmError::PinLocked => exit::PIN_LOCKED,
            HsmError::ModuleLoad { .. }
            | HsmError::TokenNotFound { .. }
            | HsmError::KeyNotFound { .. } => exit::UNAVAILABLE,
            HsmError::Invalid { .. } | HsmError::Pkcs11 { .. } => exit::FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names_follow_the_pkcs11_spelling() {
        assert_eq!(Ckr(RvError::PinIncorrect).name(), "CKR_PIN_INCORRECT");
        assert_eq!(
            Ckr(RvError::SessionHandleInvalid).name(),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}
