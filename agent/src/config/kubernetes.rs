//! `[kubernetes]`: pods as callers, proven by their projected
//! service-account token (see [`crate::front::kubernetes`]).
//!
//! ```toml
//! [kubernetes]
//! jwks_file = "/etc/access-token-agent/kubernetes/jwks.json"  # kubectl get --raw /openid/v1/jwks
//! issuer = "https://kubernetes.default.svc.cluster.local"     # the cluster's service-account issuer
//! audience = "access-token-agent"                               # the projected volume's audience
//! bind_to_pod = true     # the caller's pod UID (/proc/PID/cgroup) must be the token's
//! ```

use std::path::PathBuf;

use serde::Deserialize;

/// The audience a projected token must carry unless `audience` says otherwise.
pub const DEFAULT_AUDIENCE: &str = "access-token-agent";

/// The `[kubernetes]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The cluster's service-account issuer keys, a JWKS (`kubectl get
    /// --raw /openid/v1/jwks`, e.g. from a ConfigMap). Reloaded on SIGHUP
    /// and when the file changes.
    pub jwks_file: PathBuf,
    /// The cluster's service-account issuer (`--service-account-issuer`),
    /// which the token's `iss` must equal.
    pub issuer: String,
    /// What the token's `aud` must contain: the projected volume's
    /// `audience`.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Whether the caller's pod, read from its cgroup, must be the token's
    /// pod. Off, a token alone is enough, from whichever process sends it:
    /// only for an agent that cannot see host pids (no `hostPID`).
    #[serde(default = "default_bind_to_pod")]
    pub bind_to_pod: bool,
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.into()
}

fn default_bind_to_pod() -> bool {
    true
}

impl KubernetesConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !self.jwks_file.is_absolute() {
            return Err(format!(
                "`kubernetes.jwks_file` = {:?} is not an absolute path; write the JWKS file's full path",
                self.jwks_file
            ));
        }
        if self.issuer.trim().is_empty() || self.issuer != self.issuer.trim() {
            return Err(format!(
                "`kubernetes.issuer` = {:?} is not an issuer; set the cluster's service-account issuer, the `iss` of its tokens (kubectl get --raw /.well-known/openid-configuration shows it)",
                self.issuer
            ));
        }
        if self.audience.trim().is_empty() || self.audience != self.audience.trim() {
            return Err(format!(
                "`kubernetes.audience` = {:?} is not an audience; set the projected token's `audience`, or leave it out for {DEFAULT_AUDIENCE:?}",
                self.audience
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KubernetesConfig, String> {
        let config: KubernetesConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn defaults_and_required_keys() {
        let config = parse("jwks_file = \"/etc/jwks.json\"\nissuer = \"https://k8s\"\n").unwrap();
        assert_eq!(config.audience, "access-token-agent");
        assert!(config.bind_to_pod);
        let err = parse("issuer = \"https://k8s\"\n").unwrap_err();
        assert!(err.contains("jwks_file"), "{err}");
        let err = parse("jwks_file = \"/etc/jwks.json\"\n").unwrap_err();
        assert!(err.contains("issuer"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "jwks_file = \"jwks.json\"\nissuer = \"https://k8s\"\n",
                "`kubernetes.jwks_file`",
            ),
            (
                "jwks_file = \"/j\"\nissuer = \" \"\n",
                "`kubernetes.issuer`",
            ),
            (
                "jwks_file = \"/j\"\nissuer = \"https://k8s\"\naudience = \"\"\n",
                "`kubernetes.audience`",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
        let err = parse("jwks_file = \"/j\"\nissuer = \"i\"\nbind_to_pod = \"yes\"\n").unwrap_err();
        assert!(err.contains("bind_to_pod"), "{err}");
    }
}
