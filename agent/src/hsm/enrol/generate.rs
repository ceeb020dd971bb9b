//! Key pairs generated inside the HSM, with a self-signed certificate that
//! the HSM key itself signs.
//!
//! The pair's CKA_ID must be the certificate's SHA-1 thumbprint, which exists
//! only once the certificate does. So the pair is generated under a random
//! temporary CKA_ID, the certificate is built and signed through the HSM
//! (rcgen, with the HSM as its [`SigningKey`]), the final CKA_ID is set on
//! both keys, and the certificate object is written last.

use std::cell::RefCell;

use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyUsagePurpose, PublicKeyData, SerialNumber,
    SignatureAlgorithm, SigningKey,
};
use time::OffsetDateTime;

use super::{certificate_template, private_key_policy, public_key_policy, EnrolError, Pending};
use crate::cert::Certificate;
use crate::hsm::{sign, HsmError};
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
    /// Validity from now, 1 to [`MAX_DAYS`].
    pub days: u32,
    /// Unix seconds; the certificate is valid from a few minutes before.
    pub now: i64,
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
    let params = certificate_params(&subject, request)?;
    let mut pending = Pending::new(session);
    let (public, private) = generate_pair(session, issuer, kind)?;
    pending.adopt(private);
    pending.adopt(public);
    let key = HsmKey::new(session, kind, public, private)?;
    let der = match params.self_signed(&key) {
        Ok(cert) => cert.der().to_vec(),
        Err(error) => return Err(key.failure(error)),
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

fn certificate_params(
    subject: &str,
    request: &CertificateRequest,
) -> Result<CertificateParams, EnrolError> {
    if !(1..=MAX_DAYS).contains(&request.days) {
        return Err(EnrolError::Input(format!(
            "--days {} is out of range; give 1 to {MAX_DAYS} (default {DEFAULT_DAYS})",
            request.days
        )));
    }
    let at = |unix: i64| {
        OffsetDateTime::from_unix_timestamp(unix)
            .map_err(|e| EnrolError::Input(format!("certificate validity: {e}")))
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(subject)?;
    params.not_before = at(request.now - NOT_BEFORE_MARGIN_SECONDS)?;
    params.not_after = at(request.now + i64::from(request.days) * 86_400)?;
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Parses `CN=ttd, O=Digdir, C=NO`.
fn distinguished_name(subject: &str) -> Result<DistinguishedName, EnrolError> {
    let invalid = |why: String| {
        EnrolError::Input(format!(
            "--subject {subject:?}: {why}; write it as \"CN=name, O=organisation, C=NO\" (CN, O, OU, C, L, ST)"
        ))
    };
    let mut name = DistinguishedName::new();
    for part in subject.split(',').map(str::trim) {
        let (field, value) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("{part:?} is not FIELD=value")))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(invalid(format!("{field} is empty")));
        }
        let field = match field.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            other => return Err(invalid(format!("unknown field {other:?}"))),
        };
        name.push(field, value);
    }
    Ok(name)
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

/// The generated pair as rcgen sees it: the public key read from the token,
/// signatures made by the HSM.
struct HsmKey<'s> {
    session: &'s Session,
    private: ObjectHandle,
    kind: KeyKind,
    /// The public key as [`KeyKind::public_key_der`] encodes it.
    public_der: Vec<u8>,
    /// The HSM's error behind a failed signature; rcgen's error cannot carry it.
    sign_error: RefCell<Option<HsmError>>,
}

impl<'s> HsmKey<'s> {
    fn new(
        session: &'s Session,
        kind: KeyKind,
        public: ObjectHandle,
        private: ObjectHandle,
    ) -> Result<HsmKey<'s>, EnrolError> {
        let values = kind
            .public_key_attributes()
            .iter()
            .map(|&wanted| read_attribute(session, public, wanted))
            .collect::<Result<Vec<_>, _>>()?;
        let public_der = kind.public_key_der(&values).map_err(EnrolError::Input)?;
        Ok(HsmKey {
            session,
            private,
            kind,
            public_der,
            sign_error: RefCell::new(None),
        })
    }

    /// Turns rcgen's error into the HSM error behind it, if there was one.
    fn failure(&self, error: rcgen::Error) -> EnrolError {
        match self.sign_error.borrow_mut().take() {
            Some(hsm) => hsm.into(),
            None => EnrolError::Input(format!("cannot build the certificate: {error}")),
        }
    }
}

impl PublicKeyData for HsmKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.kind.alg().rcgen_algorithm()
    }
}

impl SigningKey for HsmKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let alg = self.kind.alg();
        // X.509 wants an ECDSA signature as DER, not as the token's r||s.
        let signed = sign::sign_with(self.session, alg, self.private, msg).and_then(|signature| {
            alg.jose_to_der(signature).map_err(|e| HsmError::Invalid {
                what: "ECDSA signature from the token".into(),
                reason: e.to_string(),
            })
        });
        signed.map_err(|error| {
            *self.sign_error.borrow_mut() = Some(error);
            rcgen::Error::RemoteKeyError
        })
    }
}

fn read_attribute(
    session: &Session,
    handle: ObjectHandle,
    wanted: AttributeType,
) -> Result<Vec<u8>, HsmError> {
    let attributes = session
        .get_attributes(handle, &[wanted])
        .map_err(|e| HsmError::from_cryptoki("C_GetAttributeValue", e))?;
    attributes
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::Modulus(v) | Attribute::PublicExponent(v) | Attribute::EcPoint(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| HsmError::Invalid {
            what: "reading the generated public key".into(),
            reason: format!("the token did not return {wanted}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_fields_are_parsed() {
        let name = distinguished_name("CN=ttd, O=Digdir ,c=NO").unwrap();
        assert!(matches!(name.get(&DnType::CommonName), Some(v) if *v == "ttd".into()));
        assert!(name.get(&DnType::OrganizationName).is_some());
        assert!(name.get(&DnType::CountryName).is_some());
    }

    #[test]
    fn bad_subjects_name_the_problem() {
        for (subject, problem) in [
            ("ttd", "not FIELD=value"),
            ("CN=", "CN is empty"),
            ("CN=ttd, E=x@y", "unknown field \"E\""),
        ] {
            let Err(EnrolError::Input(message)) = distinguished_name(subject) else {
                panic!("{subject:?} was accepted");
            };
            assert!(message.contains(problem), "{message}");
        }
    }

    #[test]
    fn days_out_of_range_are_refused() {
        for days in [0, MAX_DAYS + 1] {
            let request = CertificateRequest {
                subject: None,
                days,
                now: 1_767_225_600,
            };
            assert!(certificate_params("CN=ttd", &request).is_err());
        }
    }
}
