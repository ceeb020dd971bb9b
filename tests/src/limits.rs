//! Descriptors and resource limits of a process, read from /proc and set
//! the way systemd sets them for a service.

use std::time::{Duration, Instant};

/// How many descriptors process `pid` has open.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .count()
}

/// How many Unix stream sockets process `pid` has open: its listener and
/// one per connection it has accepted. Datagram sockets (such as the one a
/// notification to systemd opens for a moment) are not counted.
pub fn open_stream_sockets(pid: i32) -> usize {
    // Inode of every Unix stream socket in the process's network namespace.
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/net/unix: {e}"));
    let streams: std::collections::HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(4) == Some(&"0001")).then(|| fields.get(6).map(|f| f.to_string()))?
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .filter(|inode| streams.contains(inode))
        .count()
}

/// How many threads process `pid` runs (`Threads:` in /proc/PID/status).
pub fn threads(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Threads: line in /proc/{pid}/status"))
}

/// Waits until `pid` has at most `limit` descriptors open, for up to
/// `patience`; returns the last count.
pub fn wait_open_fds_at_most(pid: i32, limit: usize, patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    loop {
        let count = open_fds(pid);
        if count <= limit || Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Raises this process's soft open-files limit to its hard limit, for tests
/// that hold many connections; returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// `command` started with a soft open-files limit of `soft`, the way
/// systemd's default `LimitNOFILE=1024:524288` starts a service.
pub fn with_open_files_soft_limit(
    mut command: std::process::Command,
    soft: u64,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: getrlimit/setrlimit are async-signal-safe; this runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = soft.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// One line of /proc/PID/limits, e.g. `Max open files`: (soft, hard) as text.
pub fn proc_limit(pid: i32, name: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/limits: {e}"));
    let line = limits
        .lines()
        .find(|line| line.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} in {limits}"));
    let mut values = line[name.len()..].split_whitespace();
    let soft = values.next().unwrap_or_default().to_owned();
    let hard = values.next().unwrap_or_default().to_owned();
    (soft, hard)
}
