//! The self-test: a token signed through the HSM and verified in process
//! against the key's certificate, before the key serves anyone.
//!
//! It catches a private key that does not belong to its certificate, a key
//! the token will not sign with, and a broken module, at start and whenever
//! a key becomes active, instead of at the first request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cryptoki::session::Session;

use super::error::ConnectError;
use crate::cert::Certificate;
use crate::hsm::key_pairs::SigningKey;
use crate::hsm::sign::sign_token;
use crate::key_type::SignatureError;
use crate::token::Lifetime;

/// Signs a token for `key`'s issuer (no app) and verifies it against `certificate`.
pub fn run(
    session: &Session,
    key: &SigningKey,
    certificate: &Certificate,
    lifetime: &Lifetime,
) -> Result<(), ConnectError> {
    let signed = sign_token(
        session,
        key,
        "",
        crate::clock::unix_now(),
        lifetime,
        String::new(),
    )?;
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
    // OpenSSL verifies the DER form of an ECDSA signature, JWS carries r||s.
    let alg = certificate.key.alg();
    let signature = alg.jose_to_der(signature).map_err(|e| match e {
        SignatureError::Length { got, expected } => format!(
            "an {} signature has {expected} bytes, this one {got}",
            alg.as_str()
        ),
        SignatureError::Encoding(e) => format!("not an ECDSA signature: {e}"),
    })?;
    certificate.verify(signing_input.as_bytes(), &signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_type::Alg;
    use crate::test_keys::{certificate, p256, rsa};
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::sign::Signer;

    /// A compact JWS of `signing_input`, signed by OpenSSL.
    fn jws(key: &PKey<Private>, signing_input: &str, alg: Alg) -> String {
        let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
        let signature = signer
            .sign_oneshot_to_vec(signing_input.as_bytes())
            .unwrap();
        let signature = alg.der_to_jose(signature).unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    #[test]
    fn rs256_signature_of_the_certificates_key_verifies() {
        let key = rsa();
        assert_eq!(
            verify(&jws(&key, "aGVhZA.Ym9keQ", Alg::Rs256), &certificate(&key)),
            Ok(())
        );
    }

    #[test]
    fn es256_raw_signature_verifies() {
        let key = p256();
        assert_eq!(
            verify(&jws(&key, "aGVhZA.Ym9keQ", Alg::Es256), &certificate(&key)),
            Ok(())
        );
    }

    #[test]
    fn an_es256_signature_of_the_wrong_length_is_named() {
        let key = p256();
        let short = format!("aGVhZA.Ym9keQ.{}", URL_SAFE_NO_PAD.encode([1u8; 63]));
        assert_eq!(
            verify(&short, &certificate(&key)),
            Err("an ES256 signature has 64 bytes, this one 63".into())
        );
    }

    #[test]
    fn another_key_or_another_input_is_refused() {
        let key = rsa();
        let cert = certificate(&key);
        let other = jws(&rsa(), "aGVhZA.Ym9keQ", Alg::Rs256);
        assert!(verify(&other, &cert)
            .unwrap_err()
            .contains("does not match"));
        let token = jws(&key, "aGVhZA.Ym9keQ", Alg::Rs256);
        let tampered = token.replacen("Ym9keQ", "Ym9keX", 1);
        assert!(verify(&tampered, &cert).is_err());
        assert!(verify("no-signature", &cert).is_err());
    }
}
