//! The slow module (`tests/slow-hsm`) in front of a [`TestToken`]'s
//! SoftHSM: the same token and keys, with the waits, session limit and
//! hangs a network HSM would add. A fault injector for tests and
//! benchmarks; the package never ships it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::profile_dir;
use crate::TestToken;

/// `libslow_hsm.so`, built beside the tests and benchmarks that use it
/// (this crate depends on it, so cargo builds it with them).
pub fn module_path() -> PathBuf {
    let dir = profile_dir();
    let module = [dir.join("deps"), dir.clone()]
        .into_iter()
        .map(|dir| dir.join("libslow_hsm.so"))
        .find(|path| path.is_file());
    module.unwrap_or_else(|| {
        panic!(
            "libslow_hsm.so is not under {}: build it with `cargo build --workspace --all-targets`",
            dir.display()
        )
    })
}

/// Points the token's `agent.toml` at the slow module instead of SoftHSM;
/// the token, its PIN and keys stay the same.
pub fn route_through_slow_hsm(token: &TestToken) {
    let config = std::fs::read_to_string(token.config_path()).expect("read agent.toml");
    let softhsm = format!("module = {:?}", crate::MODULE);
    assert!(config.contains(&softhsm), "a config with SoftHSM: {config}");
    let slow = format!("module = {:?}", module_path().display().to_string());
    std::fs::write(token.config_path(), config.replacen(&softhsm, &slow, 1))
        .expect("write agent.toml");
}

/// What the slow module adds, as the `SLOW_HSM_*` variables of the
/// process that loads it.
#[derive(Debug, Clone, Default)]
pub struct SlowHsm {
    vars: Vec<(&'static str, String)>,
}

impl SlowHsm {
    /// Forwards every call unchanged.
    pub fn new() -> SlowHsm {
        SlowHsm::default()
    }

    /// Each signature waits `delay` in C_Sign.
    pub fn sign_delay(self, delay: Duration) -> SlowHsm {
        self.var("SLOW_HSM_SIGN_DELAY_US", delay.as_micros())
    }

    /// The token allows `count` sessions at once.
    pub fn max_sessions(self, count: u64) -> SlowHsm {
        self.var("SLOW_HSM_MAX_SESSIONS", count)
    }

    /// `calls` (e.g. `"C_Sign,C_GetTokenInfo"`) block while `file` exists.
    pub fn hang_while(self, file: &Path, calls: &str) -> SlowHsm {
        self.var("SLOW_HSM_HANG_FILE", file.display())
            .var("SLOW_HSM_HANG", calls)
    }

    /// Every session open when `file` appears is dropped (the module
    /// removes the file: write it again for another drop).
    pub fn drop_when(self, file: &Path) -> SlowHsm {
        self.var("SLOW_HSM_DROP_FILE", file.display())
    }

    /// The token forgets the login when `file` appears: signatures answer
    /// CKR_USER_NOT_LOGGED_IN until the next C_Login (the module removes
    /// the file: write it again for another logout).
    pub fn logout_when(self, file: &Path) -> SlowHsm {
        self.var("SLOW_HSM_LOGOUT_FILE", file.display())
    }

    /// Sets the variables on `command`.
    pub fn apply(&self, mut command: Command) -> Command {
        command.envs(self.vars.iter().map(|(name, value)| (name, value)));
        command
    }

    fn var(mut self, name: &'static str, value: impl std::fmt::Display) -> SlowHsm {
        self.vars.push((name, value.to_string()));
        self
    }
}
