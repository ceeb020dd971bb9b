//! The key pairs on the token: finding them, describing them, choosing the
//! active one per issuer.
//!
//! A key pair is the objects that share one CKA_LABEL (the issuer) and one
//! CKA_ID (the certificate's SHA-1 thumbprint): a private key, a certificate,
//! and, for generated keys, a public key. Enrolment writes the certificate
//! last, so a pair without its certificate is an interrupted enrolment: it is
//! listed as incomplete and never used for signing.
//!
//! A key may have more certificates than the one it was enrolled with
//! (renewed, or issued by a CA); [`super::shared_key`] says how they find
//! it. Each is a pair of its own, with its own kid, and the key's handles.

use std::collections::BTreeMap;

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::shared_key::{self, Group};
use super::{Ckr, HsmError};
use crate::cert::Certificate;
use crate::token::SigningKeyId;

/// One key pair on the token, complete or not.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// CKA_LABEL: the issuer (`iss`) the pair signs for.
    pub issuer: String,
    /// CKA_ID: the certificate's SHA-1 thumbprint.
    pub id: Vec<u8>,
    /// CKA_ID of the key objects: `id`, except for a certificate that
    /// belongs to a key enrolled under another certificate.
    pub key_id: Vec<u8>,
    pub certificate: Option<(ObjectHandle, Certificate)>,
    pub private_key: Option<PrivateKey>,
    pub public_key: Option<ObjectHandle>,
}

/// The protection attributes of a private key, as the token reports them.
#[derive(Debug, Clone, Copy)]
pub struct PrivateKey {
    pub handle: ObjectHandle,
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
}

/// A complete pair ready to sign: the key handle and the header fields.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub issuer: String,
    pub handle: ObjectHandle,
    pub id: SigningKeyId,
    pub not_after: i64,
}

impl KeyPair {
    /// The kid: upper-case hex of CKA_ID.
    pub fn kid(&self) -> String {
        crate::token::upper_hex(&self.id)
    }

    /// Both a certificate and a private key are there, and the certificate's
    /// thumbprint is the pair's CKA_ID.
    pub fn is_complete(&self) -> bool {
        match (&self.certificate, &self.private_key) {
            (Some((_, cert)), Some(_)) => cert.thumbprint.as_slice() == self.id.as_slice(),
            _ => false,
        }
    }

    /// The pair as a signing key, if it is complete.
    pub fn signing_key(&self) -> Option<SigningKey> {
        if !self.is_complete() {
            return None;
        }
        let (_, cert) = self.certificate.as_ref()?;
        Some(SigningKey {
            issuer: self.issuer.clone(),
            handle: self.private_key?.handle,
            id: cert.signing_key_id(),
            not_after: cert.not_after,
        })
    }

    /// Whether `other` is another certificate of this pair's key.
    pub fn shares_key_with(&self, other: &KeyPair) -> bool {
        let key = |pair: &KeyPair| pair.private_key.map(|key| key.handle);
        other.id != self.id
            && other.certificate.is_some()
            && key(self).is_some()
            && key(other) == key(self)
    }

    /// What [`super::shared_key`] needs to know of the pair.
    pub fn group(&self) -> Group<'_> {
        Group {
            issuer: &self.issuer,
            certificate: self
                .certificate
                .as_ref()
                .map(|(handle, cert)| (*handle, cert)),
            private_key: self.private_key.is_some(),
            public_key: self.public_key,
        }
    }

    /// Every object handle of the pair; of a certificate that shares its
    /// key, the key's too ([`super::enrol::delete()`] decides what goes).
    pub fn handles(&self) -> Vec<ObjectHandle> {
        let cert = self.certificate.as_ref().map(|(handle, _)| *handle);
        let key = self.private_key.map(|key| key.handle);
        [cert, key, self.public_key].into_iter().flatten().collect()
    }
}

/// Every key pair on the token, or only `issuer`'s, sorted by issuer and kid.
/// Private keys are only visible to a logged-in session.
pub fn list(session: &Session, issuer: Option<&str>) -> Result<Vec<KeyPair>, HsmError> {
    let mut template = Vec::new();
    if let Some(issuer) = issuer {
        template.push(Attribute::Label(issuer.as_bytes().to_vec()));
    }
    let handles = session
        .find_objects(&template)
        .map_err(|e| HsmError::from_cryptoki("C_FindObjects", e))?;
    let mut pairs: BTreeMap<(String, Vec<u8>), KeyPair> = BTreeMap::new();
    for handle in handles {
        let Some(object) = readable(handle, read_object(session, handle))? else {
            continue;
        };
        let Some((class, label, id)) = object.identity() else {
            continue;
        };
        let pair = pairs.entry((label.clone(), id.clone())).or_insert(KeyPair {
            issuer: label,
            key_id: id.clone(),
            id,
            certificate: None,
            private_key: None,
            public_key: None,
        });
        if class == ObjectClass::CERTIFICATE {
            pair.certificate = readable(handle, read_certificate(session, handle))?
                .flatten()
                .map(|cert| (handle, cert));
        } else {
            object.fill_key(class, handle, pair);
        }
    }
    lend_keys(session, pairs.into_values().collect())
}

/// Gives each certificate without a key of its own the key it belongs to
/// ([`super::shared_key`]); a key whose own certificate is gone is then
/// listed only through its other certificates.
fn lend_keys(session: &Session, mut pairs: Vec<KeyPair>) -> Result<Vec<KeyPair>, HsmError> {
    let groups: Vec<Group> = pairs.iter().map(KeyPair::group).collect();
    let owners = shared_key::owners(session, &groups)?;
    let mut lent = vec![false; pairs.len()];
    for (at, owner) in owners.into_iter().enumerate() {
        let Some(owner) = owner else { continue };
        let key = &pairs[owner];
        let (private_key, public_key, key_id) = (key.private_key, key.public_key, key.id.clone());
        (pairs[at].private_key, pairs[at].public_key) = (private_key, public_key);
        pairs[at].key_id = key_id;
        lent[owner] = true;
    }
    Ok(pairs
        .into_iter()
        .zip(lent)
        .filter(|(pair, lent)| !lent || pair.certificate.is_some())
        .map(|(pair, _)| pair)
        .collect())
}

/// An object's attributes, or `None` when only this object is at fault: its
/// stored form is damaged (SoftHSM answers CKR_ATTRIBUTE_VALUE_INVALID for a
/// truncated object file) or it was removed since it was found. One such
/// object must not hide the others; a fault of the session or token still
/// fails the whole listing.
fn readable<T>(handle: ObjectHandle, read: Result<T, HsmError>) -> Result<Option<T>, HsmError> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(error)
            if !error.is_connection_fault()
                || error.ckr() == Some(Ckr(RvError::ObjectHandleInvalid)) =>
        {
            tracing::warn!(
                "object {handle} on the token cannot be read ({error}); it is left out (its storage may be damaged, or it was just removed)"
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The pair with this kid (any issuer), if there is one.
pub fn find_by_kid(session: &Session, kid: &str) -> Result<Option<KeyPair>, HsmError> {
    let kid = kid.to_ascii_uppercase();
    Ok(list(session, None)?
        .into_iter()
        .find(|pair| pair.kid() == kid))
}

/// The key an issuer signs with, among its complete pairs whose certificate
/// is valid at `now`: the pinned kid if one is configured, otherwise the one
/// with the latest not-before (so a newly enrolled key takes over once it is
/// valid). Altinn Platform refuses tokens whose certificate is outside its
/// validity, so an expired pinned key is no active key either.
pub fn select_active<'a>(
    pairs: &'a [KeyPair],
    issuer: &str,
    pinned_kid: Option<&str>,
    now: i64,
) -> Option<&'a KeyPair> {
    let mut usable = pairs
        .iter()
        .filter(|pair| pair.issuer == issuer && pair.is_complete())
        .filter_map(|pair| Some((pair, &pair.certificate.as_ref()?.1)))
        .filter(|(_, cert)| cert.is_valid_at(now));
    match pinned_kid {
        Some(kid) => usable.find(|(pair, _)| pair.kid().eq_ignore_ascii_case(kid)),
        None => usable.max_by_key(|(_, cert)| cert.not_before),
    }
    .map(|(pair, _)| pair)
}

/// The signing key for `issuer`, or an error that says how to enrol one.
pub fn active_signing_key(
    session: &Session,
    issuer: &str,
    pinned_kid: Option<&str>,
    now: i64,
) -> Result<SigningKey, HsmError> {
    let (key, _) = active_key_pair(session, issuer, pinned_kid, now)?;
    Ok(key)
}

/// The signing key for `issuer` with its certificate, for checking a
/// signature against it; the error says how to enrol one.
pub fn active_key_pair(
    session: &Session,
    issuer: &str,
    pinned_kid: Option<&str>,
    now: i64,
) -> Result<(SigningKey, Certificate), HsmError> {
    let pairs = list(session, Some(issuer))?;
    select_active(&pairs, issuer, pinned_kid, now)
        .and_then(|pair| Some((pair.signing_key()?, pair.certificate.clone()?.1)))
        .ok_or_else(|| HsmError::KeyNotFound {
            issuer: issuer.to_owned(),
            kid: match pinned_kid {
                Some(kid) => format!(" with kid {kid} whose certificate is valid now"),
                None => " whose certificate is valid now".to_owned(),
            },
        })
}

/// The attributes of one object that matter for pairing.
struct ObjectAttributes(Vec<Attribute>);

fn read_object(session: &Session, handle: ObjectHandle) -> Result<ObjectAttributes, HsmError> {
    // get_attributes leaves out what the token will not reveal; match by variant.
    let wanted = [
        AttributeType::Class,
        AttributeType::Label,
        AttributeType::Id,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
    ];
    session
        .get_attributes(handle, &wanted)
        .map(ObjectAttributes)
        .map_err(|e| HsmError::from_cryptoki("C_GetAttributeValue", e))
}

impl ObjectAttributes {
    fn identity(&self) -> Option<(ObjectClass, String, Vec<u8>)> {
        let mut class = None;
        let mut label = None;
        let mut id = None;
        for attribute in &self.0 {
            match attribute {
                Attribute::Class(c) => class = Some(*c),
                Attribute::Label(l) => label = String::from_utf8(l.clone()).ok(),
                Attribute::Id(i) if !i.is_empty() => id = Some(i.clone()),
                _ => {}
            }
        }
        Some((class?, label?, id?))
    }

    fn flag(&self, wanted: AttributeType) -> bool {
        self.0.iter().any(|attribute| {
            attribute.attribute_type() == wanted
                && matches!(
                    attribute,
                    Attribute::Sensitive(true)
                        | Attribute::Extractable(true)
                        | Attribute::AlwaysSensitive(true)
                        | Attribute::NeverExtractable(true)
                )
        })
    }

    fn fill_key(&self, class: ObjectClass, handle: ObjectHandle, pair: &mut KeyPair) {
        if class == ObjectClass::PRIVATE_KEY {
            pair.private_key = Some(PrivateKey {
                handle,
                sensitive: self.flag(AttributeType::Sensitive),
                extractable: self.flag(AttributeType::Extractable),
                always_sensitive: self.flag(AttributeType::AlwaysSensitive),
                never_extractable: self.flag(AttributeType::NeverExtractable),
            });
        } else if class == ObjectClass::PUBLIC_KEY {
            pair.public_key = Some(handle);
        }
    }
}

/// The certificate object's DER, parsed; `None` when it does not parse, so
/// that a damaged object shows as an incomplete pair instead of hiding the rest.
fn read_certificate(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Option<Certificate>, HsmError> {
    let attributes = session
        .get_attributes(handle, &[AttributeType::Value])
        .map_err(|e| HsmError::from_cryptoki("C_GetAttributeValue", e))?;
    Ok(attributes.iter().find_map(|attribute| match attribute {
        Attribute::Value(der) => Certificate::from_der(der).ok(),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_type::KeyKind;

    /// A complete pair of `issuer` whose certificate is valid from
    /// `not_before` to `not_after`; `n` tells pairs apart.
    fn pair(issuer: &str, n: u8, not_before: i64, not_after: i64) -> KeyPair {
        let thumbprint = [n; 20];
        // SAFETY: the handles are never passed to a PKCS#11 module.
        let handle = |raw| unsafe { ObjectHandle::new_from_raw(raw) };
        KeyPair {
            issuer: issuer.into(),
            id: thumbprint.to_vec(),
            key_id: thumbprint.to_vec(),
            certificate: Some((
                handle(2 * u64::from(n)),
                Certificate {
                    der: Vec::new(),
                    thumbprint,
                    subject: format!("CN={issuer}"),
                    not_before,
                    not_after,
                    key: KeyKind::P256,
                },
            )),
            private_key: Some(PrivateKey {
                handle: handle(2 * u64::from(n) + 1),
                sensitive: true,
                extractable: false,
                always_sensitive: true,
                never_extractable: true,
            }),
            public_key: None,
        }
    }

    fn chosen(pairs: &[KeyPair], pinned: Option<&str>, now: i64) -> Option<String> {
        select_active(pairs, "ttd", pinned, now).map(KeyPair::kid)
    }

    #[test]
    fn the_valid_key_with_the_latest_not_before_is_active() {
        let pairs = [
            pair("ttd", 1, 100, 1000),
            pair("ttd", 2, 500, 2000),
            pair("digdir", 3, 600, 3000),
        ];
        let (old, new) = (pairs[0].kid(), pairs[1].kid());
        assert_eq!(chosen(&pairs, None, 99), None);
        assert_eq!(chosen(&pairs, None, 499), Some(old.clone()));
        assert_eq!(chosen(&pairs, None, 1000), Some(new.clone()));
        assert_eq!(chosen(&pairs, None, 2000), Some(new));
        assert_eq!(
            chosen(&pairs, None, 2001),
            None,
            "every certificate has expired"
        );
    }

    #[test]
    fn a_pinned_key_is_active_only_while_its_certificate_is_valid() {
        let pairs = [pair("ttd", 1, 100, 1000), pair("ttd", 2, 500, 2000)];
        let old = pairs[0].kid();
        let pinned = Some(old.as_str());
        assert_eq!(chosen(&pairs, pinned, 600), Some(old.clone()));
        assert_eq!(
            chosen(&pairs, Some(&old.to_ascii_lowercase()), 1000),
            Some(old.clone())
        );
        assert_eq!(
            chosen(&pairs, pinned, 1001),
            None,
            "expired, though another key is valid"
        );
        assert_eq!(chosen(&pairs, pinned, 99), None, "not yet valid");
    }
}
