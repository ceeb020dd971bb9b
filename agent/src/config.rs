//! The agent's one TOML configuration file: parsing and validation.
//!
//! Every refusal names the key (or file) that is wrong and what to do about
//! it, so that an operator can fix a config from the error message alone.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::token::{Lifetime, MAX_LIFETIME_SECONDS};

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
    pub server: crate::server::ServerConfig,
    /// Who may have which token, `[[grant]]` in the file.
    #[serde(default, rename = "grant")]
    pub grants: Vec<crate::policy::GrantConfig>,
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    #[serde(default)]
    pub signing: crate::signer::SigningConfig,
}

/// `[hsm]`: which PKCS#11 token holds the keys, and how to log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// The token is found by label because slot ids change when tokens are added.
    pub token_label: String,
    /// File holding the user PIN; a trailing newline is ignored.
    pub pin_file: Option<PathBuf>,
    /// Name of a systemd credential (`LoadCredential=`) holding the PIN.
    pub pin_credential: Option<String>,
}

/// `[token]`: claims and lifetime of the tokens issued, and their caching.
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

/// `[[issuer]]`: one `iss` value the agent signs for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim; the issuer's key and certificate carry it as CKA_LABEL.
    pub name: String,
    /// Pins one certificate (upper-case hex SHA-1 thumbprint) as the active one.
    pub kid: Option<String>,
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
        validate_issuers(&mut self.issuers)?;
        self.server.validate()?;
        crate::policy::Policy::from_config(&self.grants).map(drop)
    }
}

impl HsmConfig {
    fn validate(&self) -> Result<(), String> {
        if self.token_label.trim().is_empty() {
            return Err("`hsm.token_label` is empty; set it to the label the token was initialised with (softhsm2-util --show-slots lists them)".into());
        }
        match (&self.pin_file, &self.pin_credential) {
            (None, None) => Err("`[hsm]` has neither `pin_file` nor `pin_credential`; set one so the agent can log in to the token".into()),
            (Some(_), Some(_)) => Err("`[hsm]` sets both `pin_file` and `pin_credential`; keep one of them".into()),
            (Some(file), None) if !file.is_file() => Err(format!(
                "`hsm.pin_file` = {}: no such file; create it with the user PIN (mode 0600) or fix the path",
                file.display()
            )),
            (None, Some(name)) if name.is_empty() || name.contains('/') => Err(format!(
                "`hsm.pin_credential` = {name:?} is not a credential name; use the name given to LoadCredential= (no slashes)"
            )),
            _ if !self.module.is_file() => Err(format!(
                "`hsm.module` = {}: no such file; install the PKCS#11 module (for SoftHSM: apt-get install softhsm2) or fix the path",
                self.module.display()
            )),
            _ => Ok(()),
        }
    }
}

impl TokenConfig {
    fn validate(&self) -> Result<(), String> {
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

fn validate_issuers(issuers: &mut [IssuerConfig]) -> Result<(), String> {
    for (index, issuer) in issuers.iter_mut().enumerate() {
        // The same rule as for the names apps ask for: an issuer that no
        // request can name would never be served.
        crate::policy::check_name(&issuer.name).map_err(|why| {
            format!(
                "`issuer[{index}].name` = {:?} {why}; set the org code, e.g. \"ttd\"",
                issuer.name
            )
        })?;
        if let Some(kid) = &mut issuer.kid {
            if kid.len() != 40 || !kid.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "`issuer[{index}].kid` = {kid:?} is not a certificate thumbprint; use the 40 hex digits `access-token-agent keys list` shows"
                ));
            }
            kid.make_ascii_uppercase();
        }
    }
    for (index, issuer) in issuers.iter().enumerate() {
        if issuers[..index]
            .iter()
            .any(|other| other.name == issuer.name)
        {
            return Err(format!(
                "`issuer[{index}].name` = {:?} is configured twice; keep one `[[issuer]]` per name",
                issuer.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_example_config_is_valid() {
        // Its users and groups are placeholders; root exists everywhere.
        let text = include_str!("../../hsm-config/agent.example.toml")
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
        let long = "x".repeat(crate::policy::MAX_NAME_LEN + 1);
        let err = config_with(&format!("[[issuer]]\nname = \"{long}\"\n")).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        assert!(config_with("[[issuer]]\nname = \"digdir.test-1_a\"\n").is_ok());
    }

    #[test]
    fn duplicate_issuer_is_refused() {
        let err =
            config_with("[[issuer]]\nname = \"ttd\"\n[[issuer]]\nname = \"ttd\"\n").unwrap_err();
        assert!(err.contains("configured twice"), "{err}");
    }
}
