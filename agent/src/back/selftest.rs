//! The self-test: a token signed through the HSM and verified in process
//! against the key's certificate, before the key serves anyone.
//!
//! It catches a private key that does not belong to its certificate, a key
//! the token will not sign with, and a broken module, at start and whenever
//! a key becomes active, instead of at the first request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cryptoki::session::Session;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::X509;

use super::error::ConnectError;
use crate::cert::Certificate;
use crate::hsm::key_pairs::SigningKey;
use crate::hsm::sign::sign_token;
use crate::key_type::Alg;
use crate::token::Lifetime;

/// Signs a token for `key`'s issuer (no app) and verifies it against `certificate`.
pub fn run(
    session: &Session,
    key: &SigningKey,
    certificate: &Certificate,
    lifetime: &Lifetime,
) -> Result<(), ConnectError> {
    let signed = sign_token(session, key, "", crate::clock::unix_now(), lifetime)?;
    verify(&signed.token, certificate).map_err(|reason| {
        ConnectError::SelfTest(format!(
            "the self-test token for issuer {:?} (kid {}) does not verify against its certificate ({reason}); the private key on the token does not belong to the certificate: enrol the key again",
            key.issuer, key.id.kid
        ))
    })
}

/// Checks a compact JWS's signature with the certificate's public key.
pub fn verify(token: &str, certificate: &Certificate) -> Result<(), String> {
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or("the token has no signature part")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("the signature is not base64url: {e}"))?;
    let public_key = X509::from_der(&certificate.der)
        .and_then(|x509| x509.public_key())
        .map_err(|e| format!("cannot read the certificate's key: {e}"))?;
    let signature = match certificate.key.alg() {
        Alg::Rs256 => signature,
        Alg::Es256 => ecdsa_der(&signature)?,
    };
    let mut verifier = Verifier::new(MessageDigest::sha256(), &public_key)
        .map_err(|e| format!("cannot set up verification: {e}"))?;
    match verifier.verify_oneshot(&signature, signing_input.as_bytes()) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the signature does not match".into()),
        Err(e) => Err(format!("verification failed: {e}")),
    }
}

/// JWS ES256 signatures are r||s; OpenSSL verifies the DER form.
fn ecdsa_der(signature: &[u8]) -> Result<Vec<u8>, String> {
    if signature.len() != 64 {
        return Err(format!(
            "an ES256 signature has 64 bytes, this one {}",
            signature.len()
        ));
    }
    let (r, s) = signature.split_at(32);
    BigNum::from_slice(r)
        .and_then(|r| Ok((r, BigNum::from_slice(s)?)))
        .and_then(|(r, s)| EcdsaSig::from_private_components(r, s))
        .and_then(|sig| sig.to_der())
        .map_err(|e| format!("not an ECDSA signature: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;
    use openssl::sign::Signer;
    use openssl::x509::{X509Builder, X509NameBuilder};

    /// A fresh self-signed certificate for `key`.
    fn certificate(key: &PKey<Private>) -> Certificate {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "ttd").unwrap();
        let name = name.build();
        let mut builder = X509Builder::new().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(key).unwrap();
        let now = openssl::asn1::Asn1Time::days_from_now(0).unwrap();
        let later = openssl::asn1::Asn1Time::days_from_now(30).unwrap();
        builder.set_not_before(&now).unwrap();
        builder.set_not_after(&later).unwrap();
        builder.sign(key, MessageDigest::sha256()).unwrap();
        Certificate::from_der(&builder.build().to_der().unwrap()).unwrap()
    }

    fn jws(key: &PKey<Private>, signing_input: &str, es256: bool) -> String {
        let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
        let mut signature = signer
            .sign_oneshot_to_vec(signing_input.as_bytes())
            .unwrap();
        if es256 {
            let sig = EcdsaSig::from_der(&signature).unwrap();
            let mut raw = sig.r().to_vec_padded(32).unwrap();
            raw.extend(sig.s().to_vec_padded(32).unwrap());
            signature = raw;
        }
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn rsa() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn p256() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    #[test]
    fn rs256_signature_of_the_certificates_key_verifies() {
        let key = rsa();
        assert_eq!(
            verify(&jws(&key, "aGVhZA.Ym9keQ", false), &certificate(&key)),
            Ok(())
        );
    }

    #[test]
    fn es256_raw_signature_verifies() {
        let key = p256();
        assert_eq!(
            verify(&jws(&key, "aGVhZA.Ym9keQ", true), &certificate(&key)),
            Ok(())
        );
    }

    #[test]
    fn another_key_or_another_input_is_refused() {
        let key = rsa();
        let cert = certificate(&key);
        let other = jws(&rsa(), "aGVhZA.Ym9keQ", false);
        assert!(verify(&other, &cert)
            .unwrap_err()
            .contains("does not match"));
        let token = jws(&key, "aGVhZA.Ym9keQ", false);
        let tampered = token.replacen("Ym9keQ", "Ym9keX", 1);
        assert!(verify(&tampered, &cert).is_err());
        assert!(verify("no-signature", &cert).is_err());
    }
}
