//! `[[issuer]]`: the `iss` values the agent signs for.

use serde::Deserialize;

use crate::token::name::check_name;

/// `[[issuer]]`: one `iss` value the agent signs for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim; the issuer's key and certificate carry it as CKA_LABEL.
    pub name: String,
    /// Pins one certificate (upper-case hex SHA-1 thumbprint) as the active one.
    pub kid: Option<String>,
}

pub(super) fn validate_issuers(issuers: &mut [IssuerConfig]) -> Result<(), String> {
    for (index, issuer) in issuers.iter_mut().enumerate() {
        // The same rule as for the names apps ask for: an issuer that no
        // request can name would never be served.
        check_name(&issuer.name).map_err(|why| {
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
