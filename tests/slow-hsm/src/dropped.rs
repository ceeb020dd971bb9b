//! Sessions dropped by the HSM: when `SLOW_HSM_DROP_FILE` appears, every
//! session open at that moment is dropped. The module's own sessions are
//! remembered as they open and close, and the file is looked for at each
//! signature and each new session.

use std::collections::HashSet;
use std::sync::Mutex;

use cryptoki_sys::{CKR_OK, CK_RV, CK_SESSION_HANDLE, CK_SESSION_HANDLE_PTR};

use crate::settings::Settings;

struct Sessions {
    open: HashSet<CK_SESSION_HANDLE>,
    dropped: HashSet<CK_SESSION_HANDLE>,
}

static SESSIONS: Mutex<Option<Sessions>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Sessions) -> T) -> T {
    let mut sessions = SESSIONS.lock().unwrap_or_else(|p| p.into_inner());
    f(sessions.get_or_insert_with(|| Sessions {
        open: HashSet::new(),
        dropped: HashSet::new(),
    }))
}

/// Drops every open session if the drop file has appeared, and removes it.
pub fn check(settings: &Settings) {
    let Some(file) = &settings.drop_file else {
        return;
    };
    if std::fs::remove_file(file).is_ok() {
        with(|sessions| {
            let open: Vec<_> = sessions.open.drain().collect();
            sessions.dropped.extend(open);
        });
    }
}

/// Whether `session` was dropped (after looking for the drop file).
pub fn is_dropped(settings: &Settings, session: CK_SESSION_HANDLE) -> bool {
    if settings.drop_file.is_none() {
        return false;
    }
    check(settings);
    with(|sessions| sessions.dropped.contains(&session))
}

/// Remembers a session C_OpenSession answered `rv` for.
///
/// # Safety
/// `session` must be null or point to the handle C_OpenSession wrote.
pub unsafe fn opened(rv: CK_RV, session: CK_SESSION_HANDLE_PTR) {
    if rv == CKR_OK && !session.is_null() {
        let handle = *session;
        with(|sessions| {
            sessions.dropped.remove(&handle);
            sessions.open.insert(handle);
        });
    }
}

/// Forgets every session (C_CloseAllSessions, C_Finalize).
pub fn forget_all() {
    with(|sessions| {
        sessions.open.clear();
        sessions.dropped.clear();
    });
}

/// Forgets a session being closed.
pub fn closed(session: CK_SESSION_HANDLE) {
    with(|sessions| {
        sessions.open.remove(&session);
        sessions.dropped.remove(&session);
    });
}
