//! One JSON audit line per issued or refused token request; never the token.
//!
//! Every line goes to `tracing` on the target [`TARGET`] as structured
//! fields, and, with `[audit] file`, is appended to that file as one JSON
//! object per line, written whole, by the file's own thread ([`writer`]).
//! Identical refusals from one peer are counted rather than written one by
//! one ([`repeats`]); issued tokens always get a line each.
//!
//! | module | what it owns |
//! |---|---|
//! | [`record`] | [`Record`]: the fields of one line, and the line |
//! | [`json`] | a JSON object written field by field |
//! | [`open`] | the file opened so that nobody else chooses where lines go: no symlink, no FIFO, a private directory |
//! | [`writer`] | the file, appended to in batches by one thread, in order, whole; a file that fails is retried and reported |
//! | [`outbox`] | the batch being written, and how far the file took it |
//! | [`repeats`] | identical refusals counted in windows |

pub mod json;
pub mod open;
pub mod outbox;
pub mod record;
pub mod repeats;
pub mod writer;

use std::time::Duration;

use super::problem::{Problem, ProblemKind};
use crate::config::AuditConfig;
use crate::metrics::AuditCounters;
pub use record::{Outcome, Record};
use repeats::{Repeats, Verdict};
use writer::Writer;

/// The `tracing` target of audit events.
pub const TARGET: &str = "access_token_agent::audit";

/// The message of every audit event.
pub const MESSAGE: &str = "token request";

/// Where the log's copy of each audit line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// To `tracing` as an event with fields (the journal keeps each field).
    Tracing,
    /// Straight to stderr as one JSON line in the log's own shape, when the
    /// log is JSON lines on stderr: a formatting layer's work per event was
    /// more than half of a cached token's cost.
    Stderr,
}

/// The audit sink.
#[derive(Debug)]
pub struct Audit {
    file: Option<Writer>,
    log: Log,
    repeats: Repeats,
    /// `[audit] required`: no token while the file cannot take lines.
    required: bool,
    counters: AuditCounters,
}

impl Audit {
    /// Opens the sink; with `[audit] file`, opens (or creates, mode 0640) that
    /// file for appending, and the error names the key and the path.
    pub fn open(config: &AuditConfig, log: Log) -> std::io::Result<Audit> {
        let repeats = Repeats::new(repeats::WINDOW);
        let counters = AuditCounters::default();
        let file = match &config.file {
            Some(path) => Some(Writer::open(path, counters.clone())?),
            None => None,
        };
        Ok(Audit {
            file,
            log,
            repeats,
            required: config.required,
            counters,
        })
    }

    /// The file's failures, for `/metrics` ([`crate::metrics::Metrics::with_audit`]).
    pub fn counters(&self) -> AuditCounters {
        self.counters.clone()
    }

    /// For `/readyz`: whether the audit file takes lines, and if not why
    /// and what to do. Always `Ok` without a file.
    pub fn health(&self) -> Result<(), String> {
        self.file.as_ref().map_or(Ok(()), Writer::health)
    }

    /// With `[audit] required = true`, the answer to a token request while
    /// the file cannot take lines: no token goes out without its line.
    pub fn refusal(&self) -> Option<Problem> {
        if !self.required {
            return None;
        }
        let reason = self.health().err()?;
        let detail = format!("{reason}; `audit.required` is set, so no token is issued until the lines can be written; retry later");
        Some(Problem::new(ProblemKind::AuditUnavailable, detail))
    }

    /// How often [`Audit::flush_repeats`] should run.
    pub fn repeat_interval(&self) -> Duration {
        self.repeats.interval()
    }

    /// Writes the count of every window of identical refusals that ended
    /// (of every window, `at_exit`).
    pub fn flush_repeats(&self, at_exit: bool) {
        for (kind, repeated) in self.repeats.ended(at_exit) {
            self.write(&kind.summary(repeated));
        }
    }

    /// At a clean stop: the counts of every open window written, and every
    /// line in the file when it returns.
    pub fn finish(&self) {
        self.flush_repeats(true);
        self.flush();
    }

    /// Returns once every line recorded so far is in the file (or the file
    /// cannot be written).
    pub fn flush(&self) {
        if let Some(file) = &self.file {
            file.flush();
        }
    }

    /// Reopens the audit file at its path, e.g. after log rotation moved it.
    pub fn reopen(&self) -> std::io::Result<()> {
        match &self.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }

    /// Writes one audit line to the log and, if configured, queues it for
    /// the file; a refusal like several written moments ago is counted
    /// instead.
    pub fn record(&self, record: &Record<'_>) {
        match self.repeats.note(record) {
            Verdict::Counted => {}
            Verdict::Write { ended } => {
                if let Some((kind, repeated)) = ended {
                    self.write(&kind.summary(repeated));
                }
                self.write(record);
            }
        }
    }

    fn write(&self, record: &Record<'_>) {
        match self.log {
            Log::Tracing => trace(record),
            Log::Stderr => {
                if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
                    to_stderr(record);
                }
            }
        }
        if let Some(file) = &self.file {
            file.queue(|queue| record.write_line(queue));
        }
    }
}

/// One line, in one write: lines from several threads never interleave.
fn to_stderr(record: &Record<'_>) {
    use std::io::Write as _;
    let mut line = Vec::with_capacity(384);
    record.write_log_line(&mut line);
    let _ = std::io::stderr().lock().write_all(&line);
}

fn trace(record: &Record<'_>) {
    tracing::info!(
        target: TARGET,
        uid = record.uid,
        gid = record.gid,
        pid = record.pid,
        unit = record.unit,
        exe = record.exe.as_deref(),
        issuer = record.issuer,
        app = record.app,
        kid = record.kid,
        exp = record.exp,
        cache_hit = record.cache_hit,
        outcome = record.outcome.as_str(),
        reason = record.reason,
        k8s_namespace = record.kubernetes.map(|pod| pod.namespace.as_str()),
        k8s_service_account = record.kubernetes.map(|pod| pod.service_account.as_str()),
        k8s_pod = record.kubernetes.map(|pod| pod.pod_name.as_str()),
        k8s_pod_uid = record.kubernetes.map(|pod| pod.pod_uid.as_str()),
        k8s_refusal = record.k8s_refusal,
        repeated = record.repeated,
        "token request"
    );
}

#[cfg(test)]
mod tests {
    use super::record::tests::{issued, peer, TOKEN};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn file_gets_whole_lines_and_a_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(
            &AuditConfig {
                file: Some(path.clone()),
                ..AuditConfig::default()
            },
            Log::Tracing,
        )
        .unwrap();
        let (peer, issued) = (peer(), issued());
        audit.record(&Record::issued(&peer, "ttd", "my-app", &issued));
        audit.record(&Record::refused(
            &peer,
            Some("ttd"),
            Some("x"),
            "not-granted",
        ));
        audit.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(TOKEN));
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "issued");
        assert_eq!(lines[1]["outcome"], "refused");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "audit file mode {mode:o} lets others in");
    }

    #[test]
    fn reopen_follows_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(
            &AuditConfig {
                file: Some(path.clone()),
                ..AuditConfig::default()
            },
            Log::Tracing,
        )
        .unwrap();
        let peer = peer();
        audit.record(&Record::refused(&peer, None, None, "bad-request"));
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        audit.reopen().unwrap();
        audit.record(&Record::refused(&peer, None, None, "not-granted"));
        audit.flush();
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert_eq!(fresh.lines().count(), 1);
        assert!(fresh.contains("not-granted"));
    }

    #[test]
    fn unopenable_file_is_named() {
        let err = Audit::open(
            &AuditConfig {
                file: Some("/nonexistent/dir/audit.log".into()),
                ..AuditConfig::default()
            },
            Log::Tracing,
        )
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("`audit.file` = /nonexistent/dir/audit.log"));
    }
}
