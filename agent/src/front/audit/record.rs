//! One audit line: who asked for what, and what they got; never the token.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::json::Object;
use crate::front::kubernetes::PodIdentity;
use crate::front::peer::Peer;
use crate::issue::Issued;

/// What became of a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug)]
pub struct Record<'a> {
    /// RFC 3339, UTC.
    pub time: Stamp,
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
    pub repeated: Option<u64>,
    /// The pod whose verified service-account token came with the request
    /// (`k8s_namespace`, `k8s_service_account`, `k8s_pod`, `k8s_pod_uid`).
    pub kubernetes: Option<&'a PodIdentity>,
    /// Why the request's service-account token was refused (`k8s_refusal`),
    /// e.g. `expired` or `other-pod`.
    pub k8s_refusal: Option<&'static str>,
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
            time: Stamp::now(),
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
            kubernetes: None,
            k8s_refusal: None,
        }
    }

    /// The same record for a request that proved `pod` with its token.
    pub fn for_pod(self, pod: Option<&'a PodIdentity>) -> Self {
        Record {
            kubernetes: pod,
            ..self
        }
    }

    /// The same record for a request whose token was refused for `reason`.
    pub fn kubernetes_refused(self, reason: &'static str) -> Self {
        Record {
            k8s_refusal: Some(reason),
            ..self
        }
    }

    /// The JSON line, newline included.
    #[cfg(test)]
    pub fn line(&self) -> String {
        let mut line = Vec::with_capacity(256);
        self.write_line(&mut line);
        String::from_utf8(line).expect("JSON written from strs is UTF-8")
    }

    /// Appends the JSON line, newline included, to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let mut object = Object::begin(out);
        object.raw_str("time", |out| self.time.write(out));
        self.write_fields(&mut object);
        object.end();
        out.push(b'\n');
    }

    /// Appends the line the log gets, newline included, to `out`: the
    /// shape of the agent's other JSON log lines (`timestamp`, `level`,
    /// `fields` with the `message`, `target`), written as the file's line
    /// is, without a logging layer's formatting machinery.
    pub fn write_log_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        self.time.write(out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":");
        let mut fields = Object::begin(out);
        fields.str("message", Some(super::MESSAGE));
        self.write_fields(&mut fields);
        fields.end();
        out.extend_from_slice(b",\"target\":\"");
        out.extend_from_slice(super::TARGET.as_bytes());
        out.extend_from_slice(b"\"}\n");
    }

    fn write_fields(&self, object: &mut Object<'_>) {
        object
            .int("uid", Some(i64::from(self.uid)))
            .int("gid", Some(i64::from(self.gid)))
            .int("pid", self.pid.map(i64::from))
            .str("unit", self.unit)
            .str("exe", self.exe.as_deref())
            .str("issuer", self.issuer)
            .str("app", self.app)
            .str("kid", self.kid)
            .int("exp", self.exp)
            .bool("cache_hit", self.cache_hit)
            .str("outcome", Some(self.outcome.as_str()))
            .str("reason", self.reason);
        // Only where Kubernetes had a say: other lines stay as they were.
        if let Some(pod) = self.kubernetes {
            object
                .str("k8s_namespace", Some(&pod.namespace))
                .str("k8s_service_account", Some(&pod.service_account))
                .str("k8s_pod", Some(&pod.pod_name))
                .str("k8s_pod_uid", Some(&pod.pod_uid));
        }
        if let Some(refusal) = self.k8s_refusal {
            object.str("k8s_refusal", Some(refusal));
        }
        if let Some(repeated) = self.repeated {
            object.int("repeated", i64::try_from(repeated).ok());
        }
    }
}

/// When a line's request was decided. Written as RFC 3339, UTC, to the
/// microsecond; the date and time of the current second are formatted once
/// per second and thread, since every line needs them.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(Duration);

impl Stamp {
    pub fn now() -> Stamp {
        Stamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// Appends the RFC 3339 text to `out`.
    pub fn write(self, out: &mut Vec<u8>) {
        thread_local! {
            static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
        }
        let secs = self.0.as_secs();
        SECOND.with(|second| {
            let mut second = second.borrow_mut();
            if second.0 != secs {
                *second = (secs, whole_second(secs));
            }
            out.extend_from_slice(second.1.as_bytes());
        });
        let micros = self.0.subsec_micros();
        out.push(b'.');
        for place in [100_000, 10_000, 1_000, 100, 10, 1] {
            out.push(b'0' + (micros / place % 10) as u8);
        }
        out.push(b'Z');
    }

    #[cfg(test)]
    pub fn text(self) -> String {
        let mut out = Vec::with_capacity(27);
        self.write(&mut out);
        String::from_utf8(out).expect("digits and punctuation")
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of the Unix second `secs`.
fn whole_second(secs: u64) -> String {
    let time = i64::try_from(secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut text = time.format(&Rfc3339).unwrap_or_default();
    text.truncate("YYYY-MM-DDTHH:MM:SS".len());
    text
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::front::peer::Process;
    use std::sync::Arc;

    pub const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0dGQifQ.c2lnbmF0dXJl";

    pub fn issued() -> Issued {
        Issued {
            token: Arc::from(TOKEN),
            kid: Arc::from("C5726728C38CFE6C16988454206B99CA29AE025E"),
            expires_at: 1_767_225_900,
            cache_hit: true,
        }
    }

    pub fn peer() -> Peer {
        Peer::new(1000, 1001, Some(4242)).with_process(Process {
            unit: Some("my-app.service".into()),
            exe: Some("/usr/bin/my-app".into()),
            ..Process::default()
        })
    }

    #[test]
    fn the_log_line_has_the_logs_shape_the_files_fields_and_no_token() {
        let (peer, issued) = (peer(), issued());
        let record = Record::issued(&peer, "ttd", "my-app", &issued);
        let mut out = Vec::new();
        record.write_log_line(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n") && !text.contains(TOKEN), "{text}");
        let log: serde_json::Value = serde_json::from_str(&text).unwrap();
        let file: serde_json::Value = serde_json::from_str(&record.line()).unwrap();
        assert_eq!(log["level"], "INFO");
        assert_eq!(log["target"], "access_token_agent::audit");
        assert_eq!(log["timestamp"], file["time"]);
        assert_eq!(log["fields"]["message"], "token request");
        for field in [
            "uid", "gid", "pid", "unit", "exe", "issuer", "app", "kid", "exp", "outcome",
        ] {
            assert_eq!(log["fields"][field], file[field], "{field}");
        }
        assert_eq!(log["fields"]["uid"], 1000);
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
    fn a_pods_line_names_the_pod_and_a_refused_token_its_reason() {
        let (peer, issued) = (peer(), issued());
        let pod = PodIdentity {
            namespace: "apps".into(),
            service_account: "my-app".into(),
            service_account_uid: "sa-uid".into(),
            pod_name: "my-app-7d9f".into(),
            pod_uid: "0f6b8a2e-3c1d-4e5f-9a7b-1c2d3e4f5a6b".into(),
        };
        let record = Record::issued(&peer, "ttd", "my-app", &issued).for_pod(Some(&pod));
        let mut log = Vec::new();
        record.write_log_line(&mut log);
        let log: serde_json::Value = serde_json::from_slice(&log).unwrap();
        let file: serde_json::Value = serde_json::from_str(&record.line()).unwrap();
        for (field, value) in [
            ("k8s_namespace", "apps"),
            ("k8s_service_account", "my-app"),
            ("k8s_pod", "my-app-7d9f"),
            ("k8s_pod_uid", "0f6b8a2e-3c1d-4e5f-9a7b-1c2d3e4f5a6b"),
        ] {
            assert_eq!(file[field], value, "{field}");
            assert_eq!(log["fields"][field], value, "{field}");
        }
        let refused = Record::refused(&peer, None, None, "kubernetes-token-refused")
            .kubernetes_refused("expired")
            .line();
        let json: serde_json::Value = serde_json::from_str(&refused).unwrap();
        assert_eq!(json["k8s_refusal"], "expired");
        assert!(json.get("k8s_namespace").is_none());
        // Lines without Kubernetes keep their shape.
        let plain = Record::issued(&peer, "ttd", "my-app", &issued).line();
        assert!(!plain.contains("k8s_"), "{plain}");
    }

    #[test]
    fn the_time_is_rfc_3339_and_now() {
        for _ in 0..3 {
            let before = OffsetDateTime::now_utc();
            let text = Stamp::now().text();
            let after = OffsetDateTime::now_utc();
            let parsed =
                OffsetDateTime::parse(&text, &Rfc3339).unwrap_or_else(|e| panic!("{text}: {e}"));
            // To the microsecond: truncated, never later than the clock.
            let micro = time::Duration::microseconds(1);
            assert!(
                parsed + micro > before && parsed <= after,
                "{before} <= {text} <= {after}"
            );
            assert!(text.ends_with('Z') && is_rfc3339_utc(&text), "{text}");
        }
    }
}
