//! Termination signals held back while the token's storage is written.
//!
//! A PKCS#11 module may write its store in place: SoftHSM 2.6's file backend
//! truncates and rewrites `token.object` on every C_Login, so a process that
//! dies in that instant leaves the file empty and the whole token, every key
//! on it, is gone. Ctrl-C, `kill` and systemd's stop all end a process that
//! has no handler at once. While a [`HeldSignals`] lives, SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT stay pending in the calling thread and take effect
//! when it is dropped, after the write. This covers the operators' commands,
//! whose only thread is the caller; the daemon, with many threads, blocks
//! them in all of them and reads them from a signalfd (`daemon::signals`). SIGKILL
//! cannot be held by anyone.

/// The signals held; dropping the value restores the thread's signal mask.
pub struct HeldSignals {
    previous: libc::sigset_t,
}

impl HeldSignals {
    /// Holds SIGINT, SIGTERM, SIGHUP and SIGQUIT in the calling thread.
    pub fn hold() -> HeldSignals {
        // SAFETY: the sets are initialised by sigemptyset before use, and
        // pthread_sigmask only reads `held` and writes `previous`.
        unsafe {
            let mut held: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut held);
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut held, signal);
            }
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &held, &mut previous);
            HeldSignals { previous }
        }
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `hold`; no pointer is kept.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(signal: libc::c_int) -> bool {
        // SAFETY: reads the current mask into an initialised set.
        unsafe {
            let mut current: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut current);
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current);
            libc::sigismember(&current, signal) == 1
        }
    }

    #[test]
    fn signals_are_held_while_the_value_lives_and_nested_holds_unwind() {
        assert!(!blocked(libc::SIGTERM));
        let outer = HeldSignals::hold();
        let inner = HeldSignals::hold();
        assert!(blocked(libc::SIGTERM) && blocked(libc::SIGINT));
        drop(inner);
        assert!(blocked(libc::SIGTERM), "the outer hold still holds");
        drop(outer);
        assert!(!blocked(libc::SIGTERM) && !blocked(libc::SIGINT));
    }
}
