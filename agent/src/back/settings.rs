//! The part of the configuration the signing back works from.

use std::sync::Arc;

use super::cache::Cache;
use crate::config::{Config, HsmConfig, IssuerConfig, SigningConfig};
use crate::token::Lifetime;

/// The part of the configuration the signing back works from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hsm: HsmConfig,
    pub issuers: Vec<IssuerConfig>,
    pub lifetime: Arc<Lifetime>,
    pub cache: bool,
    pub cache_refresh_remaining: f64,
    pub signing: SigningConfig,
    /// How long before its expiry a certificate is warned about.
    pub expiry_warning_seconds: i64,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            hsm: config.hsm.clone(),
            issuers: config.issuers.clone(),
            lifetime: Arc::new(config.token.lifetime()),
            cache: config.token.cache,
            cache_refresh_remaining: config.token.cache_refresh_remaining,
            signing: config.signing.clone(),
            expiry_warning_seconds: config.certificate.expiry_warning_seconds(),
        }
    }

    pub fn new_cache(&self) -> Cache {
        Cache::new(self.lifetime.lifetime_seconds, self.cache_refresh_remaining)
    }

    pub fn has_issuer(&self, name: &str) -> bool {
        self.issuers.iter().any(|issuer| issuer.name == name)
    }
}
