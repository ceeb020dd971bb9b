//! Directories the agent makes files in (the socket, the audit file): only
//! the agent's user (or root) may be able to write them, or else whoever
//! can could put a symlink, a FIFO or a file of their own where the agent
//! is about to create or open one. A sticky directory (`/tmp`) passes: in
//! it only a file's owner may rename or remove it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why a file's directory is not one the agent can trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// It does not exist, or is not a directory.
    Missing,
    /// Another user can write it, and it is not sticky.
    OthersCanWrite { mode: u32, owner: u32 },
}

/// The directory a file at `path` is in (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Checks the directory `dir` by the rule above.
pub fn check(dir: &Path) -> Result<(), Untrusted> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        _ => return Err(Untrusted::Missing),
    };
    let sticky = meta.mode() & 0o1000 != 0;
    let others_write = meta.mode() & 0o022 != 0 || !is_me_or_root(meta.uid());
    if sticky || !others_write {
        return Ok(());
    }
    Err(Untrusted::OthersCanWrite {
        mode: meta.mode() & 0o7777,
        owner: meta.uid(),
    })
}

/// Whether `uid` is the agent's own (effective) user or root.
pub fn is_me_or_root(uid: u32) -> bool {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    uid == me || uid == 0
}

impl Untrusted {
    /// What is wrong with `dir`, for a message that goes on to say what
    /// the directory was for and what to do.
    pub fn describe(&self, dir: &Path) -> String {
        match self {
            Untrusted::Missing => format!("directory {} does not exist", dir.display()),
            Untrusted::OthersCanWrite { mode, owner } => format!(
                "directory {} (mode {mode:04o}, owner uid {owner}) can be written by other users",
                dir.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir_with_mode(mode: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn private_and_sticky_directories_pass_and_open_ones_do_not() {
        assert_eq!(check(dir_with_mode(0o700).path()), Ok(()));
        assert_eq!(check(dir_with_mode(0o755).path()), Ok(()));
        assert_eq!(check(dir_with_mode(0o1777).path()), Ok(()));
        let open = dir_with_mode(0o777);
        let untrusted = check(open.path()).unwrap_err();
        assert!(matches!(
            untrusted,
            Untrusted::OthersCanWrite { mode: 0o777, .. }
        ));
        assert!(untrusted
            .describe(open.path())
            .contains("(mode 0777, owner uid"));
        assert_eq!(check(&open.path().join("none")), Err(Untrusted::Missing));
    }

    #[test]
    fn a_bare_file_name_is_in_the_working_directory() {
        assert_eq!(parent(Path::new("audit.log")), Path::new("."));
        assert_eq!(parent(Path::new("/var/log/a")), Path::new("/var/log"));
    }
}
