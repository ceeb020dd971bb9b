//! Another certificate for a key already on the token (see
//! [`crate::hsm::shared_key`]).

use cryptoki::session::Session;

use super::{certificate_template, ensure_new_kid, public_key_policy, EnrolError, Pending};
use crate::cert::Certificate;
use crate::hsm::key_pairs::KeyPair;

/// Stores `cert`, whose public key is `key`'s, as a certificate of that key:
/// under its own kid and the key's issuer. A key without a public key
/// object (an imported one) gets one first, so that its certificates still
/// find it once its own certificate is deleted. The certificate is written
/// last; if anything fails, nothing of it stays.
pub(super) fn store(
    session: &Session,
    key: &KeyPair,
    cert: &Certificate,
) -> Result<(), EnrolError> {
    ensure_new_kid(session, &cert.thumbprint)?;
    let mut pending = Pending::new(session);
    if key.public_key.is_none() {
        let public = cert
            .public_key()
            .and_then(|public| {
                cert.key
                    .public_key_object(&public)
                    .map_err(crate::cert::CertError::Parse)
            })
            .map_err(|e| EnrolError::Input(e.to_string()))?;
        let mut template = public_key_policy(&key.issuer, &key.key_id);
        template.extend(public);
        pending.create("public key", &template)?;
    }
    pending.create(
        "certificate",
        &certificate_template(&cert.der, &key.issuer, &cert.thumbprint)?,
    )?;
    pending.commit();
    Ok(())
}
