//! Who is on the other end of a connection: the kernel's credentials for
//! it (SO_PEERCRED), and the process's supplementary groups, systemd unit,
//! Kubernetes pod and executable from /proc, read once, when the connection
//! is accepted. The pod is read from /proc/PID/cgroup (by the kubelet's
//! layouts, [`crate::front::kubernetes::cgroup`]), never from mountinfo,
//! which a bind mount can forge.
//!
//! The /proc facts stand for the whole connection: they describe the
//! process that connected as it was when the agent accepted. A process can
//! exec another program after connecting, or hand the connection to one,
//! and requests on that connection still carry the facts read at accept.
//! Reading them at accept rather than at the first request keeps that
//! window as short as the agent can make it, and costs nothing per request.
//!
//! /proc is read by pid, and a pid can be reused once its process is gone.
//! To read the right process, the agent pins it with a pidfd before reading
//! and checks after reading that the process behind it is still alive: a
//! live process keeps its pid, so what was read was its own.
//!
//! - SO_PEERPIDFD (Linux 6.5+) gives a pidfd for the process that
//!   connected, even if it has exited since; then it polls as exited and
//!   nothing is read. If the option fails for any other reason than not
//!   existing (before 6.16, ESRCH for a peer already reaped), nothing is
//!   read either.
//! - Only where the option does not exist (ENOPROTOOPT: kernels before
//!   6.5) does the agent pin whichever process holds the pid now, with
//!   `pidfd_open`, and it believes what it read only if that process
//!   started no later than the clock tick (10 ms) of the accept. A process
//!   started after the accept lends nothing. What remains: a process of
//!   the same uid and gid that got the pid between the peer's exit and the
//!   accept is taken for the peer.
//!
//! On both paths, what was read counts only if the process's real and
//! effective uid and gid are still SO_PEERCRED's, which the kernel fixed at
//! connect. A process can connect and then change its ids before the
//! accept: exec a setuid or setgid program, or restore the ids a root
//! process lowered to connect. Its groups, unit and executable are then
//! those of another identity, and lend nothing; on the older path, neither
//! does a pid reused by another user's or group's process.
//!
//! Without facts, grants that need the groups, unit or executable do not
//! match; uid and primary gid always come from SO_PEERCRED.
//!
//! The executable link of another user's process is readable only with
//! CAP_SYS_PTRACE (or as root); without it `exe` stays unknown. It stays
//! unknown too for a process being traced, and for one whose running file
//! is not the file at the linked path as the agent sees it (`procfs`).
//! Neither check stops the peer's own user, who can preload code into the
//! granted program or attach to it once it has connected.
//!
//! Debug builds (the ones the integration tests run) act as if
//! SO_PEERPIDFD had failed with the errno named in
//! `ACCESS_TOKEN_AGENT_TEST_SO_PEERPIDFD` (`ENOPROTOOPT` or `ESRCH`), so
//! that both paths are tested on any kernel; release builds ignore it.

mod procfs;
pub mod userns;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

pub use procfs::{groups_from_status, since_boot, unit_from_cgroup};

use crate::front::kubernetes::PodCgroup;

/// Facts about the peer's process read from /proc; what could not be read
/// is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// The systemd unit PID 1 runs the process in, e.g. `my-app.service`;
    /// `user@UID.service` for whatever a user's own systemd starts.
    pub unit: Option<String>,
    /// The Kubernetes pod the kubelet runs the process in, by its cgroup.
    pub pod: PodCgroup,
    /// The executable, as /proc/PID/exe links it.
    pub exe: Option<PathBuf>,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
}

/// The peer of one connection.
#[derive(Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Absent when the peer is in another pid namespace.
    pub pid: Option<i32>,
    process: Process,
}

impl Peer {
    /// The peer of `stream`, accepted at `accepted` ([`since_boot`]), with
    /// its process facts read now: one getsockopt for a pidfd, then /proc
    /// once for the connection.
    pub fn of(stream: &tokio::net::UnixStream, accepted: Duration) -> io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().filter(|pid| *pid > 0);
        let (uid, gid) = (cred.uid(), cred.gid());
        let process = pid
            .and_then(|pid| {
                let reading = match peer_pidfd(stream) {
                    Ok(pidfd) => read_pinned(pid, &pidfd)?,
                    Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                        let reading = read_pinned(pid, &open_pidfd(pid)?)?;
                        reading.started_by(accepted).then_some(reading)?
                    }
                    Err(_) => return None,
                };
                // On both paths the ids must still be SO_PEERCRED's: the
                // process that connected may have changed them since (a
                // setuid exec), and on the second another user's process
                // may hold the pid.
                reading
                    .has_the_peers_ids(uid, gid)
                    .then_some(reading.process)
            })
            .unwrap_or_default();
        Ok(Peer {
            uid,
            gid,
            pid,
            process,
        })
    }

    /// A peer with known credentials and no process facts.
    pub fn new(uid: u32, gid: u32, pid: Option<i32>) -> Peer {
        Peer {
            uid,
            gid,
            pid,
            process: Process::default(),
        }
    }

    /// The same peer with these process facts.
    pub fn with_process(self, process: Process) -> Peer {
        Peer { process, ..self }
    }

    /// The process facts read when the connection was accepted.
    pub fn process(&self) -> &Process {
        &self.process
    }
}

/// Reads /proc for `pid` if `pidfd`'s process is still alive after the
/// read, so that the facts are its own and not a later owner's of the pid.
fn read_pinned(pid: i32, pidfd: &OwnedFd) -> Option<procfs::Reading> {
    let reading = procfs::read(pid);
    process_alive(pidfd).then_some(reading)
}

/// A pidfd for the process that connected, if the kernel offers
/// SO_PEERPIDFD (libc carries its number for each architecture).
fn peer_pidfd(stream: &tokio::net::UnixStream) -> io::Result<OwnedFd> {
    #[cfg(debug_assertions)]
    if let Some(errno) = pretended_error() {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for the kernel to write an int into.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel handed us a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The errno `ACCESS_TOKEN_AGENT_TEST_SO_PEERPIDFD` names, read once.
#[cfg(debug_assertions)]
fn pretended_error() -> Option<i32> {
    static ERRNO: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *ERRNO.get_or_init(
        || match std::env::var("ACCESS_TOKEN_AGENT_TEST_SO_PEERPIDFD").as_deref() {
            Ok("ENOPROTOOPT") => Some(libc::ENOPROTOOPT),
            Ok("ESRCH") => Some(libc::ESRCH),
            _ => None,
        },
    )
}

/// A pidfd for whichever process has `pid` now (Linux 5.3+).
fn open_pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a new descriptor that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// A pidfd polls readable once its process has exited.
fn process_alive(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let rc = unsafe { libc::poll(&mut poll, 1, 0) };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A connected stream whose peer is this process, registered with the
    /// returned runtime.
    fn stream_to_self() -> (
        tokio::runtime::Runtime,
        tokio::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let stream = {
            let _guard = runtime.enter();
            tokio::net::UnixStream::from_std(a).unwrap()
        };
        (runtime, stream, b)
    }

    #[test]
    fn own_process_is_read_at_accept() {
        let (_runtime, stream, _other_end) = stream_to_self();
        let peer = Peer::of(&stream, since_boot()).unwrap();
        // SAFETY: getuid/getpid cannot fail.
        let (uid, pid) = unsafe { (libc::getuid(), libc::getpid()) };
        assert_eq!(peer.uid, uid);
        assert_eq!(peer.pid, Some(pid));
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(peer.process().exe.as_ref(), Some(&exe));
    }

    /// The pid a pidfd refers to, from its fdinfo.
    fn pid_of(pidfd: &OwnedFd) -> Option<i32> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()));
        info.ok()?
            .lines()
            .find_map(|line| line.strip_prefix("Pid:"))?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the running kernel is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let number = |part: Option<&str>| part.and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        (number(parts.next()), number(parts.next())) >= (major, minor)
    }

    #[test]
    fn so_peerpidfd_names_the_connecting_process() {
        if !kernel_at_least(6, 5) {
            return; // SO_PEERPIDFD arrived in Linux 6.5.
        }
        let (_runtime, stream, _other_end) = stream_to_self();
        let pidfd = peer_pidfd(&stream).expect("SO_PEERPIDFD on Linux 6.5+");
        // SAFETY: getpid cannot fail.
        assert_eq!(pid_of(&pidfd), Some(unsafe { libc::getpid() }));
    }

    /// Starts a copy of `sleep` at `path`, retrying while another test's
    /// fork still holds a write descriptor of the fresh copy (ETXTBSY).
    fn run_copy_of_sleep(path: &Path) -> std::process::Child {
        std::fs::copy("/bin/sleep", path).unwrap();
        for _ in 0..50 {
            match std::process::Command::new(path).arg("30").spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                started => return started.unwrap(),
            }
        }
        panic!("{path:?} stayed busy");
    }

    #[test]
    fn a_replaced_program_keeps_its_path_while_one_is_installed_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("my-app");
        let mut child = run_copy_of_sleep(&path);
        let pid = child.id() as i32;
        assert_eq!(procfs::read(pid).process.exe.as_ref(), Some(&path));
        // Uninstalled: the link says so, and matches no grant on the path.
        std::fs::remove_file(&path).unwrap();
        let deleted = procfs::read(pid).process.exe.unwrap();
        assert_eq!(
            deleted.as_os_str(),
            format!("{} (deleted)", path.display()).as_str()
        );
        // Upgraded: a new file at the path again.
        std::fs::copy("/bin/sleep", &path).unwrap();
        assert_eq!(procfs::read(pid).process.exe.as_ref(), Some(&path));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn an_exited_process_yields_nothing() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let pidfd = open_pidfd(pid).unwrap();
        child.wait().unwrap();
        assert!(!process_alive(&pidfd));
        assert!(read_pinned(pid, &pidfd).is_none());
    }
}
