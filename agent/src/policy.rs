//! Who may have which token: grants matched on the peer's kernel credentials.

use serde::Deserialize;

/// One `[[grant]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub uid: Option<u32>,
    pub issuer: String,
    pub apps: Vec<String>,
}

/// The grants, ready to match peers against.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<GrantConfig>,
}

impl Policy {
    /// Builds the policy; the error names the grant key that is wrong.
    pub fn from_config(grants: &[GrantConfig]) -> Result<Policy, String> {
        Ok(Policy {
            grants: grants.to_vec(),
        })
    }
}
