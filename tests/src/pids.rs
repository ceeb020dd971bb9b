//! Processes with chosen credentials and pids: a peer that connects and is
//! gone, and another process given its pid afterwards (clone3 with
//! `set_tid`, which needs root), so that a reused pid is not left to chance.

use std::ffi::CString;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Connects to `socket` from a child running as `uid`:`gid` (no
/// supplementary groups), which exits at once and is reaped. Returns the
/// connection, whose peer credentials are the child's, and the child's pid.
pub fn connect_from_a_child_that_exits(socket: &Path, uid: u32, gid: u32) -> (UnixStream, i32) {
    let (mut streams, pid) = connect_many_from_a_child(socket, uid, gid, 1);
    (streams.remove(0), pid)
}

/// `count` connections to `socket` made by one child running as
/// `uid`:`gid`, which then exits; they stay open here, with the child's
/// credentials, so that one test process can hold another user's connections.
pub fn connect_many_from_a_child(
    socket: &Path,
    uid: u32,
    gid: u32,
    count: usize,
) -> (Vec<UnixStream>, i32) {
    let fds: Vec<libc::c_int> = (0..count)
        .map(|_| {
            // SAFETY: a new socket, owned by a stream below.
            let fd =
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            fd
        })
        .collect();
    // SAFETY: each fd is a new descriptor we own.
    let streams = fds
        .iter()
        .map(|fd| unsafe { UnixStream::from_raw_fd(*fd) })
        .collect();
    // SAFETY: zeroed sockaddr_un is valid; the path is copied in below.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < address.sun_path.len(), "socket path too long");
    for (to, from) in address.sun_path.iter_mut().zip(path) {
        *to = *from as libc::c_char;
    }
    let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: the child makes only async-signal-safe calls, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: async-signal-safe calls on values prepared before fork.
        unsafe {
            let mut ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(gid) == 0
                && libc::setuid(uid) == 0;
            for fd in &fds {
                let address = (&address as *const libc::sockaddr_un).cast();
                ok = ok && libc::connect(*fd, address, length) == 0;
            }
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child could not connect as {uid}:{gid}"
    );
    (streams, pid)
}

/// A process running `program args` as `uid`:`gid` with supplementary
/// `groups`, killed and reaped when dropped.
pub struct Recycled {
    pub pid: i32,
}

impl Recycled {
    /// Starts it with exactly pid `pid`, which must be free; waits until it
    /// runs `program`. None if the pid was taken meanwhile.
    pub fn start(
        pid: i32,
        (uid, gid, groups): (u32, u32, &[u32]),
        program: &Path,
        args: &[&str],
    ) -> Option<Recycled> {
        let program_c = CString::new(program.as_os_str().as_bytes()).unwrap();
        let args_c: Vec<CString> = args.iter().map(|a| CString::new(*a).unwrap()).collect();
        let mut argv: Vec<*const libc::c_char> = vec![program_c.as_ptr()];
        argv.extend(args_c.iter().map(|a| a.as_ptr()));
        argv.push(std::ptr::null());
        let groups: Vec<libc::gid_t> = groups.to_vec();
        let tid = [pid];
        let mut clone = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            set_tid: tid.as_ptr() as u64,
            set_tid_size: 1,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM is a fork; the child makes only
        // async-signal-safe calls on values prepared before, then execs or exits.
        let child = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut clone as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if child == 0 {
            // SAFETY: as above.
            unsafe {
                if libc::setgroups(groups.len(), groups.as_ptr()) == 0
                    && libc::setgid(gid) == 0
                    && libc::setuid(uid) == 0
                {
                    libc::execv(program_c.as_ptr(), argv.as_ptr());
                }
                libc::_exit(127);
            }
        }
        if child < 0 {
            let error = std::io::Error::last_os_error();
            assert_eq!(error.raw_os_error(), Some(libc::EEXIST), "clone3: {error}");
            return None;
        }
        assert_eq!(child, i64::from(pid));
        let recycled = Recycled { pid };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            != Some(program)
        {
            assert!(Instant::now() < deadline, "pid {pid} never ran {program:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(recycled)
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// A child that connected with one identity and then took another, as a
/// process can between its connect and the agent's accept (a setuid
/// helper it execs, or a root process that dropped only its effective ids
/// to connect); killed and reaped when dropped.
pub struct ChangedIdentity {
    /// The connection, whose peer credentials are those of the connect.
    pub stream: UnixStream,
    pub pid: i32,
}

impl ChangedIdentity {
    /// Connects to `socket` from a root child with effective ids
    /// `uid`:`gid` (so SO_PEERCRED says `uid`:`gid`), then restores its
    /// effective uid 0 and takes supplementary `groups`. Returns once the
    /// child has done both; it then waits to be killed.
    pub fn connect(socket: &Path, (uid, gid): (u32, u32), groups: &[u32]) -> ChangedIdentity {
        let address = socket_address(socket);
        let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let groups: Vec<libc::gid_t> = groups.to_vec();
        // SAFETY: a new socket, owned by the stream.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a new descriptor we own.
        let stream = unsafe { UnixStream::from_raw_fd(fd) };
        let mut ready = [0 as libc::c_int; 2];
        // SAFETY: a valid array for two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: the child makes only async-signal-safe calls, then waits or _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: async-signal-safe calls on values prepared before fork.
            unsafe {
                let ok = libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setegid(gid) == 0
                    && libc::seteuid(uid) == 0
                    && libc::connect(fd, (&address as *const libc::sockaddr_un).cast(), length)
                        == 0
                    && libc::seteuid(0) == 0
                    && libc::setgroups(groups.len(), groups.as_ptr()) == 0
                    && libc::write(ready[1], [1u8].as_ptr().cast(), 1) == 1;
                if !ok {
                    libc::_exit(1);
                }
                loop {
                    libc::pause();
                }
            }
        }
        let changed = ChangedIdentity { stream, pid };
        // SAFETY: closing our copy of the write end; reading one byte into a valid buffer.
        let got = unsafe {
            libc::close(ready[1]);
            let mut byte = 0u8;
            let got = libc::read(ready[0], (&mut byte as *mut u8).cast(), 1);
            libc::close(ready[0]);
            got
        };
        assert_eq!(
            got, 1,
            "the child could not connect as {uid}:{gid} and change"
        );
        changed
    }
}

impl Drop for ChangedIdentity {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// The address of the Unix socket at `socket`.
fn socket_address(socket: &Path) -> libc::sockaddr_un {
    // SAFETY: zeroed sockaddr_un is valid; the path is copied in below.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < address.sun_path.len(), "socket path too long");
    for (to, from) in address.sun_path.iter_mut().zip(path) {
        *to = *from as libc::c_char;
    }
    address
}
