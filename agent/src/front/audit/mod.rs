//! One JSON audit line per issued or refused token request; never the token.
//!
//! Every line goes to `tracing` on the target [`TARGET`] as structured
//! fields, and, with `[audit] file`, is appended to that file as one JSON
//! object per line, written whole. Identical refusals from one peer are
//! counted rather than written one by one ([`repeats`]); issued tokens
//! always get a line each.

pub mod repeats;

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::peer::Peer;
use crate::config::AuditConfig;
use crate::issue::Issued;
use crate::sync::lock;
use repeats::{Repeats, Verdict};

/// The `tracing` target of audit events.
pub const TARGET: &str = "access_token_agent::audit";

/// Mode of a newly created audit file: the agent writes, its group reads.
const FILE_MODE: u32 = 0o640;

/// The audit sink.
#[derive(Debug)]
pub struct Audit {
    file: Option<AuditFile>,
    repeats: Repeats,
}

#[derive(Debug)]
struct AuditFile {
    path: PathBuf,
    file: Mutex<File>,
}

/// What became of a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Issued,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Refused => "refused",
        }
    }
}

/// One audit line: who asked for what, and what they got (never the token).
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// The peer's systemd unit, when known (whatever the grant matched on).
    pub unit: Option<&'a str>,
    /// The peer's executable, when known: another user's needs CAP_SYS_PTRACE.
    pub exe: Option<Cow<'a, str>>,
    pub issuer: Option<&'a str>,
    pub app: Option<&'a str>,
    pub kid: Option<&'a str>,
    /// The token's `exp`, Unix seconds.
    pub exp: Option<i64>,
    pub cache_hit: Option<bool>,
    pub outcome: Outcome,
    /// The problem type's short name when refused.
    pub reason: Option<&'static str>,
    /// On a line that sums up a window: how many more refusals like it
    /// came, and were not written, after the ones written in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
}

impl<'a> Record<'a> {
    /// A token handed out. Takes the whole [`Issued`] and keeps all of it but the token.
    pub fn issued(peer: &'a Peer, issuer: &'a str, app: &'a str, issued: &'a Issued) -> Self {
        Record {
            kid: Some(&issued.kid),
            exp: Some(issued.expires_at),
            cache_hit: Some(issued.cache_hit),
            outcome: Outcome::Issued,
            ..Record::about(peer, Some(issuer), Some(app))
        }
    }

    /// A request that got no token, for `reason` (a problem short name).
    pub fn refused(
        peer: &'a Peer,
        issuer: Option<&'a str>,
        app: Option<&'a str>,
        reason: &'static str,
    ) -> Self {
        Record {
            reason: Some(reason),
            ..Record::about(peer, issuer, app)
        }
    }

    fn about(peer: &'a Peer, issuer: Option<&'a str>, app: Option<&'a str>) -> Self {
        let process = peer.process();
        Record {
            time: now_rfc3339(),
            uid: peer.uid,
            gid: peer.gid,
            pid: peer.pid,
            unit: process.unit.as_deref(),
            exe: process.exe.as_deref().map(Path::to_string_lossy),
            issuer,
            app,
            kid: None,
            exp: None,
            cache_hit: None,
            outcome: Outcome::Refused,
            reason: None,
            repeated: None,
        }
    }

    /// The JSON line, newline included.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("an audit record always serialises");
        line.push('\n');
        line
    }
}

impl Audit {
    /// Opens the sink; with `[audit] file`, opens (or creates, mode 0640) that
    /// file for appending, and the error names the key and the path.
    pub fn open(config: &AuditConfig) -> std::io::Result<Audit> {
        let repeats = Repeats::new(repeats::WINDOW);
        let file = match &config.file {
            Some(path) => Some(AuditFile {
                path: path.clone(),
                file: Mutex::new(open_append(path)?),
            }),
            None => None,
        };
        Ok(Audit { file, repeats })
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

    /// Reopens the audit file at its path, e.g. after log rotation moved it.
    pub fn reopen(&self) -> std::io::Result<()> {
        if let Some(audit) = &self.file {
            let fresh = open_append(&audit.path)?;
            *lock(&audit.file) = fresh;
        }
        Ok(())
    }

    /// Writes one audit line to the log and, if configured, to the file;
    /// a refusal like several written moments ago is counted instead.
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
            repeated = record.repeated,
            "token request"
        );
        if let Some(audit) = &self.file {
            let line = record.line();
            if let Err(e) = lock(&audit.file).write_all(line.as_bytes()) {
                tracing::error!(
                    "cannot append to the audit file {}: {e}",
                    audit.path.display()
                );
            }
        }
    }
}

/// Now, as audit lines write it: RFC 3339, UTC.
fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Opens `path` for appending. A file it creates gets [`FILE_MODE`] set on
/// the descriptor, so that systemd's `UMask=0077` does not leave the group
/// unable to read it; an existing file keeps the mode it has.
fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let append = |create_new: bool| {
        std::fs::OpenOptions::new()
            .append(true)
            .create_new(create_new)
            .mode(FILE_MODE)
            .open(path)
    };
    let opened = match append(true) {
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .map(|()| file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => append(false),
        Err(e) => Err(e),
    };
    opened.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "`audit.file` = {}: cannot open it for appending ({e}); create its directory or fix the path",
                path.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::peer::Process;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0dGQifQ.c2lnbmF0dXJl";

    fn issued() -> Issued {
        Issued {
            token: Arc::from(TOKEN),
            kid: Arc::from("C5726728C38CFE6C16988454206B99CA29AE025E"),
            expires_at: 1_767_225_900,
            cache_hit: true,
        }
    }

    fn peer() -> Peer {
        Peer::new(1000, 1001, Some(4242)).with_process(Process {
            unit: Some("my-app.service".into()),
            exe: Some("/usr/bin/my-app".into()),
            groups: vec![],
        })
    }

    #[test]
    fn issued_line_has_every_field_and_not_the_token() {
        let (peer, issued) = (peer(), issued());
        let line = Record::issued(&peer, "ttd", "my-app", &issued).line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        for part in TOKEN.split('.') {
            assert!(!line.contains(part), "token part {part} in {line}");
        }
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["uid"], 1000);
        assert_eq!(json["gid"], 1001);
        assert_eq!(json["pid"], 4242);
        assert_eq!(json["unit"], "my-app.service");
        assert_eq!(json["exe"], "/usr/bin/my-app");
        assert_eq!(json["issuer"], "ttd");
        assert_eq!(json["app"], "my-app");
        assert_eq!(json["kid"], "C5726728C38CFE6C16988454206B99CA29AE025E");
        assert_eq!(json["exp"], 1_767_225_900);
        assert_eq!(json["cache_hit"], true);
        assert_eq!(json["outcome"], "issued");
        assert!(json["reason"].is_null());
        let time = json["time"].as_str().unwrap();
        assert!(is_rfc3339_utc(time), "{time}");
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, this year.
    fn is_rfc3339_utc(time: &str) -> bool {
        let year = OffsetDateTime::now_utc().year().to_string();
        let shape = time.bytes().take(19).enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
        let rest = &time[19..];
        let fraction = rest.strip_prefix('.').unwrap_or("0Z");
        shape
            && time.starts_with(&year)
            && rest.ends_with('Z')
            && fraction[..fraction.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit())
    }

    #[test]
    fn refused_line_names_the_reason() {
        let peer = Peer::new(65534, 65534, None);
        let line = Record::refused(&peer, Some("ttd"), None, "not-granted").line();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["reason"], "not-granted");
        assert_eq!(json["uid"], 65534);
        assert!(json["app"].is_null() && json["kid"].is_null() && json["unit"].is_null());
    }

    #[test]
    fn file_gets_whole_lines_and_a_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(&AuditConfig {
            file: Some(path.clone()),
        })
        .unwrap();
        let (peer, issued) = (peer(), issued());
        audit.record(&Record::issued(&peer, "ttd", "my-app", &issued));
        audit.record(&Record::refused(
            &peer,
            Some("ttd"),
            Some("x"),
            "not-granted",
        ));
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
        let audit = Audit::open(&AuditConfig {
            file: Some(path.clone()),
        })
        .unwrap();
        let peer = peer();
        audit.record(&Record::refused(&peer, None, None, "bad-request"));
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        audit.reopen().unwrap();
        audit.record(&Record::refused(&peer, None, None, "not-granted"));
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert_eq!(fresh.lines().count(), 1);
        assert!(fresh.contains("not-granted"));
    }

    #[test]
    fn unopenable_file_is_named() {
        let err = Audit::open(&AuditConfig {
            file: Some("/nonexistent/dir/audit.log".into()),
        })
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("`audit.file` = /nonexistent/dir/audit.log"));
    }
}
