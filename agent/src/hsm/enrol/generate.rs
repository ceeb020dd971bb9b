//! Key pairs generated inside the HSM, with a self-signed certificate that
//! the HSM key itself signs.
//!
//! The pair's CKA_ID must be the certificate's SHA-1 thumbprint, which exists
//! only once the certificate does. So the pair is generated under a random
//! temporary CKA_ID, the certificate is built and signed through the HSM
//! (rcgen, with the HSM as its [`rcgen::SigningKey`]), the final CKA_ID is set on
//! both keys, and the certificate object is written last.

use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use rcgen::{CertificateParams, DistinguishedName, KeyUsagePurpose, SerialNumber};
use time::OffsetDateTime;

use super::hsm_key::HsmKey;
use super::{
    certificate_template, private_key_policy, public_key_policy, subject, EnrolError, Pending,
};
use crate::cert::Certificate;
use crate::clock::rfc3339;
use crate::hsm::shared_key::read_public_key;
use crate::hsm::HsmError;
use crate::key_type::KeyKind;

/// How far the certificate's not-before lies before now, so that a verifier
/// whose clock is a little behind still accepts it.
pub const NOT_BEFORE_MARGIN_SECONDS: i64 = 300;
/// Default validity of a generated certificate, in days: one year, so that
/// rotation is routine rather than forgotten.
pub const DEFAULT_DAYS: u32 = 365;
/// Longest validity accepted, in days (ten years).
pub const MAX_DAYS: u32 = 3650;

/// What the self-signed certificate says.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// `CN=…, O=…` (CN, O, OU, C, L, ST); `None` gives `CN=<issuer>`.
    pub subject: Option<String>,
    /// Validity from now (or from `not_before`), 1 to [`MAX_DAYS`].
    pub days: u32,
    /// Unix seconds; the certificate is valid from a few minutes before.
    pub now: i64,
    /// Unix seconds: the certificate is valid from this instant instead,
    /// so that it takes over then (`--not-before`).
    pub not_before: Option<i64>,
}

/// Generates a `kind` pair for `issuer` inside the HSM and stores a
/// self-signed certificate for it. Returns the certificate enrolled.
pub fn generate(
    session: &Session,
    issuer: &str,
    kind: KeyKind,
    request: &CertificateRequest,
) -> Result<Certificate, EnrolError> {
    let subject = request
        .subject
        .clone()
        .unwrap_or_else(|| format!("CN={issuer}"));
    let params = certificate_params(subject::parse(&subject)?, request)?;
    let mut pending = Pending::new(session);
    let (public, private) = generate_pair(session, issuer, kind)?;
    pending.adopt(private);
    pending.adopt(public);
    let key = HsmKey::new(
        session,
        kind,
        private,
        read_public_key(session, public, kind)?,
    );
    let der = match params.self_signed(&key) {
        Ok(cert) => cert.der().to_vec(),
        Err(error) => return Err(key.failure(error, "certificate")),
    };
    let cert = Certificate::from_der(&der).map_err(|e| EnrolError::Input(e.to_string()))?;
    for handle in [private, public] {
        session
            .update_attributes(handle, &[Attribute::Id(cert.thumbprint.to_vec())])
            .map_err(|e| HsmError::from_cryptoki("C_SetAttributeValue", e))?;
    }
    pending.create(
        "certificate",
        &certificate_template(&der, issuer, &cert.thumbprint)?,
    )?;
    pending.commit();
    Ok(cert)
}

/// A self-signed certificate's fields: `name` as subject (and issuer), the
/// validity `request` asks for, a random serial, digital signatures only.
pub(super) fn certificate_params(
    name: DistinguishedName,
    request: &CertificateRequest,
) -> Result<CertificateParams, EnrolError> {
    if !(1..=MAX_DAYS).contains(&request.days) {
        return Err(EnrolError::Input(format!(
            "--days {} is out of range; give 1 to {MAX_DAYS} (default {DEFAULT_DAYS})",
            request.days
        )));
    }
    let (not_before, not_after) = match request.not_before {
        Some(start) => (start, start + i64::from(request.days) * 86_400),
        None => (
            request.now - NOT_BEFORE_MARGIN_SECONDS,
            request.now + i64::from(request.days) * 86_400,
        ),
    };
    if not_after <= request.now {
        return Err(EnrolError::Input(format!(
            "--not-before {} with --days {}: the certificate would have expired at {} already; give a later --not-before or more --days",
            rfc3339(not_before),
            request.days,
            rfc3339(not_after)
        )));
    }
    let at = |unix: i64| {
        OffsetDateTime::from_unix_timestamp(unix)
            .map_err(|e| EnrolError::Input(format!("certificate validity: {e}")))
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.not_before = at(not_before)?;
    params.not_after = at(not_after)?;
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// 16 random bytes, positive and without a leading zero byte (RFC 5280).
fn random_serial() -> Result<SerialNumber, EnrolError> {
    let mut serial = [0u8; 16];
    openssl::rand::rand_bytes(&mut serial)
        .map_err(|e| EnrolError::Input(format!("random serial number: {e}")))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&serial))
}

/// C_GenerateKeyPair with [`private_key_policy`] on the private key and a
/// random temporary CKA_ID on both.
fn generate_pair(
    session: &Session,
    issuer: &str,
    kind: KeyKind,
) -> Result<(ObjectHandle, ObjectHandle), EnrolError> {
    let mut temporary_id = [0u8; 20];
    openssl::rand::rand_bytes(&mut temporary_id)
        .map_err(|e| EnrolError::Input(format!("random key id: {e}")))?;
    let mut public = public_key_policy(issuer, &temporary_id, false);
    let (mechanism, size) = kind.pair_generation();
    public.extend(size);
    let private = private_key_policy(issuer, &temporary_id);
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| HsmError::from_cryptoki("C_GenerateKeyPair", e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_out_of_range_are_refused() {
        for days in [0, MAX_DAYS + 1] {
            let request = CertificateRequest {
                subject: None,
                days,
                now: 1_767_225_600,
                not_before: None,
            };
            assert!(certificate_params(DistinguishedName::new(), &request).is_err());
        }
    }

    #[test]
    fn a_not_before_starts_the_validity_and_may_not_leave_it_expired() {
        let now = 1_767_225_600;
        let request = |not_before, days| CertificateRequest {
            subject: None,
            days,
            now,
            not_before: Some(not_before),
        };
        let params =
            certificate_params(DistinguishedName::new(), &request(now + 3_600, 2)).unwrap();
        assert_eq!(params.not_before.unix_timestamp(), now + 3_600);
        assert_eq!(params.not_after.unix_timestamp(), now + 3_600 + 2 * 86_400);
        let Err(EnrolError::Input(message)) =
            certificate_params(DistinguishedName::new(), &request(now - 2 * 86_400, 1))
        else {
            panic!("a certificate that has expired already was accepted");
        };
        assert!(
            message.contains("expired at 2025-12-31T00:00:00Z already"),
            "{message}"
        );
    }
}
