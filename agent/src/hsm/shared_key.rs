//! Several certificates for one key: a renewed certificate, or one a CA
//! issued for a key already on the token, is another certificate object
//! for the same key.
//!
//! Each certificate object keeps CKA_ID = its own SHA-1 thumbprint (its
//! kid), so that an issuer and a CKA_ID still name at most one object of a
//! class, and the key keeps the CKA_ID it was enrolled under. A certificate
//! without a private key under its own CKA_ID belongs to the issuer's key
//! whose public key it holds: the key's public key object (renewing and
//! attaching write one for an imported key that has none), else the key's
//! own certificate. An agent that does not know this lists such a
//! certificate as incomplete and never signs with it.
//!
//! Anyone who can open a session may write public objects without logging
//! in, so such a certificate counts only if it is a private object (only a
//! logged-in user can create one, and renewing and attaching write it so),
//! and a public key object only if it is private too or was generated with
//! the key (CKA_LOCAL). A key's own certificate needs neither: its
//! thumbprint is the CKA_ID that only a logged-in user set on the key.

use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;

use super::HsmError;
use crate::cert::Certificate;
use crate::key_type::KeyKind;

/// What finding a certificate's key needs to know of the objects that
/// share an issuer and a CKA_ID.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    pub issuer: &'a str,
    /// The certificate object and what it holds.
    pub certificate: Option<(ObjectHandle, &'a Certificate)>,
    pub private_key: bool,
    pub public_key: Option<ObjectHandle>,
}

/// For each group that is a certificate without a private key, the group
/// of the same issuer whose key has that certificate's public key.
pub fn owners(session: &Session, groups: &[Group]) -> Result<Vec<Option<usize>>, HsmError> {
    groups
        .iter()
        .map(|group| match group.certificate {
            Some((handle, cert)) if !group.private_key => {
                match written_logged_in(session, handle, false)? {
                    true => owner_of(session, groups, group.issuer, cert),
                    false => Ok(None),
                }
            }
            _ => Ok(None),
        })
        .collect()
}

fn owner_of(
    session: &Session,
    groups: &[Group],
    issuer: &str,
    cert: &Certificate,
) -> Result<Option<usize>, HsmError> {
    let Ok(wanted) = cert.public_key() else {
        return Ok(None);
    };
    for (index, key) in groups.iter().enumerate() {
        if key.issuer == issuer
            && key.private_key
            && public_key(session, key, cert.key)?.as_ref() == Some(&wanted)
        {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// The public key of the key in `key` in the form `kind`'s certificates
/// hold it: from its public key object, else from its own certificate.
/// `None` when neither is there, or the key is of another kind.
pub fn public_key(
    session: &Session,
    key: &Group,
    kind: KeyKind,
) -> Result<Option<Vec<u8>>, HsmError> {
    if let Some(handle) = key.public_key {
        if !written_logged_in(session, handle, true)? {
            return Ok(None);
        }
        return match read_public_key(session, handle, kind) {
            Ok(public) => Ok(Some(public)),
            Err(error) if error.is_connection_fault() => Err(error),
            Err(_) => Ok(None),
        };
    }
    Ok(key
        .certificate
        .filter(|(_, cert)| cert.key.alg() == kind.alg())
        .and_then(|(_, cert)| cert.public_key().ok()))
}

/// Whether only a logged-in user can have written the object: it is
/// private, or (with `or_generated`) the token generated it.
fn written_logged_in(
    session: &Session,
    handle: ObjectHandle,
    or_generated: bool,
) -> Result<bool, HsmError> {
    match session.get_attributes(handle, &[AttributeType::Private, AttributeType::Local]) {
        Ok(attributes) => Ok(attributes.iter().any(|attribute| match attribute {
            Attribute::Private(private) => *private,
            Attribute::Local(local) => or_generated && *local,
            _ => false,
        })),
        Err(error) => {
            let error = HsmError::from_cryptoki("C_GetAttributeValue", error);
            match error.is_connection_fault() {
                true => Err(error),
                false => Ok(false),
            }
        }
    }
}

/// A public key object's key, as [`KeyKind::public_key_der`] encodes it.
pub fn read_public_key(
    session: &Session,
    handle: ObjectHandle,
    kind: KeyKind,
) -> Result<Vec<u8>, HsmError> {
    let values = kind
        .public_key_attributes()
        .iter()
        .map(|&wanted| read_attribute(session, handle, wanted))
        .collect::<Result<Vec<_>, _>>()?;
    kind.public_key_der(&values)
        .map_err(|reason| HsmError::Invalid {
            what: "reading a public key object".into(),
            reason,
        })
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
            what: "reading a public key object".into(),
            reason: format!("the token did not return {wanted}"),
        })
}
