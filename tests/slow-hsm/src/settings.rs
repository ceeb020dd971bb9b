//! What the environment asks the module for, read once when the module is
//! loaded.

use std::path::PathBuf;
use std::time::Duration;

/// The real module when `SLOW_HSM_MODULE` is not set.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The calls that can be made to hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    SignInit,
    Sign,
    GetTokenInfo,
    OpenSession,
}

impl Call {
    fn parse(name: &str) -> Result<Call, String> {
        match name.trim() {
            "C_SignInit" => Ok(Call::SignInit),
            "C_Sign" => Ok(Call::Sign),
            "C_GetTokenInfo" => Ok(Call::GetTokenInfo),
            "C_OpenSession" => Ok(Call::OpenSession),
            other => Err(format!(
                "SLOW_HSM_HANG: {other:?} is not one of C_SignInit, C_Sign, C_GetTokenInfo, C_OpenSession"
            )),
        }
    }
}

/// The module's behaviour, from `SLOW_HSM_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `SLOW_HSM_MODULE`: the module every call is forwarded to.
    pub module: PathBuf,
    /// `SLOW_HSM_SIGN_DELAY_US`: added to every C_Sign that returns a
    /// signature (not to the call that only asks for its length).
    pub sign_delay: Duration,
    /// `SLOW_HSM_SIGN_INIT_DELAY_US`: added to every C_SignInit.
    pub sign_init_delay: Duration,
    /// `SLOW_HSM_JITTER_US`: each delay grows by up to this much, uniformly.
    pub jitter: Duration,
    /// `SLOW_HSM_MAX_SESSIONS`: the token's `ulMaxSessionCount`; opening
    /// more sessions at once answers CKR_SESSION_COUNT.
    pub max_sessions: Option<u64>,
    /// `SLOW_HSM_HANG_FILE`: while this file exists, the calls in `hang`
    /// block (before they reach the real module).
    pub hang_file: Option<PathBuf>,
    /// `SLOW_HSM_HANG`: comma-separated call names [default: C_Sign].
    pub hang: Vec<Call>,
    /// `SLOW_HSM_DROP_FILE`: when this file appears, every session open
    /// at that moment is dropped, as a network HSM's are when its link or
    /// appliance restarts; the module removes the file, so that each
    /// appearance is one drop.
    pub drop_file: Option<PathBuf>,
    /// `SLOW_HSM_LOGOUT_FILE`: when this file appears, the token forgets
    /// the login: signatures answer CKR_USER_NOT_LOGGED_IN until the next
    /// C_Login; the module removes the file, so that each appearance is
    /// one logout.
    pub logout_file: Option<PathBuf>,
}

impl Settings {
    /// The settings `var` (the environment, in the module) describes.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let micros = |name: &str| -> Result<Duration, String> {
            match var(name) {
                None => Ok(Duration::ZERO),
                Some(text) => text.trim().parse().map(Duration::from_micros).map_err(|_| {
                    format!("{name} = {text:?} is not a whole number of microseconds")
                }),
            }
        };
        let max_sessions = match var("SLOW_HSM_MAX_SESSIONS") {
            None => None,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(format!(
                        "SLOW_HSM_MAX_SESSIONS = {text:?} is not a count above 0"
                    ))
                }
            },
        };
        let hang = match var("SLOW_HSM_HANG") {
            None => vec![Call::Sign],
            Some(text) => text.split(',').map(Call::parse).collect::<Result<_, _>>()?,
        };
        Ok(Settings {
            module: var("SLOW_HSM_MODULE").map_or_else(|| DEFAULT_MODULE.into(), PathBuf::from),
            sign_delay: micros("SLOW_HSM_SIGN_DELAY_US")?,
            sign_init_delay: micros("SLOW_HSM_SIGN_INIT_DELAY_US")?,
            jitter: micros("SLOW_HSM_JITTER_US")?,
            max_sessions,
            hang_file: var("SLOW_HSM_HANG_FILE").map(PathBuf::from),
            hang,
            drop_file: var("SLOW_HSM_DROP_FILE").map(PathBuf::from),
            logout_file: var("SLOW_HSM_LOGOUT_FILE").map(PathBuf::from),
        })
    }

    /// Whether `call` blocks while the hang file exists.
    pub fn hangs(&self, call: Call) -> bool {
        self.hang_file.is_some() && self.hang.contains(&call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_vars(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn nothing_set_forwards_to_softhsm_unchanged() {
        let plain = settings(&[]).unwrap();
        assert_eq!(plain.module, PathBuf::from(DEFAULT_MODULE));
        assert_eq!(plain.sign_delay, Duration::ZERO);
        assert_eq!(plain.max_sessions, None);
        assert!(!plain.hangs(Call::Sign), "no hang file, no hang");
    }

    #[test]
    fn every_variable_is_read() {
        let all = settings(&[
            ("SLOW_HSM_MODULE", "/opt/hsm.so"),
            ("SLOW_HSM_SIGN_DELAY_US", "2000"),
            ("SLOW_HSM_SIGN_INIT_DELAY_US", "10"),
            ("SLOW_HSM_JITTER_US", "500"),
            ("SLOW_HSM_MAX_SESSIONS", "6"),
            ("SLOW_HSM_HANG_FILE", "/tmp/hang"),
            ("SLOW_HSM_HANG", "C_Sign, C_GetTokenInfo"),
            ("SLOW_HSM_DROP_FILE", "/tmp/drop"),
            ("SLOW_HSM_LOGOUT_FILE", "/tmp/logout"),
        ])
        .unwrap();
        assert_eq!(all.module, PathBuf::from("/opt/hsm.so"));
        assert_eq!(all.sign_delay, Duration::from_millis(2));
        assert_eq!(all.sign_init_delay, Duration::from_micros(10));
        assert_eq!(all.jitter, Duration::from_micros(500));
        assert_eq!(all.max_sessions, Some(6));
        assert!(all.hangs(Call::Sign) && all.hangs(Call::GetTokenInfo));
        assert!(!all.hangs(Call::OpenSession));
        assert_eq!(all.drop_file, Some(PathBuf::from("/tmp/drop")));
        assert_eq!(all.logout_file, Some(PathBuf::from("/tmp/logout")));
    }

    #[test]
    fn bad_values_are_named() {
        let err = settings(&[("SLOW_HSM_SIGN_DELAY_US", "2ms")]).unwrap_err();
        assert!(err.contains("SLOW_HSM_SIGN_DELAY_US"), "{err}");
        let err = settings(&[("SLOW_HSM_MAX_SESSIONS", "0")]).unwrap_err();
        assert!(err.contains("SLOW_HSM_MAX_SESSIONS"), "{err}");
        let err = settings(&[("SLOW_HSM_HANG", "C_Digest")]).unwrap_err();
        assert!(err.contains("C_Digest"), "{err}");
    }
}
