//! The PKCS#11 token: module loading (with its [`environment`]), finding
//! the token, login, sessions.
//!
//! Facts that shape this module (measured with SoftHSM 2.6):
//! - one `C_Initialize` per process, with OS locking, or threads crash the module;
//! - slot ids move when tokens are created, so the token is found by label;
//! - one login covers every session of the process, but closing the last
//!   session logs out, so [`Hsm`] keeps one session open for its lifetime;
//! - a session is not `Sync`: each signing thread opens its own;
//! - C_Login rewrites SoftHSM's `token.object` in place, and a process ended
//!   in that instant loses the whole token, so logins hold termination
//!   signals ([`held_signals`]).
//!
//! | module | what it is |
//! |---|---|
//! | [`environment`] | `[hsm] environment`: variables for the module's client library |
//! | [`pin`] | the user PIN, from a file or a systemd credential, zeroized |
//! | [`error`] | PKCS#11 failures as messages a person can act on |
//! | [`held_signals`] | termination signals held while the token's storage is written |
//! | [`key_pairs`] | the key pairs on the token, judged, and the active one per issuer |
//! | [`shared_key`] | several certificates for one key (renewed, CA-issued) |
//! | [`sign`] | a signature in its JWS form |
//! | [`enrol`] | import, generation, renewal, CSRs, attaching and deleting certificates |

pub mod enrol;
pub mod environment;
pub mod error;
pub mod held_signals;
pub mod key_pairs;
pub mod pin;
pub mod shared_key;
pub mod sign;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Limit, Slot};
use secrecy::SecretString;

pub use error::{Ckr, HsmError};

/// The loaded module, shared by the whole process.
static CONTEXT: Mutex<Option<(PathBuf, Pkcs11)>> = Mutex::new(None);

/// Whether an open session may change objects on the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Signing and reading: the daemon.
    ReadOnly,
    /// Enrolment and deletion: the operators' `keys` commands.
    ReadWrite,
}

/// One token, opened and (after [`Hsm::login`]) logged in.
pub struct Hsm {
    pkcs11: Pkcs11,
    slot: Slot,
    label: String,
    access: Access,
    /// Held open for the process's lifetime so that the login stays; also
    /// serves key look-ups and enrolment.
    anchor: Mutex<Session>,
}

impl Hsm {
    /// Loads `module` (once per process) and opens the token labelled `label`.
    pub fn open(module: &Path, label: &str, access: Access) -> Result<Hsm, HsmError> {
        let pkcs11 = context(module)?;
        let slot = find_token(&pkcs11, label)?;
        let anchor = open_session(&pkcs11, slot, access)?;
        Ok(Hsm {
            pkcs11,
            slot,
            label: label.to_owned(),
            access,
            anchor: Mutex::new(anchor),
        })
    }

    /// Logs in as the user with exactly one `C_Login`: a wrong PIN is never
    /// retried, so the token's retry counter is not burnt in a loop. The
    /// login may rewrite the token's own state, so termination signals wait
    /// until it is done ([`held_signals`]).
    pub fn login(&self, pin: &SecretString) -> Result<(), HsmError> {
        let _held = held_signals::HeldSignals::hold();
        match self.anchor().login(UserType::User, Some(pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(error) => Err(HsmError::from_cryptoki("C_Login", error)),
        }
    }

    /// A new session for one signing thread.
    pub fn open_session(&self) -> Result<Session, HsmError> {
        self.handle().open_session()
    }

    /// The long-lived session, for look-ups and enrolment.
    pub fn anchor(&self) -> MutexGuard<'_, Session> {
        crate::sync::lock(&self.anchor)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Asks the token for its info: a cheap call that fails once the token
    /// is gone (SoftHSM answers CKR_GENERAL_ERROR for a removed token while
    /// the old session still reports itself as logged in).
    pub fn probe(&self) -> Result<(), HsmError> {
        self.handle().probe()
    }

    /// The token for other threads: to probe it, or open sessions of their
    /// own, without the anchor session (and with the login it keeps).
    pub fn handle(&self) -> SlotHandle {
        SlotHandle {
            pkcs11: self.pkcs11.clone(),
            slot: self.slot,
            access: self.access,
        }
    }

    /// How many sessions the token allows at once, when it says so.
    pub fn max_sessions(&self) -> Result<Option<u64>, HsmError> {
        let info = self
            .pkcs11
            .get_token_info(self.slot)
            .map_err(|e| HsmError::from_cryptoki("C_GetTokenInfo", e))?;
        Ok(match info.max_session_count() {
            Limit::Max(count) => Some(count),
            Limit::Unavailable | Limit::Infinite => None,
        })
    }
}

/// The HSM's slot, for threads other than the anchor session's: see
/// [`Hsm::handle`]. Valid while its [`Hsm`] is.
#[derive(Clone)]
pub struct SlotHandle {
    pkcs11: Pkcs11,
    slot: Slot,
    access: Access,
}

impl SlotHandle {
    /// A new session, logged in as the anchor session is.
    pub fn open_session(&self) -> Result<Session, HsmError> {
        open_session(&self.pkcs11, self.slot, self.access)
    }

    /// Whether the token still answers: see [`Hsm::probe`].
    pub fn probe(&self) -> Result<(), HsmError> {
        self.pkcs11
            .get_token_info(self.slot)
            .map(drop)
            .map_err(|e| HsmError::from_cryptoki("C_GetTokenInfo", e))
    }
}

/// Finalizes and re-initialises the process-wide context, so that the module
/// looks for its tokens afresh. SoftHSM only sees a token that was removed
/// and restored (or deleted and re-created) after this; until then the old
/// slot answers CKR_GENERAL_ERROR and new sessions see no objects.
///
/// Every session and [`Hsm`] of the old context must be dropped first: after
/// re-initialisation the module hands out the same session handles again, and
/// a stale session closed later would close a new one.
pub fn reset() -> Result<(), HsmError> {
    let guard = crate::sync::lock(&CONTEXT);
    let Some((module, pkcs11)) = guard.as_ref() else {
        return Ok(());
    };
    let load_error = |reason: String| HsmError::ModuleLoad {
        path: module.clone(),
        reason,
    };
    match pkcs11.clone().finalize() {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
        Err(error) => return Err(HsmError::from_cryptoki("C_Finalize", error)),
    }
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| load_error(format!("C_Initialize: {e}")))
}

/// Finalizes the process-wide context at shutdown. Every session must be
/// dropped first.
pub fn finalize() -> Result<(), HsmError> {
    let mut guard = crate::sync::lock(&CONTEXT);
    match guard.take() {
        Some((_, pkcs11)) => pkcs11
            .finalize()
            .map_err(|e| HsmError::from_cryptoki("C_Finalize", e)),
        None => Ok(()),
    }
}

/// The process-wide context for `module`, initialised on first use.
fn context(module: &Path) -> Result<Pkcs11, HsmError> {
    let mut slot = crate::sync::lock(&CONTEXT);
    if let Some((loaded, pkcs11)) = slot.as_ref() {
        if loaded == module {
            return Ok(pkcs11.clone());
        }
        return Err(HsmError::Invalid {
            what: format!("loading {}", module.display()),
            reason: format!("this process already uses {}", loaded.display()),
        });
    }
    let load_error = |reason: String| HsmError::ModuleLoad {
        path: module.to_path_buf(),
        reason,
    };
    let pkcs11 = Pkcs11::new(module).map_err(|e| load_error(e.to_string()))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| load_error(format!("C_Initialize: {e}")))?;
    *slot = Some((module.to_path_buf(), pkcs11.clone()));
    Ok(pkcs11)
}

/// The slot of the one token labelled `label`. Two tokens with that label
/// are refused, naming both: the PIN would go to whichever the module lists
/// first, which may be another token (or a proxy of the same one) whose
/// retry counter it then burns.
fn find_token(pkcs11: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| HsmError::from_cryptoki("C_GetSlotList", e))?;
    let tokens: Vec<(Slot, SeenToken)> = slots
        .into_iter()
        .filter_map(|slot| {
            let info = pkcs11.get_token_info(slot).ok()?;
            Some((slot, SeenToken::new(slot, &info)))
        })
        .collect();
    let seen: Vec<SeenToken> = tokens.iter().map(|(_, token)| token.clone()).collect();
    let chosen = one_labelled(label, &seen)?;
    Ok(tokens[chosen].0)
}

/// What the module says about a token, enough to tell two apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenToken {
    slot: u64,
    label: String,
    initialized: bool,
    manufacturer: String,
    model: String,
    serial: String,
}

impl SeenToken {
    fn new(slot: Slot, info: &cryptoki::slot::TokenInfo) -> SeenToken {
        SeenToken {
            slot: slot.id(),
            label: info.label().trim_end().to_owned(),
            initialized: info.token_initialized(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
        }
    }
}

impl std::fmt::Display for SeenToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "slot {}: {} {}, serial {:?}",
            self.slot, self.manufacturer, self.model, self.serial
        )
    }
}

/// The index of the one token labelled `label` among `seen`.
fn one_labelled(label: &str, seen: &[SeenToken]) -> Result<usize, HsmError> {
    let matching: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].label == label)
        .collect();
    match matching[..] {
        [one] => Ok(one),
        [] => Err(HsmError::TokenNotFound {
            label: label.to_owned(),
            seen: labels_seen(seen),
        }),
        _ => Err(HsmError::AmbiguousToken {
            label: label.to_owned(),
            tokens: matching
                .iter()
                .map(|&i| seen[i].to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// The labels of the initialised tokens, for a label that matched none.
fn labels_seen(seen: &[SeenToken]) -> String {
    let labels: Vec<String> = seen
        .iter()
        .filter(|token| token.initialized)
        .map(|token| format!("{:?}", token.label))
        .collect();
    if labels.is_empty() {
        "none".into()
    } else {
        labels.join(", ")
    }
}

fn open_session(pkcs11: &Pkcs11, slot: Slot, access: Access) -> Result<Session, HsmError> {
    let session = match access {
        Access::ReadOnly => pkcs11.open_ro_session(slot),
        Access::ReadWrite => pkcs11.open_rw_session(slot),
    };
    session.map_err(|e| HsmError::from_cryptoki("C_OpenSession", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(slot: u64, label: &str, serial: &str) -> SeenToken {
        SeenToken {
            slot,
            label: label.into(),
            initialized: true,
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            serial: serial.into(),
        }
    }

    #[test]
    fn the_one_token_with_the_label_is_chosen_wherever_it_is_listed() {
        let seen = [token(7, "other", "a1"), token(3, "tokens", "b2")];
        assert_eq!(one_labelled("tokens", &seen).unwrap(), 1);
    }

    #[test]
    fn a_label_two_tokens_carry_is_refused_naming_both() {
        let seen = [
            token(7, "tokens", "a1"),
            token(8, "other", "c3"),
            token(3, "tokens", "b2"),
        ];
        let error = one_labelled("tokens", &seen).unwrap_err();
        assert_eq!(error.exit_code(), crate::exit::CONFIG);
        assert!(!error.is_connection_fault());
        let message = error.to_string();
        for named in [
            "slot 7",
            "serial \"a1\"",
            "slot 3",
            "serial \"b2\"",
            "unique label",
        ] {
            assert!(message.contains(named), "{named}: {message}");
        }
        assert!(!message.contains("c3"), "{message}");
    }

    #[test]
    fn a_missing_label_lists_the_labels_seen() {
        let error = one_labelled("tokens", &[token(1, "other", "a1")]).unwrap_err();
        assert!(
            error.to_string().contains("tokens seen: \"other\""),
            "{error}"
        );
    }
}
