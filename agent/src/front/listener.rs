//! The listening socket: inherited from systemd, or bound at
//! `[server] socket` with the configured mode and group.
//!
//! A socket file the agent bound is removed when the [`Listener`] is
//! dropped (which [`super::Front::serve`] does as soon as it stops
//! accepting), and only if the file at that path is still the one it bound.

use std::fmt::Display;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::{parse_mode, ServerConfig};
use crate::private_dir::{self, Untrusted};

/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 1024;

/// The listening socket: bound by the agent, or inherited from systemd.
pub struct Listener {
    pub listener: tokio::net::UnixListener,
    /// Set when the agent bound the socket itself. The file is removed when
    /// the listener is dropped (or by [`Listener::remove_socket`]), and only
    /// while it is still the file bound here; the caller need not remove it,
    /// and should not, since a newer agent may own that path by then.
    pub bound_path: Option<PathBuf>,
    socket_file: Option<SocketFile>,
}

impl Listener {
    /// Takes the socket systemd passed (`LISTEN_FDS`/`LISTEN_PID`), else
    /// binds `config.socket`. Must run inside a Tokio runtime, at start-up:
    /// it unsets the `LISTEN_*` variables, which is only sound while no other
    /// thread reads the environment.
    pub fn open(config: &ServerConfig) -> io::Result<Listener> {
        // SAFETY: see above. Consumed: children must not think the sockets
        // are theirs.
        let passed = unsafe { sd_notify::listen_fds_and_unset_env() };
        std::env::remove_var("LISTEN_FDNAMES");
        let passed = passed.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the sockets systemd passed: {e}; start the agent from its .socket unit, or without LISTEN_PID"),
            )
        })?;
        match one_socket(passed)? {
            // SAFETY: systemd hands this descriptor to this process to own.
            Some(fd) => adopt(unsafe { OwnedFd::from_raw_fd(fd) }),
            None => bind(config),
        }
    }

    /// Removes the socket file now if the agent bound it and it is still
    /// ours; dropping the listener does the same.
    pub fn remove_socket(&mut self) {
        self.socket_file.take();
    }
}

/// The one socket among those systemd passed, if it passed any.
fn one_socket(mut passed: impl ExactSizeIterator<Item = RawFd>) -> io::Result<Option<RawFd>> {
    match passed.len() {
        0 | 1 => Ok(passed.next()),
        n => Err(invalid(format!(
            "systemd passed {n} sockets (LISTEN_FDS={n}); the agent serves one: give its .socket unit a single ListenStream="
        ))),
    }
}

/// Serves on a socket systemd passed, once it is checked to be a listening
/// Unix stream socket.
pub fn adopt(fd: OwnedFd) -> io::Result<Listener> {
    let socket = Socket::from(fd);
    let is_unix_stream = socket.domain().ok() == Some(Domain::UNIX)
        && socket.r#type().ok() == Some(Type::STREAM)
        && socket.is_listener().unwrap_or(false);
    if !is_unix_stream {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket systemd passed is not a listening Unix stream socket; use ListenStream=/path/agent.sock in the .socket unit",
        ));
    }
    socket.set_cloexec(true)?;
    into_listener(socket, None, None)
}

/// Binds `config.socket`, replacing a stale socket file but never one that
/// a live agent serves; mode and group are set before anyone can connect.
/// The file is born with at most the configured mode (Linux gives a socket
/// file the mode of its socket, less the umask), and is then given exactly
/// that mode and its group; the directory is one nobody else can write, so
/// nobody can put another file in the socket's place in between. The
/// process-wide umask is left alone: other threads create files too.
fn bind(config: &ServerConfig) -> io::Result<Listener> {
    let path = config.socket.as_path();
    let mode = parse_mode(&config.socket_mode).map_err(invalid)?;
    let group = config.socket_gid().map_err(invalid)?;
    check_directory(path)?;
    clear_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let address = SockAddr::unix(path)
        .map_err(|e| at_socket(path, io::ErrorKind::InvalidInput, &e.to_string()))?;
    // SAFETY: fchmod on a descriptor this function owns.
    if unsafe { libc::fchmod(socket.as_raw_fd(), mode) } != 0 {
        let cannot = format!("cannot give the socket mode {mode:o}");
        return Err(failed(path, cannot)(io::Error::last_os_error()));
    }
    socket.bind(&address).map_err(|e| {
        let detail =
            format!("cannot bind ({e}); the agent's user needs write access to the directory");
        at_socket(path, e.kind(), &detail)
    })?;
    // From here on a failure removes the half-made socket file.
    let socket_file =
        SocketFile::new(path).map_err(failed(path, "cannot read the bound socket file"))?;
    // The bits the umask took off: still nothing beyond the configured mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(failed(path, format!("cannot set its mode to {mode:o}")))?;
    if let Some(gid) = group {
        std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "`server.socket_group` = {:?}: cannot give {} to that group ({e}); the agent's user must be a member of it",
                    config.socket_group.as_deref().unwrap_or_default(),
                    path.display()
                ),
            )
        })?;
    }
    // Only now can peers connect: before listen() a connect is refused.
    socket
        .listen(BACKLOG)
        .map_err(failed(path, "cannot listen"))?;
    into_listener(socket, Some(path.to_path_buf()), Some(socket_file))
}

/// A failed step of binding `server.socket`, naming the setting and its
/// path, so the operator knows which line of the config to look at.
fn at_socket(path: &Path, kind: io::ErrorKind, detail: &str) -> io::Error {
    io::Error::new(
        kind,
        format!("`server.socket` = {}: {detail}", path.display()),
    )
}

/// [`at_socket`] for a system call's error: says what failed, then why.
fn failed<'a>(path: &'a Path, what: impl Display + 'a) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| at_socket(path, e.kind(), &format!("{what} ({e})"))
}

fn into_listener(
    socket: Socket,
    bound_path: Option<PathBuf>,
    socket_file: Option<SocketFile>,
) -> io::Result<Listener> {
    socket.set_nonblocking(true)?;
    let std_listener = std::os::unix::net::UnixListener::from(socket);
    Ok(Listener {
        listener: tokio::net::UnixListener::from_std(std_listener)?,
        bound_path,
        socket_file,
    })
}

/// The socket's directory must exist, and only the agent's user (or root)
/// may be able to write it: whoever else can write it could put a symlink
/// in place of the new socket file before its group is set. A sticky
/// directory (`/tmp`) is fine, since there only the owner may rename or
/// remove a file.
fn check_directory(path: &Path) -> io::Result<()> {
    let dir = private_dir::parent(path);
    let (untrusted, kind, fix) = match private_dir::check(dir) {
        Ok(()) => return Ok(()),
        Err(untrusted @ Untrusted::Missing) => (
            untrusted,
            io::ErrorKind::NotFound,
            "; create it (systemd: RuntimeDirectory=) or change `server.socket`",
        ),
        Err(untrusted) => (
            untrusted,
            io::ErrorKind::PermissionDenied,
            ", who could replace the socket file while the agent sets it up; use a directory only the agent's user can write (systemd: RuntimeDirectory=) or make it sticky (chmod +t)",
        ),
    };
    let detail = format!("{}{fix}", untrusted.describe(dir));
    Err(at_socket(path, kind, &detail))
}

/// Removes a socket file nobody answers on; refuses one a live agent serves
/// and anything that is not a socket.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(path, "cannot look at the path")(e)),
        Ok(meta) => meta,
    };
    if !meta.file_type().is_socket() {
        return Err(at_socket(
            path,
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; remove it or change `server.socket`",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another agent is serving on {}; stop it first, or set `server.socket` to another path",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(failed(path, "cannot remove the stale socket file"))
        }
        Err(e) => Err(failed(path, "cannot tell whether another agent serves it")(e)),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The socket file this process bound, identified by device and inode so
/// that a file another agent bound later at the same path is left alone.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::own_process;
    use std::os::unix::fs::PermissionsExt;

    fn config(path: &Path) -> ServerConfig {
        ServerConfig {
            socket: path.to_path_buf(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn one_passed_socket_is_served_and_more_are_refused() {
        assert_eq!(one_socket(3..3).unwrap(), None);
        assert_eq!(one_socket(3..4).unwrap(), Some(3));
        let err = one_socket(3..5).unwrap_err();
        assert!(err.to_string().contains("single ListenStream="), "{err}");
    }

    #[tokio::test]
    async fn the_listen_variables_are_unset_once_read() {
        if !own_process::is_child() {
            return own_process::run(&[]);
        }
        let names = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        // Sockets passed to another process: this one binds its own.
        let others = [
            ("LISTEN_PID", "1"),
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "agent"),
        ];
        for (name, value) in others {
            std::env::set_var(name, value);
        }
        let listener = Listener::open(&config(&path)).unwrap();
        assert_eq!(listener.bound_path.as_deref(), Some(path.as_path()));
        assert!(names.iter().all(|name| std::env::var_os(name).is_none()));
        // Variables that make no sense are named, and unset all the same.
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
        std::env::set_var("LISTEN_FDS", "x");
        let err = Listener::open(&config(&path)).err().unwrap();
        assert!(err.to_string().contains("LISTEN_FDS"), "{err}");
        assert!(err.to_string().contains(".socket unit"), "{err}");
        assert!(names.iter().all(|name| std::env::var_os(name).is_none()));
    }

    #[tokio::test]
    async fn binds_with_mode_and_removes_its_file_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let mut config = config(&path);
        // Group-writable: a umask as common as 022 would take that bit off.
        config.socket_mode = "0660".into();
        let listener = Listener::open(&config).unwrap();
        assert_eq!(listener.bound_path.as_deref(), Some(path.as_path()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{mode:o}");
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(listener);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a dropped std listener leaves its file");
        let listener = Listener::open(&config(&path)).unwrap();
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(listener);
    }

    #[tokio::test]
    async fn live_socket_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let first = Listener::open(&config(&path)).unwrap();
        let err = Listener::open(&config(&path)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains("another agent is serving"),
            "{err}"
        );
        // The first agent still serves, on the same file.
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(first);
    }

    #[tokio::test]
    async fn a_file_bound_by_someone_else_later_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = Listener::open(&config(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(listener);
        assert!(path.exists());
    }

    #[tokio::test]
    async fn non_socket_and_missing_directory_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let err = Listener::open(&config(&file)).err().unwrap();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        let missing = dir.path().join("no-such-dir/agent.sock");
        let err = Listener::open(&config(&missing)).err().unwrap();
        assert!(
            err.to_string().contains("no-such-dir does not exist"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_path_too_long_for_a_socket_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join(format!("{}.sock", "a".repeat(120)));
        let err = Listener::open(&config(&long)).err().unwrap();
        let message = err.to_string();
        assert!(message.starts_with("`server.socket` = "), "{message}");
        assert!(message.contains(&"a".repeat(120)), "{message}");
        assert!(!long.exists(), "nothing is left at the path");
    }

    #[tokio::test]
    async fn group_is_given_to_the_socket() {
        let output = std::process::Command::new("id")
            .arg("-gn")
            .output()
            .unwrap();
        let group = String::from_utf8(output.stdout).unwrap().trim().to_string();
        let gid = crate::accounts::group_id(&group).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let mut config = config(&path);
        config.socket_group = Some(group);
        let _listener = Listener::open(&config).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);
    }

    #[tokio::test]
    async fn unknown_group_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(&dir.path().join("agent.sock"));
        config.socket_group = Some("no-such-group-xq".into());
        let err = Listener::open(&config).err().unwrap();
        assert!(
            err.to_string()
                .contains("`server.socket_group` = \"no-such-group-xq\""),
            "{err}"
        );
        assert!(!dir.path().join("agent.sock").exists());
    }

    #[tokio::test]
    async fn adopts_a_passed_listening_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activated.sock");
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listener = adopt(OwnedFd::from(std_listener)).unwrap();
        assert!(listener.bound_path.is_none());
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(listener);
        assert!(path.exists(), "a socket systemd owns is not removed");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = adopt(OwnedFd::from(a)).err().unwrap();
        assert!(err
            .to_string()
            .contains("not a listening Unix stream socket"));
    }
}
