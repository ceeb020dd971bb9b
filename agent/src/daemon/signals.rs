//! The daemon's signals, taken by one thread of their own. SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT are blocked in every thread (the mask is set before
//! the first one is started, and threads inherit it) and read with
//! `sigwait` on this one. No signal therefore ends the process with its
//! default action while another thread is inside C_Login, whose SoftHSM
//! rewrites `token.object` in place: a stop asked for meanwhile waits for
//! the login, as the held signals of the operators' commands do
//! ([`crate::hsm::held_signals`]).

use tokio::sync::mpsc;

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGHUP: reopen the audit file and reload.
    Reload,
    /// SIGTERM, SIGINT or SIGQUIT: stop gracefully.
    Stop,
}

/// The signals taken so far, in order.
pub struct Signals {
    asked: mpsc::UnboundedReceiver<Asked>,
}

/// The signals the daemon takes.
const TAKEN: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

impl Signals {
    /// Blocks the daemon's signals in the calling thread and every thread
    /// it starts from now on, and starts the thread that takes them. Call
    /// it before any other thread exists.
    pub fn take() -> std::io::Result<Signals> {
        let set = taken();
        // SAFETY: `set` is initialised; no previous mask is asked for.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        let (sender, asked) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut signal = 0;
                // SAFETY: `set` and `signal` are valid for sigwait to read and write.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                let asked = match signal {
                    libc::SIGHUP => Asked::Reload,
                    _ => Asked::Stop,
                };
                if sender.send(asked).is_err() {
                    return;
                }
            })?;
        Ok(Signals { asked })
    }

    /// The next signal's request; `Stop` once the taking thread is gone.
    pub async fn next(&mut self) -> Asked {
        self.asked.recv().await.unwrap_or(Asked::Stop)
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
