//! The agent's one TOML configuration file: parsing and validation.
//!
//! Every section is defined here, one file each, and validated on its own:
//! the parts of the agent that use a section import it from here, never the
//! other way round. Every refusal names the key (or file) that is wrong and
//! what to do about it, so that an operator can fix a config from the error
//! message alone.

mod audit;
mod certificate;
pub mod grant;
mod hsm;
mod issuer;
mod kubernetes;
mod server;
mod signing;
mod token;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use audit::AuditConfig;
pub use certificate::CertificateConfig;
pub use grant::{Apps, Grant, GrantConfig};
pub use hsm::HsmConfig;
pub use issuer::IssuerConfig;
pub use kubernetes::{KubernetesConfig, DEFAULT_AUDIENCE};
pub use server::{parse_mode, PerUidRate, ServerConfig};
pub use signing::SigningConfig;
pub use token::TokenConfig;

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/access-token-agent/agent.toml";
/// Overrides [`DEFAULT_PATH`].
pub const PATH_ENV: &str = "ACCESS_TOKEN_AGENT_CONFIG";

/// The whole configuration, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub hsm: HsmConfig,
    #[serde(default)]
    pub token: TokenConfig,
    /// Issuers this agent signs for, `[[issuer]]` in the file.
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub server: ServerConfig,
    /// Who may have which token, `[[grant]]` in the file.
    #[serde(default, rename = "grant")]
    pub grants: Vec<GrantConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub signing: SigningConfig,
    #[serde(default)]
    pub certificate: CertificateConfig,
    /// Pods as callers: how their service-account tokens are verified.
    /// Without it, no grant may name a Kubernetes identity.
    pub kubernetes: Option<KubernetesConfig>,
}

/// A configuration that cannot be used, with the fix in the message.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl Config {
    /// The path to read: `--config`, else `$ACCESS_TOKEN_AGENT_CONFIG`, else the default.
    pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
        match explicit {
            Some(path) => path.to_path_buf(),
            None => std::env::var_os(PATH_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
        }
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: format!(
                "cannot read it ({e}); pass --config PATH or set {PATH_ENV} to the agent's config file"
            ),
        })?;
        Config::parse(&text).map_err(|message| ConfigError {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and validates config text; the error is a message naming the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// The issuer's configuration, if it is configured.
    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|issuer| issuer.name == name)
    }

    fn validate(&mut self) -> Result<(), String> {
        self.hsm.validate()?;
        self.token.validate()?;
        self.signing.validate()?;
        self.certificate.validate()?;
        issuer::validate_issuers(&mut self.issuers)?;
        self.server.validate()?;
        self.audit.validate()?;
        if let Some(kubernetes) = &self.kubernetes {
            kubernetes.validate()?;
        }
        grant::resolve(&self.grants)?;
        grant::need_kubernetes(&self.grants, self.kubernetes.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Lifetime;

    /// A config whose module and PIN file exist, with `extra` appended.
    fn config_with(extra: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234\n").unwrap();
        let module = dir.path().join("module.so");
        std::fs::write(&module, "").unwrap();
        let text = format!(
            "[hsm]\nmodule = {module:?}\ntoken_label = \"access-tokens\"\npin_file = {pin:?}\n{extra}"
        );
        Config::parse(&text)
    }

    #[test]
    fn minimal_config_gets_altinn_defaults() {
        let config = config_with("[[issuer]]\nname = \"ttd\"\n").unwrap();
        assert_eq!(config.token.lifetime(), Lifetime::default());
        assert_eq!(config.issuers.len(), 1);
        assert!(config.issuer("ttd").is_some());
    }

    #[test]
    fn audit_required_needs_a_file() {
        let base = "[[issuer]]\nname = \"ttd\"\n[audit]\nrequired = true\n";
        let err = config_with(base).unwrap_err();
        assert!(
            err.contains("`audit.required`") && err.contains("`audit.file`"),
            "{err}"
        );
        let config = config_with(&format!("{base}file = \"/var/log/a/audit.log\"\n")).unwrap();
        assert!(config.audit.required);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = config_with("[token]\nlifetime = 300\n").unwrap_err();
        assert!(err.contains("unknown field `lifetime`"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = config_with("[token]\nlifetime_seconds = \"300\"\n").unwrap_err();
        assert!(err.contains("lifetime_seconds"), "{err}");
    }

    #[test]
    fn non_positive_lifetime_is_refused() {
        let err = config_with("[token]\nlifetime_seconds = 0\n").unwrap_err();
        assert!(err.contains("`token.lifetime_seconds` = 0"), "{err}");
    }

    #[test]
    fn lifetime_and_adjustment_beyond_a_day_are_refused() {
        let err = config_with("[token]\nlifetime_seconds = 9223372036854775807\n").unwrap_err();
        assert!(err.contains("from 1 to 86400"), "{err}");
        let err = config_with("[token]\nvalid_from_adjustment_seconds = -86401\n").unwrap_err();
        assert!(err.contains("valid_from_adjustment_seconds"), "{err}");
        let longest = config_with(
            "[token]\nlifetime_seconds = 86400\nvalid_from_adjustment_seconds = -86400\n",
        )
        .unwrap();
        assert_eq!(longest.token.lifetime_seconds, 86_400);
    }

    #[test]
    fn nbf_not_before_exp_is_refused() {
        let err =
            config_with("[token]\nlifetime_seconds = 10\nvalid_from_adjustment_seconds = 10\n")
                .unwrap_err();
        assert!(err.contains("valid_from_adjustment_seconds"), "{err}");
    }

    #[test]
    fn missing_pin_file_is_named() {
        let text =
            "[hsm]\nmodule = \"/bin/sh\"\ntoken_label = \"t\"\npin_file = \"/nonexistent/pin\"\n";
        let err = Config::parse(text).unwrap_err();
        assert!(err.contains("`hsm.pin_file` = /nonexistent/pin"), "{err}");
    }

    #[test]
    fn missing_module_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234").unwrap();
        let text = format!(
            "[hsm]\nmodule = \"/nonexistent/lib.so\"\ntoken_label = \"t\"\npin_file = {pin:?}\n"
        );
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("`hsm.module`"), "{err}");
    }

    #[test]
    fn pin_source_must_be_exactly_one() {
        let text = "[hsm]\nmodule = \"/bin/sh\"\ntoken_label = \"t\"\n";
        assert!(Config::parse(text).unwrap_err().contains("neither"));
        let both = text.to_owned() + "pin_file = \"/bin/sh\"\npin_credential = \"hsm-pin\"\n";
        assert!(Config::parse(&both).unwrap_err().contains("both"));
    }

    #[test]
    fn kid_is_checked_and_normalised() {
        let config = config_with(
            "[[issuer]]\nname = \"ttd\"\nkid = \"c5726728c38cfe6c16988454206b99ca29ae025e\"\n",
        )
        .unwrap();
        assert_eq!(
            config.issuers[0].kid.as_deref(),
            Some("C5726728C38CFE6C16988454206B99CA29AE025E")
        );
        let err = config_with("[[issuer]]\nname = \"ttd\"\nkid = \"abc\"\n").unwrap_err();
        assert!(err.contains("`issuer[0].kid`"), "{err}");
    }

    #[test]
    fn cache_defaults_and_refresh_point_are_checked() {
        let config = config_with("").unwrap();
        assert!(config.token.cache);
        assert_eq!(config.token.cache_refresh_remaining, 0.5);
        for bad in ["0.0", "1.0", "1.5", "-0.1"] {
            let err =
                config_with(&format!("[token]\ncache_refresh_remaining = {bad}\n")).unwrap_err();
            assert!(err.contains("`token.cache_refresh_remaining`"), "{err}");
        }
        let off = config_with("[token]\ncache = false\n").unwrap();
        assert!(!off.token.cache);
    }

    #[test]
    fn the_expiry_warning_defaults_to_30_days_and_is_checked() {
        let config = config_with("").unwrap();
        assert_eq!(config.certificate.expiry_warning_days, 30);
        assert_eq!(config.certificate.expiry_warning_seconds(), 30 * 86_400);
        let set = config_with("[certificate]\nexpiry_warning_days = 60\n").unwrap();
        assert_eq!(set.certificate.expiry_warning_days, 60);
        for bad in ["0", "-1", "3651"] {
            let err =
                config_with(&format!("[certificate]\nexpiry_warning_days = {bad}\n")).unwrap_err();
            assert!(err.contains("`certificate.expiry_warning_days`"), "{err}");
        }
        let err = config_with("[certificate]\nwarning_days = 5\n").unwrap_err();
        assert!(err.contains("unknown field `warning_days`"), "{err}");
    }

    #[test]
    fn the_example_config_is_valid() {
        // Its users and groups are placeholders; root exists everywhere.
        let text = include_str!("../../../hsm-config/agent.example.toml")
            .replace("user = \"my-app\"", "user = \"root\"")
            .replace("group = \"designer\"", "group = \"root\"");
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.token.lifetime(), Lifetime::default());
        assert_eq!(config.grants.len(), 2);
    }

    #[test]
    fn issuer_names_follow_the_request_name_rule() {
        for (name, why) in [
            ("", "is empty"),
            ("t d", "contains ' '"),
            ("ttd/x", "contains '/'"),
            ("tt\u{e6}", "contains 'æ'"),
        ] {
            let err = config_with(&format!("[[issuer]]\nname = \"{name}\"\n")).unwrap_err();
            assert!(err.contains("`issuer[0].name`"), "{err}");
            assert!(err.contains(why), "{name:?}: {err}");
        }
        let long = "x".repeat(crate::token::name::MAX_NAME_LEN + 1);
        let err = config_with(&format!("[[issuer]]\nname = \"{long}\"\n")).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        assert!(config_with("[[issuer]]\nname = \"digdir.test-1_a\"\n").is_ok());
    }

    #[test]
    fn kubernetes_grants_need_the_section_and_a_namespace() {
        let section = "[kubernetes]\njwks_file = \"/etc/jwks.json\"\nissuer = \"https://k8s\"\n";
        let grant = |keys: &str| format!("[[grant]]\n{keys}\nissuer = \"ttd\"\napps = [\"a\"]\n");
        let by_namespace = grant("k8s_namespace = \"apps\"\nk8s_service_account = \"my-app\"");
        let config = config_with(&format!("{section}{by_namespace}")).unwrap();
        assert_eq!(config.kubernetes.unwrap().audience, "access-token-agent");
        let err = config_with(&by_namespace).unwrap_err();
        assert!(
            err.contains("`grant[0].k8s_namespace`") && err.contains("[kubernetes]"),
            "{err}"
        );
        let err = config_with(&grant("uid = 1\nk8s_service_account = \"my-app\"")).unwrap_err();
        assert!(
            err.contains("`grant[0].k8s_service_account` is set without"),
            "{err}"
        );
        for (keys, key) in [
            ("k8s_namespace = \"Apps\"", "`grant[0].k8s_namespace`"),
            ("k8s_namespace = \"a.b\"", "`grant[0].k8s_namespace`"),
            ("k8s_namespace = \"-a\"", "`grant[0].k8s_namespace`"),
            (
                "k8s_namespace = \"a\"\nk8s_service_account = \"x_y\"",
                "`grant[0].k8s_service_account`",
            ),
        ] {
            let err = config_with(&format!("{section}{}", grant(keys))).unwrap_err();
            assert!(err.contains(key), "{keys}: {err}");
        }
        // Beside a uid, and a service account with dots.
        let both = grant("uid = 1000\nk8s_namespace = \"apps\"\nk8s_service_account = \"a.b-c\"");
        assert!(config_with(&format!("{section}{both}")).is_ok());
    }

    #[test]
    fn duplicate_issuer_is_refused() {
        let err =
            config_with("[[issuer]]\nname = \"ttd\"\n[[issuer]]\nname = \"ttd\"\n").unwrap_err();
        assert!(err.contains("configured twice"), "{err}");
    }
}
