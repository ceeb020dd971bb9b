//! Process exit codes, one per failure an operator or systemd must tell apart.
//!
//! systemd's `RestartPreventExitStatus=` lists [`WRONG_PIN`], [`PIN_LOCKED`]
//! and [`CONFIG`]: restarting cannot fix them, and retrying a wrong PIN would
//! burn the token's retry counter.

/// Anything else that failed.
pub const FAILURE: u8 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// An input file (PKCS#12, certificate) could not be used.
pub const DATA: u8 = 65;
/// The PKCS#11 module, the token or a key is not there.
pub const UNAVAILABLE: u8 = 69;
/// The token refused the PIN: one attempt was made and none more will be.
pub const WRONG_PIN: u8 = 77;
/// The token's user PIN is locked; an SO must unlock it.
pub const PIN_LOCKED: u8 = 76;
/// The configuration is invalid.
pub const CONFIG: u8 = 78;

/// A command's failure on its way out: the message for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    /// A failure that prints `message` and exits with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code,
        }
    }
}
