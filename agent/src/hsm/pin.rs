//! Reading the HSM user PIN from a file or a systemd credential.
//!
//! The PIN never comes from argv or the environment. It is held in a
//! [`SecretString`], which zeroizes its memory on drop, and every buffer it
//! passes through on the way in is zeroized too.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::HsmConfig;

/// Why the PIN could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("PIN file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "`hsm.pin_credential` = {0:?} is set but $CREDENTIALS_DIRECTORY is not; run under systemd with LoadCredential={0}:/path/to/pin, or use `hsm.pin_file`"
    )]
    NoCredentialsDirectory(String),
}

/// Reads the PIN the config points at.
pub fn load(hsm: &HsmConfig) -> Result<SecretString, PinError> {
    match (&hsm.pin_file, &hsm.pin_credential) {
        (Some(file), _) => read_pin_file(file),
        (None, Some(name)) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| PinError::NoCredentialsDirectory(name.clone()))?;
            read_pin_file(&Path::new(&dir).join(name))
        }
        (None, None) => unreachable!("config validation requires a PIN source"),
    }
}

/// Reads a PIN file, refusing one that group or others may read.
pub fn read_pin_file(path: &Path) -> Result<SecretString, PinError> {
    let fail = |reason: String| PinError::File {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open it ({e})")))?;
    let mode = file
        .metadata()
        .map_err(|e| fail(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:04o} lets group or others read it; run `chmod 600 {}`",
            mode & 0o7777,
            path.display()
        )));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(64));
    file.read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read it ({e})")))?;
    pin_from_bytes(&bytes).map_err(fail)
}

/// The PIN is the file's text without one trailing newline.
fn pin_from_bytes(bytes: &[u8]) -> Result<SecretString, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the PIN is not UTF-8 text".to_owned())?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err("the file is empty; write the token's user PIN into it".into());
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn write(dir: &Path, content: &str, mode: u32) -> PathBuf {
        let path = dir.join("pin");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn trailing_newline_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let pin = read_pin_file(&write(dir.path(), "12 34\r\n", 0o600)).unwrap();
        assert_eq!(pin.expose_secret(), "12 34");
    }

    #[test]
    fn readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_pin_file(&write(dir.path(), "1234", 0o644)).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_pin_file(&write(dir.path(), "\n", 0o400)).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
