//! Where log lines go. The daemon logs to journald's native protocol when
//! its stderr is the journal's stream (`$JOURNAL_STREAM`, set by systemd), so
//! that every field is a journal field (`journalctl -u access-token-agent
//! OUTCOME=refused`); otherwise JSON lines on stderr. The operator commands
//! log only warnings, as text on stderr.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The variable that overrides the log filter, e.g. `debug`.
pub const FILTER_ENV: &str = "ACCESS_TOKEN_AGENT_LOG";

/// Installs the logger: for the daemon (`serve`) or an operator command.
/// Returns whether the log is JSON lines on stderr (the daemon outside the
/// journal), which audit lines may then be written to directly.
pub fn init(daemon: bool) -> bool {
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    if daemon && stderr_is_journal() {
        // Field names as they are (OUTCOME, ISSUER, …), not journald's
        // default F_ prefix, so that operators can select by them.
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal.with_field_prefix(None);
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journal)
                    .init();
                return false;
            }
            Err(error) => eprintln!(
                "access-token-agent: cannot log to journald ({error}); logging JSON to stderr"
            ),
        }
    }
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if daemon {
        logger.json().init();
    } else {
        logger.init();
    }
    daemon
}

/// Whether stderr is the stream `$JOURNAL_STREAM` names (`DEVICE:INODE`):
/// systemd sets it for services whose output goes to the journal, and a
/// process whose stderr was redirected since must not log there instead.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(file) = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
    else {
        return false;
    };
    file.metadata()
        .is_ok_and(|meta| names_stream(&value, meta.dev(), meta.ino()))
}

fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_stream_is_recognised_by_device_and_inode() {
        assert!(names_stream("8:1234", 8, 1234));
        assert!(!names_stream("8:1234", 8, 1235));
        assert!(!names_stream("9:1234", 8, 1234));
        assert!(!names_stream("garbage", 8, 1234));
        assert!(!names_stream("", 0, 0));
    }
}
