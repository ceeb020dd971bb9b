//! Prometheus text metrics: what `/metrics` shows.
//!
//! Counters with few, fixed labels live in small locked maps; the hot-path
//! counters (cache hits, issued tokens) are atomics.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;
use std::time::Duration;

/// Upper bounds of the signing latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// The agent's metrics, shared by the server and the signers.
#[derive(Debug, Default)]
pub struct Metrics {
    issued: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
    hsm_errors: Mutex<BTreeMap<String, u64>>,
    sessions_busy: AtomicI64,
    quick_signatures: AtomicU64,
    cert_not_after: Mutex<BTreeMap<(String, String), i64>>,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
    reload_incomplete: AtomicI64,
}

impl Metrics {
    /// A token was handed out.
    pub fn token_issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// A request got no token; `reason` is the problem type's short name.
    pub fn token_refused(&self, reason: &'static str) {
        *lock(&self.refused).entry(reason).or_default() += 1;
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// One `C_Sign` took `elapsed`.
    pub fn signed(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// A PKCS#11 call failed with `ckr` (e.g. `CKR_DEVICE_REMOVED`).
    pub fn hsm_error(&self, ckr: &str) {
        *lock(&self.hsm_errors).entry(ckr.to_owned()).or_default() += 1;
    }

    /// A signing session became busy (+1) or idle (-1).
    pub fn sessions_busy(&self, delta: i64) {
        self.sessions_busy.fetch_add(delta, Ordering::Relaxed);
    }

    /// A signature is being made on the requesting thread, not queued.
    pub fn quick_signature(&self) {
        self.quick_signatures.fetch_add(1, Ordering::Relaxed);
    }

    /// A reload ended as `outcome` (`whole`, `grants-only`, `refused`);
    /// `incomplete` while part of the configuration on disk is not in force.
    pub fn reloaded(&self, outcome: &'static str, incomplete: bool) {
        *lock(&self.reloads).entry(outcome).or_default() += 1;
        self.reload_incomplete
            .store(i64::from(incomplete), Ordering::Relaxed);
    }

    /// Replaces the set of active certificates: (issuer, kid, not-after).
    pub fn set_active_certificates(
        &self,
        certificates: impl IntoIterator<Item = (String, String, i64)>,
    ) {
        let mut map = lock(&self.cert_not_after);
        map.clear();
        for (issuer, kid, not_after) in certificates {
            map.insert((issuer, kid), not_after);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        single(&mut out, TOKENS_ISSUED, load(&self.issued));
        let refused = |(reason, count): (&&str, &u64)| (format!("reason=\"{reason}\""), *count);
        labelled(
            &mut out,
            TOKENS_REFUSED,
            lock(&self.refused).iter().map(refused),
        );
        single(&mut out, CACHE_HITS, load(&self.cache_hits));
        single(&mut out, CACHE_MISSES, load(&self.cache_misses));
        self.render_latency(&mut out);
        let error = |(ckr, count): (&String, &u64)| (format!("ckr=\"{ckr}\""), *count);
        labelled(
            &mut out,
            HSM_ERRORS,
            lock(&self.hsm_errors).iter().map(error),
        );
        single(
            &mut out,
            SESSIONS_BUSY,
            self.sessions_busy.load(Ordering::Relaxed),
        );
        single(&mut out, QUICK_SIGNATURES, load(&self.quick_signatures));
        let expiry = |((issuer, kid), not_after): (&(String, String), &i64)| {
            let issuer = escape_label(issuer);
            (format!("issuer=\"{issuer}\",kid=\"{kid}\""), *not_after)
        };
        labelled(
            &mut out,
            CERT_NOT_AFTER,
            lock(&self.cert_not_after).iter().map(expiry),
        );
        let reload = |(outcome, count): (&&str, &u64)| (format!("outcome=\"{outcome}\""), *count);
        labelled(&mut out, RELOADS, lock(&self.reloads).iter().map(reload));
        single(
            &mut out,
            RELOAD_INCOMPLETE,
            self.reload_incomplete.load(Ordering::Relaxed),
        );
        out
    }

    fn render_latency(&self, out: &mut String) {
        let name = "access_token_agent_signing_seconds";
        header(out, SIGNING_SECONDS);
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// A metric family: its name after `access_token_agent_`, type and help.
type Family = (&'static str, &'static str, &'static str);

const TOKENS_ISSUED: Family = ("tokens_issued_total", "counter", "Tokens handed out.");
const TOKENS_REFUSED: Family = (
    "tokens_refused_total",
    "counter",
    "Requests that got no token, by reason.",
);
const CACHE_HITS: Family = (
    "cache_hits_total",
    "counter",
    "Tokens served from the cache.",
);
const CACHE_MISSES: Family = (
    "cache_misses_total",
    "counter",
    "Requests that needed a fresh signature.",
);
const SIGNING_SECONDS: Family = ("signing_seconds", "histogram", "Time spent in C_Sign.");
const HSM_ERRORS: Family = (
    "hsm_errors_total",
    "counter",
    "Failed PKCS#11 calls, by return value.",
);
const SESSIONS_BUSY: Family = (
    "sessions_busy",
    "gauge",
    "Signing sessions inside a PKCS#11 call.",
);
const QUICK_SIGNATURES: Family = (
    "quick_signatures_total",
    "counter",
    "Signatures begun on the requesting thread instead of a signing thread (keys that sign in under 200 µs).",
);
const CERT_NOT_AFTER: Family = (
    "certificate_not_after_seconds",
    "gauge",
    "Expiry of each active certificate, Unix seconds.",
);

const RELOADS: Family = (
    "reloads_total",
    "counter",
    "Reloads (SIGHUP), by how much of the new configuration took effect: whole, grants-only, refused.",
);
const RELOAD_INCOMPLETE: Family = (
    "reload_incomplete",
    "gauge",
    "1 while the last reload left part of the configuration on disk out of force (see /readyz).",
);

fn header(out: &mut String, (name, kind, help): Family) {
    let _ = writeln!(
        out,
        "# HELP access_token_agent_{name} {help}\n# TYPE access_token_agent_{name} {kind}"
    );
}

/// A family without labels: its header and its one value.
fn single(out: &mut String, family: Family, value: impl Display) {
    header(out, family);
    let _ = writeln!(out, "access_token_agent_{} {value}", family.0);
}

/// A family with labels: its header and one line per (labels, value), the
/// labels already written as `key="value",…`.
fn labelled<V: Display>(
    out: &mut String,
    family: Family,
    samples: impl Iterator<Item = (String, V)>,
) {
    header(out, family);
    for (labels, value) in samples {
        let _ = writeln!(out, "access_token_agent_{}{{{labels}}} {value}", family.0);
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        metrics.set_active_certificates([("ttd".into(), "ABC".into(), 42)]);
        metrics.reloaded("grants-only", true);
        let text = metrics.render();
        assert!(text.contains("access_token_agent_tokens_issued_total 1\n"));
        assert!(
            text.contains("access_token_agent_tokens_refused_total{reason=\"not-granted\"} 2\n")
        );
        assert!(text.contains("access_token_agent_signing_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("access_token_agent_signing_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(
            text.contains("access_token_agent_hsm_errors_total{ckr=\"CKR_DEVICE_REMOVED\"} 1\n")
        );
        assert!(text.contains("certificate_not_after_seconds{issuer=\"ttd\",kid=\"ABC\"} 42\n"));
        assert!(text.contains("access_token_agent_reloads_total{outcome=\"grants-only\"} 1\n"));
        assert!(text.contains("access_token_agent_reload_incomplete 1\n"));
    }
}
