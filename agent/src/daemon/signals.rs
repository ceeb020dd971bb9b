//! The daemon's signals, read on the runtime from a signalfd. SIGINT,
//! SIGTERM, SIGHUP and SIGQUIT are blocked in every thread (the mask is set
//! before the first one is started, and threads inherit it), so they stay
//! pending until the signalfd is read. No signal therefore ends the
//! process with its default action while another thread is inside
//! C_Login, whose SoftHSM rewrites `token.object` in place: a stop asked
//! for meanwhile waits for the login, as the held signals of the operators'
//! commands do ([`crate::hsm::held_signals`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGHUP: reopen the audit file and reload.
    Reload,
    /// SIGTERM, SIGINT or SIGQUIT: stop gracefully.
    Stop,
}

/// The signals taken, read in order.
pub struct Signals {
    /// The signalfd until the runtime runs, then registered with it.
    fd: Option<OwnedFd>,
    registered: Option<AsyncFd<OwnedFd>>,
}

/// The signals the daemon takes.
const TAKEN: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

impl Signals {
    /// Blocks the daemon's signals in the calling thread and every thread
    /// it starts from now on, and opens the signalfd they are read from.
    /// Call it before any other thread exists.
    pub fn take() -> io::Result<Signals> {
        let set = taken();
        // SAFETY: `set` is initialised; no previous mask is asked for.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new descriptor; `set` is initialised.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Signals {
            fd: Some(fd),
            registered: None,
        })
    }

    /// The next signal's request; `Stop` should the signalfd fail.
    pub async fn next(&mut self) -> Asked {
        match self.read().await {
            Ok(libc::SIGHUP) => Asked::Reload,
            Ok(_) => Asked::Stop,
            Err(error) => {
                tracing::error!(%error, "reading signals failed; stopping");
                Asked::Stop
            }
        }
    }

    /// The number of the next signal taken.
    async fn read(&mut self) -> io::Result<i32> {
        if let Some(fd) = self.fd.take() {
            // SAFETY: an OwnedFd keeps its descriptor open, and the same,
            // until the AsyncFd that owns it is dropped.
            let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
            self.registered = Some(registered?);
        }
        let registered = self.registered.as_ref().expect("registered above");
        loop {
            let mut ready = registered.readable().await?;
            // SAFETY: a C struct of integers, for which all zeros is valid.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let read = ready.try_io(|fd| {
                // SAFETY: `info` has room for one record of `size` bytes.
                let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut info).cast(), size) };
                match n {
                    n if n < 0 => Err(io::Error::last_os_error()),
                    _ => Ok(n as usize),
                }
            });
            match read {
                Ok(Ok(n)) if n == size => return Ok(info.ssi_signo as i32),
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }
}

fn taken() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset adds to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in TAKEN {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}
