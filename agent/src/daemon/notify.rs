//! sd_notify: telling systemd that the agent is ready, reloading, stopping,
//! and alive (the watchdog).
//!
//! Written by hand over a Unix datagram socket: the protocol is one datagram
//! of `KEY=VALUE` lines to the socket named in `$NOTIFY_SOCKET`, a path or,
//! with a leading `@`, an abstract socket.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; does nothing when not started by systemd.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or one that stays silent.
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        match address(&value).and_then(|addr| Ok((UnixDatagram::unbound()?, addr))) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(error) => {
                tracing::warn!(socket = ?value, %error, "cannot use $NOTIFY_SOCKET; systemd will not hear from the agent");
                Notifier { target: None }
            }
        }
    }

    /// Start-up is complete: the HSM answered and the socket listens.
    pub fn ready(&self, status: &str) {
        self.send(&message(&[("READY", "1"), ("STATUS", status)]));
    }

    /// A reload (SIGHUP) began; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        let now = monotonic_usec().to_string();
        self.send(&message(&[
            ("RELOADING", "1"),
            ("MONOTONIC_USEC", &now),
            ("STATUS", "reloading the configuration"),
        ]));
    }

    /// Shutdown began.
    pub fn stopping(&self) {
        self.send(&message(&[
            ("STOPPING", "1"),
            ("STATUS", "finishing requests in flight"),
        ]));
    }

    /// The agent is alive and its HSM answers.
    pub fn watchdog(&self) {
        self.send(&message(&[("WATCHDOG", "1")]));
    }

    fn send(&self, message: &str) {
        if let Some((socket, address)) = &self.target {
            if let Err(error) = socket.send_to_addr(message.as_bytes(), address) {
                tracing::warn!(%error, "cannot notify systemd");
            }
        }
    }
}

/// One notification datagram: a `KEY=VALUE` line per field. Values are one
/// line each, so newlines inside them become spaces.
pub fn message(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        out.push_str(key);
        out.push('=');
        out.extend(value.chars().map(|c| if c == '\n' { ' ' } else { c }));
        out.push('\n');
    }
    out
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when that is set
/// for this process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok().filter(|&usec| usec > 0)?;
    Some(Duration::from_micros(usec / 2))
}

fn address(value: &OsStr) -> io::Result<SocketAddr> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(value),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract socket name (@…)",
        )),
    }
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_one_line_per_field() {
        assert_eq!(
            message(&[("READY", "1"), ("STATUS", "signing for ttd\nand more")]),
            "READY=1\nSTATUS=signing for ttd and more\n"
        );
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout_for_this_process_only() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(None, None, 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
    }

    fn received(receiver: &UnixDatagram) -> String {
        let mut buffer = [0u8; 512];
        let n = receiver.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifies_a_socket_given_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                address(path.as_os_str()).unwrap(),
            )),
        };
        notifier.ready("signing for ttd");
        assert_eq!(received(&receiver), "READY=1\nSTATUS=signing for ttd\n");
        notifier.reloading();
        let reloading = received(&receiver);
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("access-token-agent-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                address(OsStr::new(&format!("@{name}"))).unwrap(),
            )),
        };
        notifier.watchdog();
        assert_eq!(received(&receiver), "WATCHDOG=1\n");
    }

    #[test]
    fn a_relative_name_is_refused() {
        assert!(address(OsStr::new("notify.sock")).is_err());
    }
}
