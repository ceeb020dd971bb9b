//! sd_notify: telling systemd that the agent is ready, reloading, stopping,
//! and alive (the watchdog), through the `sd-notify` crate.

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use sd_notify::NotifyState;

/// Where notifications go; does nothing when not started by systemd.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or one that stays silent.
    pub fn from_env() -> Notifier {
        let enabled = match std::env::var_os("NOTIFY_SOCKET") {
            None => false,
            Some(path) if path.as_bytes().starts_with(b"/") => true,
            // systemd names a socket file; the crate reaches no abstract
            // socket (`@…`), and a relative path is no socket of systemd's.
            Some(other) => {
                tracing::warn!(socket = ?other, "$NOTIFY_SOCKET is not an absolute path (abstract sockets are not supported); systemd will not hear from the agent");
                false
            }
        };
        Notifier { enabled }
    }

    /// Start-up is complete: the HSM answered and the socket listens.
    pub fn ready(&self, status: &str) {
        // A value is one line: a newline would start another field.
        let status = status.replace('\n', " ");
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// A reload (SIGHUP) began; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        // systemd's Type=notify-reload fails a reload without MONOTONIC_USEC.
        let mut states = vec![NotifyState::Reloading];
        states.extend(NotifyState::monotonic_usec_now().ok());
        states.push(NotifyState::Status("reloading the configuration"));
        self.send(&states);
    }

    /// Shutdown began.
    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("finishing requests in flight"),
        ]);
    }

    /// The agent is alive and its HSM answers.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(states) {
            tracing::warn!(%error, "cannot notify systemd");
        }
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when that is set
/// for this process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|timeout| !timeout.is_zero())
        .map(|timeout| timeout / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::own_process;
    use std::os::unix::net::UnixDatagram;

    fn received(receiver: &UnixDatagram) -> String {
        let mut buffer = [0u8; 512];
        let n = receiver.recv(&mut buffer).expect("a notification");
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn systemd_hears_ready_reloading_stopping_and_the_watchdog() {
        if own_process::is_child() {
            let notifier = Notifier::from_env();
            notifier.ready("signing for ttd\nand more");
            notifier.reloading();
            notifier.stopping();
            notifier.watchdog();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let Ok(NotifyState::MonotonicUsec(before)) = NotifyState::monotonic_usec_now() else {
            panic!("no monotonic clock");
        };
        own_process::run(&[("NOTIFY_SOCKET", path.as_os_str())]);

        assert_eq!(
            received(&receiver),
            "READY=1\nSTATUS=signing for ttd and more\n"
        );
        let reloading = received(&receiver);
        let lines: Vec<&str> = reloading.lines().collect();
        assert_eq!(lines.len(), 3, "{reloading}");
        assert_eq!(lines[0], "RELOADING=1");
        let usec: i128 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .and_then(|usec| usec.parse().ok())
            .unwrap_or_else(|| panic!("{reloading}"));
        assert!(usec >= before, "the monotonic clock, in µs: {reloading}");
        assert_eq!(lines[2], "STATUS=reloading the configuration");
        assert_eq!(
            received(&receiver),
            "STOPPING=1\nSTATUS=finishing requests in flight\n"
        );
        assert_eq!(received(&receiver), "WATCHDOG=1\n");
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout_for_this_process_only() {
        if !own_process::is_child() {
            return own_process::run(&[]);
        }
        let interval = |usec: Option<&str>, pid: Option<u32>| {
            match usec {
                Some(usec) => std::env::set_var("WATCHDOG_USEC", usec),
                None => std::env::remove_var("WATCHDOG_USEC"),
            }
            match pid {
                Some(pid) => std::env::set_var("WATCHDOG_PID", pid.to_string()),
                None => std::env::remove_var("WATCHDOG_PID"),
            }
            watchdog_interval()
        };
        let ours = std::process::id();
        let half = Some(Duration::from_secs(15));
        assert_eq!(interval(Some("30000000"), None), half);
        assert_eq!(interval(Some("30000000"), Some(ours)), half);
        assert_eq!(interval(Some("30000000"), Some(ours + 1)), None);
        assert_eq!(interval(None, None), None);
        assert_eq!(interval(Some("0"), None), None);
        assert_eq!(interval(Some("soon"), None), None);
    }

    #[test]
    fn a_socket_that_is_no_absolute_path_is_left_alone() {
        if !own_process::is_child() {
            return own_process::run(&[]);
        }
        for socket in ["@access-token-agent-test", "notify.sock"] {
            std::env::set_var("NOTIFY_SOCKET", socket);
            assert!(!Notifier::from_env().enabled, "{socket}");
        }
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!Notifier::from_env().enabled);
    }
}
