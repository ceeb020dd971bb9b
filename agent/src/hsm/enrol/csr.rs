//! A PKCS#10 certificate request for a key already on the token, signed by
//! that key, for organisations whose certificate comes from a CA; the
//! certificate the CA issues is attached with [`super::attach()`].

use cryptoki::session::Session;
use openssl::x509::X509Req;
use rcgen::CertificateParams;

use super::hsm_key::HsmKey;
use super::{subject, EnrolError};
use crate::hsm::key_pairs::KeyPair;

/// The request, PEM, for the key of `pair` (a complete pair): `subject`
/// (`CN=…, O=…`), or without one the subject of `pair`'s certificate.
pub fn request(
    session: &Session,
    pair: &KeyPair,
    subject: Option<&str>,
) -> Result<String, EnrolError> {
    let (key, cert) = HsmKey::of_pair(session, pair)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = match subject {
        Some(text) => subject::parse(text)?,
        None => subject::of_certificate(&cert.der)?,
    };
    let pem = params
        .serialize_request(&key)
        .and_then(|request| request.pem())
        .map_err(|error| key.failure(error, "certificate request"))?;
    // The HSM signed it; a signature that the request's own key verifies
    // proves that the key on the token is the one it names.
    let verified = X509Req::from_pem(pem.as_bytes())
        .and_then(|request| request.public_key().and_then(|key| request.verify(&key)))
        .unwrap_or(false);
    if !verified {
        return Err(HsmKey::not_its_key(pair));
    }
    Ok(pem)
}
