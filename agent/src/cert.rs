//! Facts about a signing certificate: thumbprint, validity, key type, and the
//! forms operators publish it in (PEM, DER, the Key Vault secret value).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::pkey::Id;
use openssl::sign::Verifier;
use openssl::x509::X509;

use crate::key_type::{self, KeyKind, SUPPORTED_KEYS};
use crate::token::{key_id, SigningKeyId};

/// A parsed certificate, kept with its DER bytes.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub der: Vec<u8>,
    /// SHA-1 of the DER: CKA_ID on the token, and the source of kid and x5t.
    pub thumbprint: [u8; 20],
    /// The subject, one line (`CN=ttd, O=…`).
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub key: KeyKind,
}

/// Why a certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read the X.509 certificate (DER): {0}")]
    Parse(String),
    #[error("the certificate's key is {0}; only {SUPPORTED_KEYS} keys can sign Altinn tokens")]
    UnsupportedKey(String),
}

impl Certificate {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Certificate, CertError> {
        forget_stale_errors();
        let x509 = X509::from_der(der).map_err(|e| CertError::Parse(first_cause(&e)))?;
        Ok(Certificate {
            der: der.to_vec(),
            thumbprint: openssl::sha::sha1(der),
            subject: subject_line(&x509),
            not_before: unix_time(x509.not_before(), "notBefore")?,
            not_after: unix_time(x509.not_after(), "notAfter")?,
            key: key_kind(&x509)?,
        })
    }

    /// A certificate file's first certificate, PEM or DER, and how many
    /// more a PEM file holds (a CA's chain, which Platform does not use).
    pub fn from_file(bytes: &[u8]) -> Result<(Certificate, usize), CertError> {
        if !bytes.windows(11).any(|window| window == b"-----BEGIN ") {
            return Certificate::from_der(bytes).map(|cert| (cert, 0));
        }
        let stack = X509::stack_from_pem(bytes).map_err(|e| CertError::Parse(e.to_string()))?;
        let first = stack
            .first()
            .ok_or_else(|| CertError::Parse("the PEM file holds no CERTIFICATE block".into()))?;
        let der = first
            .to_der()
            .map_err(|e| CertError::Parse(e.to_string()))?;
        Ok((Certificate::from_der(&der)?, stack.len() - 1))
    }

    /// The `kid` header value: upper-case hex thumbprint.
    pub fn kid(&self) -> String {
        crate::token::upper_hex(&self.thumbprint)
    }

    /// Everything the token header needs.
    pub fn signing_key_id(&self) -> SigningKeyId {
        key_id(self.key.alg(), &self.thumbprint)
    }

    /// Whether `now` lies inside the certificate's validity.
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether the certificate expires within `window` seconds of `now`
    /// (or has expired).
    pub fn expires_within(&self, now: i64, window: i64) -> bool {
        self.not_after - now <= window
    }

    /// When it expires, for a warning: `expires at 2026-01-01T00:00:00Z,
    /// in 12 days`, or `expired at …`.
    pub fn expiry(&self, now: i64) -> String {
        let at = crate::clock::rfc3339(self.not_after);
        let left = self.not_after - now;
        match left / 86_400 {
            _ if left < 0 => format!("expired at {at}"),
            0 => format!("expires at {at}, in less than a day"),
            1 => format!("expires at {at}, in 1 day"),
            days => format!("expires at {at}, in {days} days"),
        }
    }

    /// The public key, in the form the token's public key objects are read
    /// in ([`KeyKind::public_key_der`]), so that the two compare.
    pub fn public_key(&self) -> Result<Vec<u8>, CertError> {
        let key = X509::from_der(&self.der)
            .and_then(|x509| x509.public_key())
            .map_err(|e| CertError::Parse(e.to_string()))?;
        self.key.public_key_of(&key).map_err(CertError::Parse)
    }

    /// Checks `signature` (X.509's form: DER for ECDSA) over `input` with
    /// the certificate's public key.
    pub fn verify(&self, input: &[u8], signature: &[u8]) -> Result<(), String> {
        let public_key = X509::from_der(&self.der)
            .and_then(|x509| x509.public_key())
            .map_err(|e| format!("cannot read the certificate's key: {e}"))?;
        let mut verifier = Verifier::new(self.key.alg().digest(), &public_key)
            .map_err(|e| format!("cannot set up verification: {e}"))?;
        match verifier.verify_oneshot(signature, input) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the signature does not match".into()),
            Err(e) => Err(format!("verification failed: {e}")),
        }
    }

    /// The Key Vault secret value `{iss}-access-token-public-cert`:
    /// standard base64 with padding of the DER, no PEM armour.
    pub fn keyvault_value(&self) -> String {
        STANDARD.encode(&self.der)
    }

    /// PEM armour around the DER.
    pub fn pem(&self) -> String {
        let body = STANDARD.encode(&self.der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }
}

/// Empties this thread's OpenSSL error queue. The PKCS#11 module shares
/// the process's OpenSSL and may leave its own errors there (SoftHSM: an
/// engine it could not load), which the next failure here would report
/// as its own.
fn forget_stale_errors() {
    drop(ErrorStack::get());
}

/// The first error of OpenSSL's queue, in one line: the root cause (`wrong
/// tag`, `decode error`), without the layers that passed it up, source
/// file names and error codes, which tell an operator nothing.
fn first_cause(error: &ErrorStack) -> String {
    match error.errors().first() {
        Some(first) => match (first.reason(), first.data()) {
            (Some(reason), Some(data)) => format!("{reason} ({data})"),
            (Some(reason), None) => reason.to_owned(),
            (None, _) => format!("OpenSSL error {:#x}", first.code()),
        },
        None => "OpenSSL gave no reason".into(),
    }
}

fn subject_line(x509: &X509) -> String {
    x509.subject_name()
        .entries()
        .map(|entry| {
            let field = entry.object().nid().short_name().unwrap_or("?");
            let value = entry
                .data()
                .to_string()
                .unwrap_or_else(|_| "<unreadable>".into());
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A validity time as Unix seconds. The DER parser accepts malformed times
/// (month 13, say), which only fail here: such a certificate is unusable.
fn unix_time(time: &Asn1TimeRef, field: &str) -> Result<i64, CertError> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| CertError::Parse(e.to_string()))?;
    let diff = epoch.diff(time).map_err(|_| {
        CertError::Parse(format!(
            "its {field} ({time}) is not a valid time; the certificate is malformed and cannot be used"
        ))
    })?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

fn key_kind(x509: &X509) -> Result<KeyKind, CertError> {
    let key = x509.public_key().map_err(|e| {
        CertError::Parse(format!(
            "its public key cannot be read: {}",
            first_cause(&e)
        ))
    })?;
    KeyKind::of(&key).ok_or_else(|| {
        CertError::UnsupportedKey(match key.id() {
            Id::EC => format!("EC on {:?}", key_type::curve(&key)),
            other => format!("{other:?}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttd() -> Certificate {
        let pem = include_bytes!("../../tests/data/ttd-org.pem");
        let x509 = X509::from_pem(pem).unwrap();
        Certificate::from_der(&x509.to_der().unwrap()).unwrap()
    }

    #[test]
    fn reads_the_altinn_test_certificate() {
        let cert = ttd();
        assert_eq!(cert.kid(), "C5726728C38CFE6C16988454206B99CA29AE025E");
        assert_eq!(cert.signing_key_id().x5t, "xXJnKMOM_mwWmIRUIGuZyimuAl4");
        assert_eq!(cert.key, KeyKind::Rsa { bits: 2048 });
        assert_eq!(cert.subject, "CN=ttd");
        // 2020-05-25 .. 2030-05-24, per the published certificate.
        assert!(cert.is_valid_at(1_767_225_600));
        assert!(!cert.is_valid_at(1_577_836_800)); // 2020-01-01
        assert!(!cert.is_valid_at(1_924_992_000)); // 2031-01-01
    }

    #[test]
    fn expiry_is_told_in_whole_days_left() {
        let cert = ttd();
        let day = 86_400;
        assert!(!cert.expires_within(cert.not_after - 31 * day, 30 * day));
        assert!(cert.expires_within(cert.not_after - 30 * day, 30 * day));
        assert!(cert.expires_within(cert.not_after + 1, 30 * day));
        let at = crate::clock::rfc3339(cert.not_after);
        let expiry = |before: i64| cert.expiry(cert.not_after - before);
        assert_eq!(expiry(12 * day + 5), format!("expires at {at}, in 12 days"));
        assert_eq!(expiry(day), format!("expires at {at}, in 1 day"));
        assert_eq!(expiry(5), format!("expires at {at}, in less than a day"));
        assert_eq!(expiry(-5), format!("expired at {at}"));
    }

    #[test]
    fn pem_round_trips_through_openssl() {
        let cert = ttd();
        let again = X509::from_pem(cert.pem().as_bytes()).unwrap();
        assert_eq!(again.to_der().unwrap(), cert.der);
        assert_eq!(STANDARD.decode(cert.keyvault_value()).unwrap(), cert.der);
    }

    /// The DER of the ttd certificate with the month of its notBefore
    /// (the first UTCTime, `YYMMDDHHMMSSZ`) set to 13.
    fn with_month_13() -> Vec<u8> {
        let mut der = ttd().der;
        let at = der
            .windows(2)
            .position(|tag_and_length| tag_and_length == [0x17, 0x0d])
            .expect("a UTCTime in the validity")
            + 2;
        der[at + 2..at + 4].copy_from_slice(b"13");
        der
    }

    #[test]
    fn a_malformed_validity_time_is_a_parse_error() {
        let der = with_month_13();
        assert!(X509::from_der(&der).is_ok(), "the DER itself still parses");
        match Certificate::from_der(&der) {
            Err(CertError::Parse(message)) => {
                assert!(message.contains("notBefore"), "{message}")
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn an_unsupported_key_is_named_with_the_supported_ones() {
        assert_eq!(
            CertError::UnsupportedKey("EC on Some(Nid(715))".into()).to_string(),
            "the certificate's key is EC on Some(Nid(715)); only RSA (2048 bits or more) and EC P-256 keys can sign Altinn tokens"
        );
    }

    #[test]
    fn a_certificate_file_is_read_as_pem_or_der() {
        let pem = include_bytes!("../../tests/data/ttd-org.pem");
        let (cert, more) = Certificate::from_file(pem).unwrap();
        assert_eq!((cert.kid(), more), (ttd().kid(), 0));
        let (cert, more) = Certificate::from_file(&ttd().der).unwrap();
        assert_eq!((cert.kid(), more), (ttd().kid(), 0));
        let chain = [&pem[..], &pem[..]].concat();
        assert_eq!(Certificate::from_file(&chain).unwrap().1, 1);
        assert!(Certificate::from_file(b"-----BEGIN PRIVATE KEY-----\n").is_err());
    }

    #[test]
    fn garbage_is_refused_with_one_cause_in_one_line() {
        // Someone else's error, left on the queue, is not reported.
        let stale = X509::from_pem(b"-----BEGIN CERTIFICATE-----\nxx\n").unwrap_err();
        let stale_reason = stale.errors()[0].reason().unwrap().to_owned();
        stale.put();
        match Certificate::from_der(b"not a certificate") {
            Err(CertError::Parse(message)) => {
                assert!(!message.is_empty());
                assert!(!message.contains(&stale_reason), "{message}");
                assert!(!message.contains("error:"), "{message}");
                assert!(!message.contains("PEM"), "{message}");
                assert!(!message.contains(['\n', ',']), "{message}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}
