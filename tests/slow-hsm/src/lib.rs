//! slow-hsm: a PKCS#11 module for tests and benchmarks only, in the manner
//! of OpenSC's pkcs11-spy. `C_GetFunctionList` loads the real module
//! (`SLOW_HSM_MODULE`, SoftHSM by default), copies its function list and
//! replaces the few entries below, so every other call goes straight to the
//! real token. What it adds comes from the environment ([`settings`]):
//!
//! | variable | effect |
//! |---|---|
//! | `SLOW_HSM_SIGN_DELAY_US` | each C_Sign that returns a signature waits this long first |
//! | `SLOW_HSM_SIGN_INIT_DELAY_US` | each C_SignInit waits this long first |
//! | `SLOW_HSM_JITTER_US` | each delay grows by up to this much, uniformly |
//! | `SLOW_HSM_MAX_SESSIONS` | `ulMaxSessionCount` in C_GetTokenInfo; C_OpenSession answers CKR_SESSION_COUNT beyond it |
//! | `SLOW_HSM_HANG_FILE` | while this file exists, the calls in `SLOW_HSM_HANG` block |
//! | `SLOW_HSM_HANG` | which calls hang: C_Sign (default), C_SignInit, C_GetTokenInfo, C_OpenSession, comma-separated |
//! | `SLOW_HSM_DROP_FILE` | when this file appears, every session open then is dropped: C_SignInit and C_Sign on it answer CKR_SESSION_HANDLE_INVALID; sessions opened later work (the module removes the file) |
//! | `SLOW_HSM_LOGOUT_FILE` | when this file appears, the token forgets the login: C_SignInit and C_Sign answer CKR_USER_NOT_LOGGED_IN on every session until the next C_Login succeeds (the module removes the file) |
//!
//! Every wait is a sleep, so a thread in a slow call uses no CPU, as one
//! waiting on a network HSM would. The session count is the module's, over
//! all slots: enough for one token.

mod dropped;
mod logout;
mod settings;
mod wait;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use cryptoki_sys::{
    CKR_ARGUMENTS_BAD, CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR, CKR_OK, CKR_SESSION_COUNT,
    CKR_SESSION_HANDLE_INVALID, CKR_USER_ALREADY_LOGGED_IN, CKR_USER_NOT_LOGGED_IN, CK_BYTE_PTR,
    CK_FLAGS, CK_FUNCTION_LIST, CK_FUNCTION_LIST_PTR_PTR, CK_MECHANISM_PTR, CK_NOTIFY,
    CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_SESSION_HANDLE_PTR, CK_SLOT_ID,
    CK_TOKEN_INFO_PTR, CK_ULONG, CK_ULONG_PTR, CK_USER_TYPE, CK_UTF8CHAR_PTR, CK_VOID_PTR,
};

use settings::{Call, Settings};

/// The real module's function list, this module's copy of it, and what the
/// environment asked for.
struct Module {
    real: CK_FUNCTION_LIST,
    table: CK_FUNCTION_LIST,
    settings: Settings,
}

static MODULE: OnceLock<Result<Module, String>> = OnceLock::new();

/// Sessions open now, counted only when `SLOW_HSM_MAX_SESSIONS` is set.
static OPEN_SESSIONS: AtomicU64 = AtomicU64::new(0);

/// The module's one exported entry point.
///
/// # Safety
/// `list` must be null or point to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    match MODULE.get_or_init(load) {
        Ok(module) => {
            // The caller only reads the table; PKCS#11 types it mutable.
            *list = &module.table as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
            CKR_OK
        }
        Err(reason) => {
            eprintln!("slow-hsm: {reason}");
            CKR_GENERAL_ERROR
        }
    }
}

/// Loads the real module (for the process's lifetime) and builds the table.
fn load() -> Result<Module, String> {
    let settings = Settings::from_vars(|name| std::env::var(name).ok())?;
    let path = CString::new(settings.module.as_os_str().as_bytes())
        .map_err(|_| "SLOW_HSM_MODULE contains a NUL byte".to_owned())?;
    // SAFETY: dlopen and dlsym with NUL-terminated strings; the handle is
    // never closed, so the real functions stay valid.
    let real = unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let error = libc::dlerror();
            let reason = match error.is_null() {
                true => "no reason given".into(),
                false => std::ffi::CStr::from_ptr(error).to_string_lossy(),
            };
            return Err(format!(
                "cannot load {}: {reason}",
                settings.module.display()
            ));
        }
        let symbol = libc::dlsym(handle, c"C_GetFunctionList".as_ptr());
        if symbol.is_null() {
            return Err(format!(
                "{} has no C_GetFunctionList",
                settings.module.display()
            ));
        }
        let get: unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV =
            std::mem::transmute(symbol);
        let mut list = std::ptr::null_mut();
        let rv = get(&mut list);
        if rv != CKR_OK || list.is_null() {
            return Err(format!(
                "C_GetFunctionList of {} answered {rv:#x}",
                settings.module.display()
            ));
        }
        *list
    };
    let table = CK_FUNCTION_LIST {
        C_GetFunctionList: Some(C_GetFunctionList),
        C_Finalize: Some(finalize),
        C_GetTokenInfo: Some(get_token_info),
        C_OpenSession: Some(open_session),
        C_CloseSession: Some(close_session),
        C_CloseAllSessions: Some(close_all_sessions),
        C_Login: Some(login),
        C_SignInit: Some(sign_init),
        C_Sign: Some(sign),
        ..real
    };
    Ok(Module {
        real,
        table,
        settings,
    })
}

fn module() -> &'static Module {
    match MODULE.get() {
        Some(Ok(module)) => module,
        // The table is handed out only once the module is loaded.
        _ => unreachable!("called before C_GetFunctionList succeeded"),
    }
}

/// Calls the real module's `$name`, or answers that it has none.
macro_rules! forward {
    ($name:ident ( $($arg:expr),* )) => {
        match module().real.$name {
            Some(real) => real($($arg),*),
            None => CKR_FUNCTION_NOT_SUPPORTED,
        }
    };
}

/// Blocks while the hang file exists, if `call` is one that hangs.
fn hang_point(call: Call) {
    let settings = &module().settings;
    if let (true, Some(file)) = (settings.hangs(call), &settings.hang_file) {
        wait::while_exists(file);
    }
}

unsafe extern "C" fn finalize(reserved: CK_VOID_PTR) -> CK_RV {
    let rv = forward!(C_Finalize(reserved));
    dropped::forget_all();
    if rv == CKR_OK {
        OPEN_SESSIONS.store(0, Ordering::SeqCst);
    }
    rv
}

unsafe extern "C" fn get_token_info(slot: CK_SLOT_ID, info: CK_TOKEN_INFO_PTR) -> CK_RV {
    hang_point(Call::GetTokenInfo);
    let rv = forward!(C_GetTokenInfo(slot, info));
    if let (CKR_OK, Some(max), false) = (rv, module().settings.max_sessions, info.is_null()) {
        (*info).ulMaxSessionCount = max as CK_ULONG;
    }
    rv
}

unsafe extern "C" fn open_session(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    application: CK_VOID_PTR,
    notify: CK_NOTIFY,
    session: CK_SESSION_HANDLE_PTR,
) -> CK_RV {
    hang_point(Call::OpenSession);
    dropped::check(&module().settings);
    logout::check(&module().settings);
    let Some(max) = module().settings.max_sessions else {
        let rv = forward!(C_OpenSession(slot, flags, application, notify, session));
        dropped::opened(rv, session);
        return rv;
    };
    if OPEN_SESSIONS.fetch_add(1, Ordering::SeqCst) >= max {
        OPEN_SESSIONS.fetch_sub(1, Ordering::SeqCst);
        return CKR_SESSION_COUNT;
    }
    let rv = forward!(C_OpenSession(slot, flags, application, notify, session));
    dropped::opened(rv, session);
    if rv != CKR_OK {
        OPEN_SESSIONS.fetch_sub(1, Ordering::SeqCst);
    }
    rv
}

unsafe extern "C" fn close_session(session: CK_SESSION_HANDLE) -> CK_RV {
    dropped::closed(session);
    let rv = forward!(C_CloseSession(session));
    if rv == CKR_OK && module().settings.max_sessions.is_some() {
        let _ =
            OPEN_SESSIONS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
    rv
}

unsafe extern "C" fn close_all_sessions(slot: CK_SLOT_ID) -> CK_RV {
    let rv = forward!(C_CloseAllSessions(slot));
    dropped::forget_all();
    if rv == CKR_OK {
        OPEN_SESSIONS.store(0, Ordering::SeqCst);
    }
    rv
}

unsafe extern "C" fn sign_init(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    hang_point(Call::SignInit);
    let settings = &module().settings;
    if dropped::is_dropped(settings, session) {
        return CKR_SESSION_HANDLE_INVALID;
    }
    if logout::is_logged_out(settings) {
        return CKR_USER_NOT_LOGGED_IN;
    }
    wait::sleep(settings.sign_init_delay, settings.jitter);
    forward!(C_SignInit(session, mechanism, key))
}

unsafe extern "C" fn sign(
    session: CK_SESSION_HANDLE,
    data: CK_BYTE_PTR,
    data_len: CK_ULONG,
    signature: CK_BYTE_PTR,
    signature_len: CK_ULONG_PTR,
) -> CK_RV {
    // A call without a buffer only asks for the signature's length.
    if dropped::is_dropped(&module().settings, session) {
        return CKR_SESSION_HANDLE_INVALID;
    }
    if logout::is_logged_out(&module().settings) {
        return CKR_USER_NOT_LOGGED_IN;
    }
    if !signature.is_null() {
        hang_point(Call::Sign);
        let settings = &module().settings;
        wait::sleep(settings.sign_delay, settings.jitter);
    }
    forward!(C_Sign(session, data, data_len, signature, signature_len))
}

unsafe extern "C" fn login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: CK_UTF8CHAR_PTR,
    pin_len: CK_ULONG,
) -> CK_RV {
    let rv = forward!(C_Login(session, user, pin, pin_len));
    if rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN {
        logout::logged_in();
    }
    rv
}
