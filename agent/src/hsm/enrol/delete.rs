//! Taking a certificate off the token, and its key with its last
//! certificate.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{objects_with_id, EnrolError};
use crate::hsm::held_signals::HeldSignals;
use crate::hsm::key_pairs::{self, KeyPair};
use crate::hsm::HsmError;

/// What a deletion removed.
#[derive(Debug)]
pub struct Deleted {
    pub objects: usize,
    /// The kids of the key's other certificates, when the key stays for them.
    pub key_kept_for: Vec<String>,
}

/// Removes the certificate with kid `id`, and its key unless other
/// certificates of the key stay. A kid with no complete pair (an
/// interrupted enrolment, objects made by other tools) loses every object
/// with that CKA_ID. Certificates go first, so that an interrupted deletion
/// leaves a key that no longer signs.
pub fn delete(session: &Session, id: &[u8]) -> Result<Deleted, EnrolError> {
    let pairs = key_pairs::list(session, None)?;
    let (mut handles, key_kept_for) = match pairs.iter().find(|pair| pair.id == id) {
        Some(pair) => objects_of(session, &pairs, pair)?,
        None => {
            refuse_a_key_in_use(&pairs, id)?;
            (objects_with_id(session, id)?, Vec::new())
        }
    };
    if handles.is_empty() {
        return Err(EnrolError::NoSuchKid(crate::token::upper_hex(id)));
    }
    let is_certificate = |handle: &ObjectHandle| {
        session
            .get_attributes(*handle, &[AttributeType::Class])
            .map(|a| a.contains(&Attribute::Class(ObjectClass::CERTIFICATE)))
            .unwrap_or(false)
    };
    handles.sort_by_key(|handle| !is_certificate(handle));
    let _held = HeldSignals::hold();
    for handle in &handles {
        session
            .destroy_object(*handle)
            .map_err(|e| HsmError::from_cryptoki("C_DestroyObject", e))?;
    }
    Ok(Deleted {
        objects: handles.len(),
        key_kept_for,
    })
}

/// The objects deleting `pair` removes: only its certificate while the key
/// has others, otherwise the certificate and the key's objects.
fn objects_of(
    session: &Session,
    pairs: &[KeyPair],
    pair: &KeyPair,
) -> Result<(Vec<ObjectHandle>, Vec<String>), HsmError> {
    let others: Vec<String> = pairs
        .iter()
        .filter(|other| pair.shares_key_with(other))
        .map(KeyPair::kid)
        .collect();
    if let (Some((handle, _)), false) = (&pair.certificate, others.is_empty()) {
        return Ok((vec![*handle], others));
    }
    let mut handles = objects_with_id(session, &pair.id)?;
    if pair.key_id != pair.id {
        handles.extend(objects_with_id(session, &pair.key_id)?);
    }
    Ok((handles, Vec::new()))
}

/// `id` names a key whose own certificate is gone but whose other
/// certificates still use it: deleting it would leave them without a key.
fn refuse_a_key_in_use(pairs: &[KeyPair], id: &[u8]) -> Result<(), EnrolError> {
    let users: Vec<String> = pairs
        .iter()
        .filter(|pair| pair.key_id == id)
        .map(KeyPair::kid)
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(EnrolError::KeyInUse {
        kid: crate::token::upper_hex(id),
        certificates: users.join(", "),
    })
}
