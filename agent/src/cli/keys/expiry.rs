//! What `keys list` warns about ahead of expiry: an issuer's active
//! certificate within `[certificate] expiry_warning_days` of its notAfter,
//! and what takes over (or must) when it expires.

use std::collections::BTreeSet;

use super::pinned_kid;
use crate::config::Config;
use crate::hsm::key_pairs::{self as keys, KeyPair};

/// One line per issuer whose active certificate expires within the
/// warning window at `now`.
pub(super) fn warnings(config: &Config, pairs: &[KeyPair], now: i64) -> Vec<String> {
    let window = config.certificate.expiry_warning_seconds();
    let issuers: BTreeSet<&str> = pairs.iter().map(|pair| pair.issuer.as_str()).collect();
    issuers
        .into_iter()
        .filter_map(|issuer| {
            let pinned = pinned_kid(config, issuer);
            let active = keys::select_active(pairs, issuer, pinned, now)?;
            let (_, cert) = active.certificate.as_ref()?;
            if !cert.expires_within(now, window) {
                return None;
            }
            // Who signs the second after it expires, were nothing pinned.
            let next = keys::select_active(pairs, issuer, None, cert.not_after + 1);
            let then = match (pinned, next) {
                (Some(_), _) => "; it is pinned (`[[issuer]] kid`): pin its successor and reload the agent before then".to_owned(),
                (None, Some(next)) => format!(
                    "; kid {} takes over by then (valid from {}): make sure it is published",
                    next.kid(),
                    crate::clock::rfc3339(next.certificate.as_ref()?.1.not_before)
                ),
                (None, None) => format!(
                    "; renew it (`access-token-agent keys renew --issuer {issuer}`) or enrol a new key, and publish the new certificate"
                ),
            };
            Some(format!(
                "the active certificate of issuer {issuer:?} (kid {}) {}{then}",
                active.kid(),
                cert.expiry(now)
            ))
        })
        .collect()
}
