//! Who is on the other end of a connection: the kernel's credentials for
//! it (SO_PEERCRED), and the process's supplementary groups, systemd unit
//! and executable from /proc, read once, when the connection is accepted.
//!
//! The /proc facts stand for the whole connection: they describe the
//! process that connected as it was when the agent accepted. A process can
//! exec another program after connecting, or hand the connection to one,
//! and requests on that connection still carry the facts read at accept.
//! Reading them at accept rather than at the first request keeps that
//! window as short as the agent can make it, and costs nothing per request.
//!
//! /proc is read by pid, and a pid can be reused once its process is gone.
//! To read the right process, the agent pins the peer with a pidfd before
//! reading and checks after reading that the process behind it is still
//! alive: a live process keeps its pid, so what was read was its own. The
//! pidfd comes from SO_PEERPIDFD (Linux 6.5+), which names the process that
//! connected even if it already exited; older kernels fall back to
//! `pidfd_open(pid)`, which cannot tell whether the pid was reused between
//! `connect` and `accept`. Without a pidfd nothing is read, and grants that
//! need the groups, unit or executable do not match.
//!
//! The executable link of another user's process is readable only with
//! CAP_SYS_PTRACE (or as root); without it `exe` stays unknown.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Facts about the peer's process read from /proc; what could not be read
/// is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// The systemd unit PID 1 runs the process in, e.g. `my-app.service`;
    /// `user@UID.service` for whatever a user's own systemd starts.
    pub unit: Option<String>,
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
    /// The peer of `stream`, with its process facts read now, at accept:
    /// one getsockopt for a pidfd, then /proc once for the connection.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().filter(|pid| *pid > 0);
        let process = pid
            .and_then(|pid| {
                let pidfd = peer_pidfd(stream).or_else(|| open_pidfd(pid))?;
                read_pinned(pid, &pidfd)
            })
            .unwrap_or_default();
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
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
fn read_pinned(pid: i32, pidfd: &OwnedFd) -> Option<Process> {
    let process = read_proc(pid);
    process_alive(pidfd).then_some(process)
}

/// Reads unit, exe and groups of `pid`; what cannot be read stays empty.
fn read_proc(pid: i32) -> Process {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let unit = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|text| unit_from_cgroup(&text));
    let exe = std::fs::read_link(dir.join("exe")).ok().map(installed_path);
    let groups = std::fs::read_to_string(dir.join("status"))
        .map(|text| groups_from_status(&text))
        .unwrap_or_default();
    Process { unit, exe, groups }
}

/// The path of a running program as /proc/PID/exe links it. A program
/// whose file was replaced or removed since it started links as
/// `/usr/bin/x (deleted)`; while a file is at `/usr/bin/x` again (a package
/// upgrade replaced it), the program counts as `/usr/bin/x`, so that an
/// upgrade does not cut a running service off from its tokens until it
/// restarts. Removed for good, it keeps the suffix and matches no grant.
fn installed_path(link: PathBuf) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = link.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(path) if Path::new(std::ffi::OsStr::from_bytes(path)).exists() => {
            PathBuf::from(std::ffi::OsStr::from_bytes(path))
        }
        _ => link,
    }
}

/// The systemd unit from /proc/PID/cgroup: the first service or scope on
/// the process's cgroup path, which is the unit the system manager (PID 1)
/// runs it in. What lies below that unit is the unit's own to arrange: a
/// user's systemd (`user@UID.service`) or a service with `Delegate=` can
/// create cgroups with any name there, so a name below never counts.
/// `systemd-run --user --unit=x.service` runs in
/// `/user.slice/user-1000.slice/user@1000.service/app.slice/x.service` and
/// reads as `user@1000.service`.
///
/// The unified hierarchy's line (`0::`) is read first; on a host with
/// systemd's legacy v1 hierarchy that line is `/` for every process, and
/// the `name=systemd` line holds the path instead.
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    let unified = text.lines().find_map(|line| line.strip_prefix("0::"));
    let legacy = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers == "name=systemd").then_some(path)
    });
    [unified, legacy].into_iter().flatten().find_map(|path| {
        path.split('/')
            .find(|part| part.ends_with(".service") || part.ends_with(".scope"))
            .map(str::to_owned)
    })
}

/// Supplementary groups from the `Groups:` line of /proc/PID/status.
pub fn groups_from_status(text: &str) -> Vec<u32> {
    text.lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|ids| {
            ids.split_whitespace()
                .filter_map(|id| id.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A pidfd for the process that connected, if the kernel offers
/// SO_PEERPIDFD (libc carries its number for each architecture).
fn peer_pidfd(stream: &tokio::net::UnixStream) -> Option<OwnedFd> {
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
    // SAFETY: on success the kernel handed us a new descriptor that we own.
    (rc == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
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

    #[test]
    fn unit_of_a_system_service() {
        assert_eq!(
            unit_from_cgroup("0::/system.slice/my-app.service\n").as_deref(),
            Some("my-app.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/system.slice/system-getty.slice/getty@tty1.service\n").as_deref(),
            Some("getty@tty1.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n").as_deref(),
            Some("session-3.scope")
        );
    }

    #[test]
    fn a_users_own_units_read_as_the_user_manager() {
        // systemd-run --user --unit=altinn-studio.service, and a scope of the user's manager.
        for path in [
            "/user.slice/user-1000.slice/user@1000.service/app.slice/altinn-studio.service",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope",
            "/user.slice/user-1000.slice/user@1000.service/init.scope",
        ] {
            assert_eq!(
                unit_from_cgroup(&format!("0::{path}\n")).as_deref(),
                Some("user@1000.service"),
                "{path}"
            );
        }
    }

    #[test]
    fn a_cgroup_made_in_a_delegated_subtree_does_not_count() {
        for below in ["worker", "altinn-studio.service", "a/b/altinn-studio.scope"] {
            let text = format!("0::/system.slice/my-app.service/{below}\n");
            assert_eq!(
                unit_from_cgroup(&text).as_deref(),
                Some("my-app.service"),
                "{text}"
            );
        }
    }

    #[test]
    fn unit_from_the_legacy_hierarchy() {
        // Legacy: the unified line is `/` for everyone; systemd's v1 hierarchy has the path.
        let legacy =
            "12:cpu,cpuacct:/other.service\n1:name=systemd:/system.slice/legacy.service\n0::/\n";
        assert_eq!(unit_from_cgroup(legacy).as_deref(), Some("legacy.service"));
        let user =
            "1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n";
        assert_eq!(unit_from_cgroup(user).as_deref(), Some("user@1000.service"));
        // Hybrid: both hierarchies say the same.
        let hybrid = "1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service\n";
        assert_eq!(unit_from_cgroup(hybrid).as_deref(), Some("a.service"));
    }

    #[test]
    fn no_unit_outside_services_and_scopes() {
        assert_eq!(unit_from_cgroup("0::/\n"), None);
        assert_eq!(unit_from_cgroup("0::/system.slice\n"), None);
        assert_eq!(unit_from_cgroup(""), None);
    }

    #[test]
    fn groups_from_the_status_line() {
        let status = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 1000 \nNgid:\t0\n";
        assert_eq!(groups_from_status(status), vec![4, 24, 1000]);
        assert!(groups_from_status("Groups:\t\n").is_empty());
        assert!(groups_from_status("Name:\tx\n").is_empty());
    }

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
        let peer = Peer::of(&stream).unwrap();
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
        assert_eq!(read_proc(pid).exe.as_ref(), Some(&path));
        // Uninstalled: the link says so, and matches no grant on the path.
        std::fs::remove_file(&path).unwrap();
        let deleted = read_proc(pid).exe.unwrap();
        assert_eq!(
            deleted.as_os_str(),
            format!("{} (deleted)", path.display()).as_str()
        );
        // Upgraded: a new file at the path again.
        std::fs::copy("/bin/sleep", &path).unwrap();
        assert_eq!(read_proc(pid).exe.as_ref(), Some(&path));
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
        assert_eq!(read_pinned(pid, &pidfd), None);
    }
}
