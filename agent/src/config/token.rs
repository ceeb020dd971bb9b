//! `[token]`: claims and lifetime of the tokens issued, and their caching.

use serde::Deserialize;

use crate::token::{Lifetime, MAX_LIFETIME_SECONDS};

/// The `[token]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    pub lifetime_seconds: i64,
    pub valid_from_adjustment_seconds: i64,
    pub audience: String,
    /// Serve a signed token again to later requests for the same issuer and app.
    pub cache: bool,
    /// A cached token is served while more than this fraction of its
    /// lifetime is left; after that the next request signs a new one.
    pub cache_refresh_remaining: f64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        let defaults = Lifetime::default();
        TokenConfig {
            lifetime_seconds: defaults.lifetime_seconds,
            valid_from_adjustment_seconds: defaults.valid_from_adjustment_seconds,
            audience: defaults.audience,
            cache: true,
            cache_refresh_remaining: 0.5,
        }
    }
}

impl TokenConfig {
    /// The settings the token builder takes.
    pub fn lifetime(&self) -> Lifetime {
        Lifetime {
            lifetime_seconds: self.lifetime_seconds,
            valid_from_adjustment_seconds: self.valid_from_adjustment_seconds,
            audience: self.audience.clone(),
        }
    }
}

impl TokenConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_LIFETIME_SECONDS).contains(&self.lifetime_seconds) {
            return Err(format!(
                "`token.lifetime_seconds` = {} must be from 1 to {MAX_LIFETIME_SECONDS} (one day); Altinn uses 300",
                self.lifetime_seconds
            ));
        }
        if self.valid_from_adjustment_seconds < -MAX_LIFETIME_SECONDS {
            return Err(format!(
                "`token.valid_from_adjustment_seconds` = {} must not be below -{MAX_LIFETIME_SECONDS} (one day before iat); Altinn uses -5",
                self.valid_from_adjustment_seconds
            ));
        }
        if self.valid_from_adjustment_seconds >= self.lifetime_seconds {
            return Err(format!(
                "`token.valid_from_adjustment_seconds` = {} must be less than `token.lifetime_seconds` = {}, or nbf would not be before exp (Altinn uses -5)",
                self.valid_from_adjustment_seconds, self.lifetime_seconds
            ));
        }
        if self.audience.is_empty() {
            return Err(
                "`token.audience` is empty; Altinn Platform expects \"platform.altinn.no\"".into(),
            );
        }
        let refresh = self.cache_refresh_remaining;
        if !(refresh > 0.0 && refresh < 1.0) {
            return Err(format!(
                "`token.cache_refresh_remaining` = {refresh} must lie between 0 and 1 (exclusive): the fraction of a token's lifetime that must be left for a cached token to be served again, e.g. 0.5"
            ));
        }
        Ok(())
    }
}
