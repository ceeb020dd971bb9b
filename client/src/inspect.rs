//! Reading tokens as a person or as Platform would: `decode` shows header and
//! claims; `verify` checks a token the way Altinn Platform does.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
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
    #[error("the signature does not verify with this certificate's key (tampered token, or signed by another key)")]
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

/// The DER of a certificate given as PEM, DER, or the Key Vault value
/// (base64 of the DER).
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    match text {
        Some(text) if text.starts_with("-----BEGIN CERTIFICATE-----") => {
            let body: String = text
                .lines()
                .filter(|line| !line.starts_with("-----"))
                .collect();
            STANDARD
                .decode(body.trim())
                .map_err(|e| VerifyError::Certificate(format!("PEM body is not base64: {e}")))
        }
        Some(text)
            if !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) =>
        {
            STANDARD.decode(text).map_err(|e| {
                VerifyError::Certificate(format!("Key Vault value is not base64: {e}"))
            })
        }
        _ => Ok(bytes.to_vec()),
    }
}

/// Verifies `token` against the certificate (DER) at `now`, as Platform
/// does: the certificate inside its validity, the signature with its key,
/// `exp` required, `nbf`/`exp` with a 10 s skew. Issuer, audience, `typ`
/// and `iat` are not checked, as Platform does not check them.
pub fn verify(cert_der: &[u8], token: &str, now: i64) -> Result<Decoded, VerifyError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| VerifyError::Certificate(format!("not an X.509 certificate: {e}")))?;
    check_validity(&cert, now)?;
    let decoded = decode(token)?;
    let token = token.trim();
    let (message, signature) = token.rsplit_once('.').expect("decode checked three parts");
    let key = decoding_key(cert_der, &decoded, &cert)?;
    let verified = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.0, key.1)
        .map_err(|e| VerifyError::Malformed(format!("signature: {e}")))?;
    if !verified {
        return Err(VerifyError::BadSignature);
    }
    check_lifetime(&decoded.claims, now)?;
    Ok(decoded)
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
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        assert_eq!(certificate_der(pem.as_bytes()).unwrap(), der);
        assert_eq!(certificate_der(&der).unwrap(), der);
    }
}
