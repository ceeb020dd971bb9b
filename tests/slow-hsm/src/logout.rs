//! A login the HSM loses: when `SLOW_HSM_LOGOUT_FILE` appears, the token
//! forgets the application's login, as a network HSM does when its
//! appliance restarts or fails over behind the same address. Every
//! signature then answers CKR_USER_NOT_LOGGED_IN, on the sessions open at
//! that moment and on any opened before the next successful C_Login, which
//! (login being the application's, not a session's) makes every session
//! work again. The file is looked for at each signature and each new
//! session, and removed, so that each appearance is one logout.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::settings::Settings;

/// Whether the token has forgotten the login since the file last appeared.
static LOGGED_OUT: AtomicBool = AtomicBool::new(false);

/// Forgets the login if the logout file has appeared, and removes it.
pub fn check(settings: &Settings) {
    if let Some(file) = &settings.logout_file {
        if std::fs::remove_file(file).is_ok() {
            LOGGED_OUT.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether a signature must answer CKR_USER_NOT_LOGGED_IN (after looking
/// for the logout file).
pub fn is_logged_out(settings: &Settings) -> bool {
    if settings.logout_file.is_none() {
        return false;
    }
    check(settings);
    LOGGED_OUT.load(Ordering::SeqCst)
}

/// A C_Login succeeded: every session is logged in again.
pub fn logged_in() {
    LOGGED_OUT.store(false, Ordering::SeqCst);
}
