//! Reading tokens as a person or as Platform would: `decode` shows header and
//! claims; `verify` checks a token the way Altinn Platform does.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha1::{Digest, Sha1};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Platform's clock skew allowance on `nbf` and `exp`, in seconds.
pub const CLOCK_SKEW: i64 = 10;

/// A token's readable parts.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub header: Value,
    pub claims: Value,
}

/// Why a token does not pass.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the certificate is not valid yet: its not-before is {0} (Unix seconds)")]
    CertificateNotYetValid(i64),
    #[error("the certificate has expired: its not-after is {0} (Unix seconds)")]
    CertificateExpired(i64),
    #[error("the token's alg {alg:?} does not fit the certificate's {key} key")]
    AlgorithmMismatch { alg: String, key: &'static str },
    #[error(
        "the signature does not verify, yet the token names this certificate ({kid}) as its signer: \
         the token was altered after it was signed"
    )]
    Tampered { kid: String },
    #[error(
        "the token was signed by the key of certificate {token_kid}, not by this one ({cert_kid}): \
         verify against the certificate with thumbprint {token_kid}"
    )]
    SignedByAnotherKey { token_kid: String, cert_kid: String },
    #[error("the signature does not verify with this certificate's key, and the token names no signer (kid or x5t)")]
    BadSignature,
    #[error("the token has no exp claim; Platform requires one")]
    MissingExp,
    #[error("the token expired at {exp}, {ago} s ago (beyond the {CLOCK_SKEW} s skew)")]
    Expired { exp: i64, ago: i64 },
    #[error(
        "the token is not valid before {nbf}, {wait} s from now (beyond the {CLOCK_SKEW} s skew)"
    )]
    NotYetValid { nbf: i64, wait: i64 },
}

/// Splits and decodes a compact JWS without checking anything.
pub fn decode(token: &str) -> Result<Decoded, VerifyError> {
    let mut parts = token.trim().split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "a token has three parts separated by '.'".into(),
        ));
    };
    Ok(Decoded {
        header: json_part("header", header)?,
        claims: json_part("claims", claims)?,
    })
}

fn json_part(name: &str, part: &str) -> Result<Value, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| VerifyError::Malformed(format!("the {name} is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| VerifyError::Malformed(format!("the {name} is not JSON: {e}")))
}

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// The DER of a certificate given as PEM (the first certificate block,
/// wherever it starts), DER, or the Key Vault value: base64 of the DER,
/// line-wrapped or in the double quotes `az keyvault secret show` prints.
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(bytes.to_vec());
    };
    if let Some(start) = text.find(PEM_BEGIN) {
        let body = &text[start + PEM_BEGIN.len()..];
        let end = body.find(PEM_END).ok_or_else(|| {
            VerifyError::Certificate(format!("the PEM certificate has no {PEM_END} line"))
        })?;
        return base64_der(&body[..end], "the PEM certificate's body");
    }
    if let Some(other) = text.find("-----BEGIN ") {
        let label = text[other..].lines().next().unwrap_or_default();
        return Err(VerifyError::Certificate(format!(
            "the PEM file holds {label:?}, not a certificate; give the certificate \
             (`access-token-agent keys export-cert --format pem`)"
        )));
    }
    let value = text.trim().trim_matches('"');
    let is_base64 = |b: u8| b.is_ascii_alphanumeric() || b"+/=".contains(&b);
    match !value.is_empty()
        && value
            .bytes()
            .all(|b| is_base64(b) || b.is_ascii_whitespace())
    {
        true => base64_der(value, "the Key Vault value"),
        false => Ok(bytes.to_vec()),
    }
}

fn base64_der(text: &str, what: &str) -> Result<Vec<u8>, VerifyError> {
    let compact: String = text.split_ascii_whitespace().collect();
    STANDARD
        .decode(compact)
        .map_err(|e| VerifyError::Certificate(format!("{what} is not base64: {e}")))
}

/// The certificate's SHA-1 thumbprint in upper-case hex: the kid the agent
/// puts in tokens it signs with this certificate's key.
pub fn thumbprint(cert_der: &[u8]) -> String {
    Sha1::digest(cert_der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect()
}

/// Verifies `token` against the certificate (DER) at `now`, as Platform
/// does: the certificate inside its validity, the signature with its key,
/// `exp` required, `nbf`/`exp` with a 10 s skew. Issuer, audience, `typ`
/// and `iat` are not checked, as Platform does not check them.
pub fn verify(cert_der: &[u8], token: &str, now: i64) -> Result<Decoded, VerifyError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| {
        VerifyError::Certificate(format!(
            "not an X.509 certificate ({e}); give it as PEM, DER or the Key Vault base64 value"
        ))
    })?;
    check_validity(&cert, now)?;
    let decoded = decode(token)?;
    let token = token.trim();
    let (message, signature) = token.rsplit_once('.').expect("decode checked three parts");
    let key = decoding_key(cert_der, &decoded, &cert)?;
    let verified = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.0, key.1)
        .map_err(|e| VerifyError::Malformed(format!("signature: {e}")))?;
    if !verified {
        return Err(signature_failure(&decoded.header, cert_der));
    }
    check_lifetime(&decoded.claims, now)?;
    Ok(decoded)
}

/// Why a signature failed, told apart by the signer the header names:
/// another certificate's thumbprint means the wrong certificate was given,
/// this one's means the token was changed after signing.
fn signature_failure(header: &Value, cert_der: &[u8]) -> VerifyError {
    let cert_kid = thumbprint(cert_der);
    match named_signer(header) {
        Some(kid) if kid.eq_ignore_ascii_case(&cert_kid) => VerifyError::Tampered { kid: cert_kid },
        Some(token_kid) => VerifyError::SignedByAnotherKey {
            token_kid,
            cert_kid,
        },
        None => VerifyError::BadSignature,
    }
}

/// The signing certificate's thumbprint the header names: `kid`, else
/// `x5t` (base64url of the same SHA-1), as upper-case hex.
fn named_signer(header: &Value) -> Option<String> {
    if let Some(kid) = header["kid"].as_str().filter(|kid| !kid.is_empty()) {
        return Some(kid.to_ascii_uppercase());
    }
    let x5t = URL_SAFE_NO_PAD.decode(header["x5t"].as_str()?).ok()?;
    Some(x5t.iter().map(|byte| format!("{byte:02X}")).collect())
}

fn check_validity(cert: &X509Certificate, now: i64) -> Result<(), VerifyError> {
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    if now < not_before {
        return Err(VerifyError::CertificateNotYetValid(not_before));
    }
    if now > not_after {
        return Err(VerifyError::CertificateExpired(not_after));
    }
    Ok(())
}

fn decoding_key(
    cert_der: &[u8],
    decoded: &Decoded,
    cert: &X509Certificate,
) -> Result<(DecodingKey, Algorithm), VerifyError> {
    let alg = decoded.header["alg"].as_str().unwrap_or("").to_owned();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        STANDARD.encode(cert_der)
    );
    let is_rsa = cert.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1";
    let key_name = if is_rsa { "RSA" } else { "EC" };
    let mismatch = || VerifyError::AlgorithmMismatch {
        alg: alg.clone(),
        key: key_name,
    };
    let (key, algorithm) = match (alg.as_str(), is_rsa) {
        ("RS256", true) => (DecodingKey::from_rsa_pem(pem.as_bytes()), Algorithm::RS256),
        ("ES256", false) => (DecodingKey::from_ec_pem(pem.as_bytes()), Algorithm::ES256),
        _ => return Err(mismatch()),
    };
    let key =
        key.map_err(|e| VerifyError::Certificate(format!("its public key cannot be used: {e}")))?;
    Ok((key, algorithm))
}

fn check_lifetime(claims: &Value, now: i64) -> Result<(), VerifyError> {
    let exp = claims["exp"].as_i64().ok_or(VerifyError::MissingExp)?;
    if exp + CLOCK_SKEW <= now {
        return Err(VerifyError::Expired {
            exp,
            ago: now - exp,
        });
    }
    if let Some(nbf) = claims["nbf"].as_i64() {
        if nbf - CLOCK_SKEW > now {
            return Err(VerifyError::NotYetValid {
                nbf,
                wait: nbf - now,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_what_is_not_a_jws() {
        assert!(matches!(decode("a.b"), Err(VerifyError::Malformed(_))));
        assert!(matches!(decode("!.!.!"), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn lifetime_allows_ten_seconds_of_skew() {
        let claims = serde_json::json!({"nbf": 100, "exp": 200});
        assert!(check_lifetime(&claims, 150).is_ok());
        assert!(check_lifetime(&claims, 209).is_ok());
        assert_eq!(
            check_lifetime(&claims, 210),
            Err(VerifyError::Expired { exp: 200, ago: 10 })
        );
        assert!(check_lifetime(&claims, 90).is_ok());
        assert_eq!(
            check_lifetime(&claims, 89),
            Err(VerifyError::NotYetValid { nbf: 100, wait: 11 })
        );
        assert_eq!(
            check_lifetime(&serde_json::json!({"nbf": 1}), 5),
            Err(VerifyError::MissingExp)
        );
    }

    #[test]
    fn certificate_forms_are_recognised() {
        let der = [0x30u8, 0x03, 0x02, 0x01, 0x01];
        let b64 = STANDARD.encode(der);
        assert_eq!(certificate_der(b64.as_bytes()).unwrap(), der);
        assert_eq!(
            certificate_der(format!("\"{b64}\"\n").as_bytes()).unwrap(),
            der
        );
        let pem = format!(
            "Bag Attributes\n-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(certificate_der(pem.as_bytes()).unwrap(), der);
        assert_eq!(certificate_der(&der).unwrap(), der);
    }

    #[test]
    fn a_pem_without_a_certificate_is_named() {
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let error = certificate_der(key.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("BEGIN PRIVATE KEY"), "{error}");
    }

    #[test]
    fn the_named_signer_comes_from_kid_or_x5t() {
        let x5t = URL_SAFE_NO_PAD.encode([0xABu8; 20]);
        assert_eq!(
            named_signer(&serde_json::json!({"kid": "ab12"})).unwrap(),
            "AB12"
        );
        assert_eq!(
            named_signer(&serde_json::json!({"x5t": x5t})).unwrap(),
            "AB".repeat(20)
        );
        assert_eq!(named_signer(&serde_json::json!({"alg": "RS256"})), None);
    }
}
