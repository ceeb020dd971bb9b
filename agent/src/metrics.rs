//! What `/metrics` shows, kept and written by `prometheus-client` in the
//! Prometheus text format (0.0.4).
//!
//! Counters and gauges are atomics: the cached path adds to two of them and
//! takes no lock. The labelled families take a read lock on a small map, and
//! the signing histogram a short mutex, only when the HSM signed.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::clock::unix_now;
use crate::sync::lock;

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the signing latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ckr {
    ckr: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadOutcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Certificate {
    issuer: String,
    kid: String,
}

/// The audit file's counters, which its writer thread adds to; clones
/// share the counts, so [`Metrics::with_audit`] shows the writer's.
#[derive(Debug, Clone, Default)]
pub struct AuditCounters {
    /// Writes to the audit file that failed (each retry counts).
    pub write_errors: Counter,
    /// Lines dropped because the file could not be written and the lines
    /// waiting for it filled their room in memory.
    pub lines_dropped: Counter,
}

/// The agent's metrics, shared by the server and the signers.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    issued: Counter,
    refused: Family<Reason, Counter>,
    paced: Family<Reason, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    signing: Histogram,
    hsm_errors: Family<Ckr, Counter>,
    sessions_busy: Gauge,
    signing_sessions: Gauge,
    sessions_opened: Counter,
    signing_timeouts: Counter,
    cert_not_after: Family<Certificate, Gauge>,
    reloads: Family<ReloadOutcome, Counter>,
    reload_incomplete: Gauge,
    cert_expiring: Family<Certificate, Gauge>,
    expiry_warning: Gauge,
    audit: AuditCounters,
    /// The active certificates and their expiry, from which `cert_expiring`
    /// is computed at each scrape. Held while the certificates are replaced
    /// and while they are written, so that a scrape never sees half a set.
    certificates: Mutex<Vec<(Certificate, i64)>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::with_audit(AuditCounters::default())
    }
}

impl Metrics {
    /// The metrics, showing the audit file's `audit` counters.
    pub fn with_audit(audit: AuditCounters) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("access_token_agent"),
            issued: Counter::default(),
            refused: Family::default(),
            paced: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            signing: Histogram::new(LATENCY_BUCKETS),
            hsm_errors: Family::default(),
            sessions_busy: Gauge::default(),
            signing_sessions: Gauge::default(),
            sessions_opened: Counter::default(),
            signing_timeouts: Counter::default(),
            cert_not_after: Family::default(),
            reloads: Family::default(),
            reload_incomplete: Gauge::default(),
            cert_expiring: Family::default(),
            expiry_warning: Gauge::default(),
            audit,
            certificates: Mutex::default(),
        };
        m.register_requests();
        m.register_signing();
        m.register_certificates();
        m.register_audit();
        m
    }
}

// Counters are named without `_total`, help without its final period: the
// library adds both.
impl Metrics {
    /// Tokens issued and refused, pacing, and the cache.
    fn register_requests(&mut self) {
        let r = &mut self.registry;
        r.register("tokens_issued", "Tokens handed out", self.issued.clone());
        r.register(
            "tokens_refused",
            "Requests that got no token, by reason",
            self.refused.clone(),
        );
        r.register(
            "requests_paced",
            "Requests that waited for their uid's turn, by reason (cache-miss, refusal)",
            self.paced.clone(),
        );
        r.register(
            "cache_hits",
            "Tokens served from the cache",
            self.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Requests that needed a fresh signature",
            self.cache_misses.clone(),
        );
    }

    /// Signing: its time, HSM errors, sessions, deadlines.
    fn register_signing(&mut self) {
        let r = &mut self.registry;
        r.register_with_unit(
            "signing",
            "Time spent in C_Sign",
            Unit::Seconds,
            self.signing.clone(),
        );
        r.register(
            "hsm_errors",
            "Failed PKCS#11 calls, by return value",
            self.hsm_errors.clone(),
        );
        r.register(
            "sessions_busy",
            "Signing sessions inside a PKCS#11 call",
            self.sessions_busy.clone(),
        );
        r.register(
            "signing_sessions",
            "Sessions open for signing threads: the cores, more while signatures wait on the HSM",
            self.signing_sessions.clone(),
        );
        r.register(
            "signing_sessions_opened",
            "Sessions signing threads opened since start: a count that climbs under steady load means sessions are closed and reopened",
            self.sessions_opened.clone(),
        );
        r.register(
            "signing_timeouts",
            "Requests answered 503 because their signature did not come back within signing.timeout_seconds",
            self.signing_timeouts.clone(),
        );
    }

    /// Certificates and reloads.
    fn register_certificates(&mut self) {
        let r = &mut self.registry;
        r.register_with_unit(
            "certificate_not_after",
            "Expiry of each active certificate, Unix seconds",
            Unit::Seconds,
            self.cert_not_after.clone(),
        );
        r.register(
            "reloads",
            "Reloads (SIGHUP), by how much of the new configuration took effect: whole, grants-only, refused",
            self.reloads.clone(),
        );
        r.register(
            "reload_incomplete",
            "1 while the last reload left part of the configuration on disk out of force (see /readyz)",
            self.reload_incomplete.clone(),
        );
        r.register(
            "certificate_expiring",
            "Whether each active certificate expires within the warning window (1) or not (0)",
            self.cert_expiring.clone(),
        );
        r.register_with_unit(
            "certificate_expiry_warning",
            "How long before its expiry a certificate counts as expiring ([certificate] expiry_warning_days)",
            Unit::Seconds,
            self.expiry_warning.clone(),
        );
    }

    /// The audit file's failures.
    fn register_audit(&mut self) {
        let r = &mut self.registry;
        r.register(
            "audit_write_errors",
            "Failed writes to the audit file (each retry counts); /readyz says 503 while lines wait",
            self.audit.write_errors.clone(),
        );
        r.register(
            "audit_lines_dropped",
            "Audit lines dropped because the audit file could not be written and the lines waiting filled their room",
            self.audit.lines_dropped.clone(),
        );
    }
}

impl Metrics {
    /// A token was handed out.
    pub fn token_issued(&self) {
        self.issued.inc();
    }

    /// A request got no token; `reason` is the problem type's short name.
    pub fn token_refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    /// A request waited for its uid's turn under `server.cache_misses_per_uid`
    /// (`cache-miss`), under `server.refusals_per_uid` (`refusal` for a
    /// refused token request, `other-route` for any other route,
    /// `unreadable` for a request hyper could not read), or for a place to
    /// sign (`signing`).
    pub fn request_paced(&self, reason: &'static str) {
        self.paced.get_or_create(&Reason { reason }).inc();
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// One `C_Sign` took `elapsed`.
    pub fn signed(&self, elapsed: Duration) {
        self.signing.observe(elapsed.as_secs_f64());
    }

    /// A PKCS#11 call failed with `ckr` (e.g. `CKR_DEVICE_REMOVED`).
    pub fn hsm_error(&self, ckr: &str) {
        let ckr = Ckr {
            ckr: ckr.to_owned(),
        };
        self.hsm_errors.get_or_create(&ckr).inc();
    }

    /// A signing session became busy (+1) or idle (-1).
    pub fn sessions_busy(&self, delta: i64) {
        self.sessions_busy.inc_by(delta);
    }

    /// A signing thread opened (+1) or closed (-1) its session.
    pub fn signing_sessions(&self, delta: i64) {
        self.signing_sessions.inc_by(delta);
        if delta > 0 {
            self.sessions_opened.inc_by(delta.unsigned_abs());
        }
    }

    /// A reload ended as `outcome` (`whole`, `grants-only`, `refused`);
    /// `incomplete` while part of the configuration on disk is not in force.
    pub fn reloaded(&self, outcome: &'static str, incomplete: bool) {
        self.reloads.get_or_create(&ReloadOutcome { outcome }).inc();
        self.reload_incomplete.set(i64::from(incomplete));
    }

    /// A request stopped waiting for its signature at the deadline.
    pub fn signing_timeout(&self) {
        self.signing_timeouts.inc();
    }

    /// Replaces the set of active certificates, (issuer, kid, not-after),
    /// and the warning window: how many seconds before its not-after a
    /// certificate counts as expiring.
    pub fn set_active_certificates(
        &self,
        certificates: impl IntoIterator<Item = (String, String, i64)>,
        warning_seconds: i64,
    ) {
        let mut whole_set = lock(&self.certificates);
        self.cert_not_after.clear();
        self.cert_expiring.clear();
        whole_set.clear();
        for (issuer, kid, not_after) in certificates {
            let labels = Certificate { issuer, kid };
            self.cert_not_after.get_or_create(&labels).set(not_after);
            whole_set.push((labels, not_after));
        }
        self.expiry_warning.set(warning_seconds);
    }

    /// The exposition, in the format [`CONTENT_TYPE`] names.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let whole_set = lock(&self.certificates);
        // Time passes between reloads: expiring is as of this scrape.
        let (now, window) = (unix_now(), self.expiry_warning.get());
        for (labels, not_after) in whole_set.iter() {
            let expiring = *not_after - now <= window;
            self.cert_expiring
                .get_or_create(labels)
                .set(i64::from(expiring));
        }
        if let Err(error) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "the metrics could not be written whole");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_exposition() {
        let metrics = Metrics::default();
        metrics.token_issued();
        metrics.token_refused("not-granted");
        metrics.token_refused("not-granted");
        metrics.signed(Duration::from_micros(700));
        metrics.hsm_error("CKR_DEVICE_REMOVED");
        metrics.sessions_busy(1);
        for delta in [1, 1, -1, 1] {
            metrics.signing_sessions(delta);
        }
        metrics.set_active_certificates([("ttd".into(), "ABC".into(), 42)], 86_400);
        metrics.reloaded("grants-only", true);
        let text = metrics.render();
        for line in [
            "access_token_agent_tokens_issued_total 1\n",
            "access_token_agent_tokens_refused_total{reason=\"not-granted\"} 2\n",
            "access_token_agent_signing_seconds_bucket{le=\"0.0005\"} 0\n",
            "access_token_agent_signing_seconds_bucket{le=\"0.001\"} 1\n",
            "access_token_agent_signing_seconds_bucket{le=\"1\"} 1\n",
            "access_token_agent_signing_seconds_bucket{le=\"+Inf\"} 1\n",
            "access_token_agent_signing_seconds_count 1\n",
            "access_token_agent_hsm_errors_total{ckr=\"CKR_DEVICE_REMOVED\"} 1\n",
            "access_token_agent_sessions_busy 1\n",
            "access_token_agent_signing_sessions 2\n",
            "access_token_agent_signing_sessions_opened_total 3\n",
            "access_token_agent_certificate_not_after_seconds{issuer=\"ttd\",kid=\"ABC\"} 42\n",
            "access_token_agent_reloads_total{outcome=\"grants-only\"} 1\n",
            "access_token_agent_reload_incomplete 1\n",
            "access_token_agent_certificate_expiring{issuer=\"ttd\",kid=\"ABC\"} 1\n",
            "access_token_agent_certificate_expiry_warning_seconds 86400\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn every_family_keeps_its_name_type_and_help() {
        // A labelled family is written once it has a member.
        let metrics = Metrics::default();
        metrics.token_refused("not-granted");
        metrics.hsm_error("CKR_DEVICE_REMOVED");
        metrics.set_active_certificates([("ttd".into(), "ABC".into(), 42)], 86_400);
        let text = metrics.render();
        for (name, kind) in [
            ("tokens_issued_total", "counter"),
            ("tokens_refused_total", "counter"),
            ("cache_hits_total", "counter"),
            ("cache_misses_total", "counter"),
            ("signing_seconds", "histogram"),
            ("hsm_errors_total", "counter"),
            ("sessions_busy", "gauge"),
            ("signing_sessions", "gauge"),
            ("signing_sessions_opened_total", "counter"),
            ("signing_timeouts_total", "counter"),
            ("certificate_not_after_seconds", "gauge"),
            ("certificate_expiring", "gauge"),
            ("certificate_expiry_warning_seconds", "gauge"),
        ] {
            let name = format!("access_token_agent_{name}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
        }
        assert!(text.contains("# HELP access_token_agent_tokens_issued_total Tokens handed out.\n"));
        assert!(!text.contains(".."), "one period after each help: {text}");
    }

    #[test]
    fn a_reload_replaces_the_certificates_whole() {
        let metrics = Metrics::default();
        metrics.set_active_certificates([("ttd".into(), "OLD".into(), 1)], 86_400);
        metrics.set_active_certificates([("ttd".into(), "NEW".into(), 2)], 86_400);
        let text = metrics.render();
        assert!(!text.contains("OLD"), "{text}");
        assert!(text.contains("kid=\"NEW\"} 2\n"), "{text}");
    }

    #[test]
    fn a_certificate_is_expiring_within_the_window_as_of_the_scrape() {
        let metrics = Metrics::default();
        let now = unix_now();
        metrics.set_active_certificates(
            [
                ("ttd".into(), "SOON".into(), now + 29 * 86_400),
                ("digdir".into(), "LATER".into(), now + 31 * 86_400),
            ],
            30 * 86_400,
        );
        let text = metrics.render();
        assert!(
            text.contains("expiring{issuer=\"ttd\",kid=\"SOON\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("expiring{issuer=\"digdir\",kid=\"LATER\"} 0\n"),
            "{text}"
        );
    }
}
