//! Opening `[audit] file` for appending, at the start and on every SIGHUP,
//! so that nobody else can choose what the agent writes to: the directory
//! must be one only the agent's user can write (or sticky,
//! [`crate::private_dir`]), the path is never followed through a symlink,
//! and only a regular file of the agent's user (or root) is appended to.
//! A FIFO is opened without waiting for a reader, then refused: waiting
//! would hold the start, or the reload, for as long as nobody reads it.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::private_dir::{self, Untrusted};

/// Mode of a newly created audit file: the agent writes, its group reads.
const FILE_MODE: u32 = 0o640;

/// Opens `path` for appending by the rules above. A file it creates gets
/// `FILE_MODE` set on the descriptor, so that systemd's `UMask=0077`
/// does not leave the group unable to read it; an existing file keeps the
/// mode it has. The error names the key and the path, and what to do.
pub fn append(path: &Path) -> io::Result<File> {
    check_directory(path)?;
    let (file, created) = open_no_follow(path)?;
    check_file(path, &file.metadata().map_err(cannot_open(path))?)?;
    blocking(&file).map_err(cannot_open(path))?;
    if created {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(cannot_open(path))?;
    }
    Ok(file)
}

/// Creates the file, or opens the one there, without following a symlink
/// and without waiting for a FIFO's reader; says whether it created it.
fn open_no_follow(path: &Path) -> io::Result<(File, bool)> {
    let open = |create_new: bool| {
        OpenOptions::new()
            .append(true)
            .create_new(create_new)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let opened = match open(true) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open(false).map(|f| (f, false)),
        Err(e) => Err(e),
    };
    opened.map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => at_audit(
            path,
            e.kind(),
            "it is a symbolic link, which the agent does not follow; set `audit.file` to the file itself",
        ),
        // O_NONBLOCK makes a FIFO without a reader fail instead of wait.
        Some(libc::ENXIO) => not_regular(path, "a FIFO or socket"),
        _ => cannot_open(path)(e),
    })
}

/// The directory must pass [`private_dir::check`].
fn check_directory(path: &Path) -> io::Result<()> {
    let dir = private_dir::parent(path);
    match private_dir::check(dir) {
        Ok(()) => Ok(()),
        Err(untrusted @ Untrusted::Missing) => {
            let detail = format!("{}; create it or fix the path", untrusted.describe(dir));
            Err(at_audit(path, io::ErrorKind::NotFound, &detail))
        }
        Err(untrusted) => {
            let detail = format!(
                "{}, who could put a file of their own or a link in its place; use a directory only the agent's user can write (systemd: LogsDirectory=)",
                untrusted.describe(dir)
            );
            Err(at_audit(path, io::ErrorKind::PermissionDenied, &detail))
        }
    }
}

/// What was opened must be a regular file of the agent's user or root.
fn check_file(path: &Path, meta: &Metadata) -> io::Result<()> {
    let kind = meta.file_type();
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else if !kind.is_file() {
        "not a file"
    } else if !private_dir::is_me_or_root(meta.uid()) {
        let detail = format!(
            "the file belongs to uid {}, who could read or rewrite the audit; remove it, or give it to the agent's user",
            meta.uid()
        );
        return Err(at_audit(path, io::ErrorKind::PermissionDenied, &detail));
    } else {
        return Ok(());
    };
    Err(not_regular(path, what))
}

/// Writes wait for the disk again: O_NONBLOCK was only for the open.
fn blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn not_regular(path: &Path, what: &str) -> io::Error {
    let detail = format!(
        "it is {what}, not a regular file; the agent appends only to a regular file: remove it, or set `audit.file` to another path"
    );
    at_audit(path, io::ErrorKind::InvalidInput, &detail)
}

/// A failure naming the setting and its path, so the operator knows which
/// line of the config to look at.
fn at_audit(path: &Path, kind: io::ErrorKind, detail: &str) -> io::Error {
    io::Error::new(kind, format!("`audit.file` = {}: {detail}", path.display()))
}

fn cannot_open(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| {
        let detail = format!("cannot open it for appending ({e}); fix the path or its permissions");
        at_audit(path, e.kind(), &detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &Path) -> String {
        append(path).unwrap_err().to_string()
    }

    #[test]
    fn a_symlink_a_fifo_and_a_device_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let message = refused(&link);
        assert!(message.starts_with("`audit.file` = "), "{message}");
        assert!(message.contains("symbolic link"), "{message}");

        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(refused(&fifo).contains("a FIFO or socket, not a regular file"));
        // With a reader the open succeeds; fstat refuses it then.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(refused(&fifo).contains("a FIFO, not a regular file"));
        assert!(refused(Path::new("/dev/full")).contains("a device, not a regular file"));
    }

    #[test]
    fn a_created_file_is_0640_and_writes_block_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let file = append(&path).unwrap();
        let mode = file.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert!(append(&path).is_ok(), "an existing file is opened again");
    }
}
