//! A new self-signed certificate for a key already on the token: the same
//! subject, a new validity, signed by the key itself. Tokens the key signs
//! verify against the old certificate and the new one alike, so a validator
//! that still caches the old one keeps accepting them.

use cryptoki::session::Session;
use openssl::x509::X509;
use time::OffsetDateTime;

use super::generate::{certificate_params, CertificateRequest};
use super::hsm_key::HsmKey;
use super::{attach, subject, EnrolError};
use crate::cert::Certificate;
use crate::hsm::key_pairs::KeyPair;

/// Makes and stores a new certificate for the key of `pair` (a complete
/// pair), valid as `request` says; its subject is kept and
/// `request.subject` ignored. Returns the certificate stored.
pub fn renew(
    session: &Session,
    pair: &KeyPair,
    request: &CertificateRequest,
) -> Result<Certificate, EnrolError> {
    let (key, old) = HsmKey::of_pair(session, pair)?;
    let mut params = certificate_params(subject::of_certificate(&old.der)?, request)?;
    if request.not_before.is_none() && params.not_before.unix_timestamp() <= old.not_before {
        // Renewed within the second the old one starts: still the newer one.
        params.not_before = OffsetDateTime::from_unix_timestamp(old.not_before + 1)
            .map_err(|e| EnrolError::Input(format!("certificate validity: {e}")))?;
    }
    let der = match params.self_signed(&key) {
        Ok(cert) => cert.der().to_vec(),
        Err(error) => return Err(key.failure(error, "certificate")),
    };
    check_self_signature(&der, pair)?;
    let cert = Certificate::from_der(&der).map_err(|e| EnrolError::Input(e.to_string()))?;
    attach::store(session, pair, &cert)?;
    Ok(cert)
}

/// The HSM signed the new certificate; that the signature verifies with the
/// public key it names proves the private key is that key's.
fn check_self_signature(der: &[u8], pair: &KeyPair) -> Result<(), EnrolError> {
    let verified = X509::from_der(der)
        .and_then(|x509| x509.public_key().and_then(|key| x509.verify(&key)))
        .unwrap_or(false);
    if verified {
        Ok(())
    } else {
        Err(HsmKey::not_its_key(pair))
    }
}
