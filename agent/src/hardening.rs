//! Process hardening applied before any secret is read: no core dumps and no
//! ptrace or /proc/PID/mem access by other processes of the same user.

/// Sets RLIMIT_CORE to 0 and PR_SET_DUMPABLE to 0.
pub fn apply() -> std::io::Result<()> {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid arguments and no pointers kept.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
