//! The key pairs on the token: finding them, judging them, choosing the
//! active one per issuer.
//!
//! A key pair is the objects that share one CKA_LABEL (the issuer) and one
//! CKA_ID (the certificate's SHA-1 thumbprint): a private key, its public
//! key and its certificate. Enrolment writes the certificate last, so a
//! pair without its certificate is an interrupted enrolment. Only a pair
//! that passes every rule of [`rules`] signs; any other object with an
//! issuer's label is listed with the reason and never used, and two objects
//! of one class under one label and CKA_ID stop that issuer, never the
//! others.
//!
//! A key may have more certificates than the one it was enrolled with
//! (renewed, or issued by a CA): each is a pair of its own, with its own
//! kid, that borrows the key's objects before it is judged (`lend`).

mod lend;
mod objects;
pub mod rules;

use std::collections::BTreeMap;

use cryptoki::error::RvError;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use self::lend::Gathered;
use self::objects::Member;
use self::rules::{Flaw, Members};
use super::shared_key::Group;
use super::{Ckr, HsmError};
use crate::cert::Certificate;
use crate::token::SigningKeyId;

pub use self::objects::PrivateKey;

/// One key pair on the token, usable or not.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// CKA_LABEL: the issuer (`iss`) the pair signs for.
    pub issuer: String,
    /// CKA_ID: the certificate's SHA-1 thumbprint.
    pub id: Vec<u8>,
    /// CKA_ID of the key objects: `id`, except for a certificate that
    /// belongs to a key enrolled under another certificate.
    pub key_id: Vec<u8>,
    /// The first certificate object that parses.
    pub certificate: Option<(ObjectHandle, Certificate)>,
    /// The first private key object.
    pub private_key: Option<PrivateKey>,
    /// The first public key object.
    pub public_key: Option<ObjectHandle>,
    /// Why the pair may not sign; empty when it may.
    pub flaws: Vec<Flaw>,
    /// Objects of the pair that play no part in judging it, and why.
    pub ignored: Vec<String>,
}

/// A usable pair ready to sign: the key handle and the header fields.
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

    /// The pair passes every rule of [`rules`].
    pub fn is_usable(&self) -> bool {
        self.flaws.is_empty() && self.is_complete()
    }

    /// Two objects of one class under the pair's label and CKA_ID.
    pub fn is_ambiguous(&self) -> bool {
        self.flaws.iter().any(Flaw::is_ambiguity)
    }

    /// Why the pair may not sign, in one line; empty when it may.
    pub fn why_not_usable(&self) -> String {
        let flaws: Vec<String> = self.flaws.iter().map(Flaw::to_string).collect();
        flaws.join("; ")
    }

    /// The pair as a signing key, if it is usable.
    pub fn signing_key(&self) -> Option<SigningKey> {
        if !self.is_usable() {
            return None;
        }
        let (_, cert) = self.certificate.as_ref()?;
        Some(SigningKey {
            issuer: self.issuer.clone(),
            handle: self.private_key.as_ref()?.handle,
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

    #[cfg(test)]
    fn judged(issuer: String, id: Vec<u8>, members: Members) -> KeyPair {
        KeyPair::judge(Gathered::new(issuer, id, members))
    }

    fn judge(gathered: Gathered) -> KeyPair {
        let Gathered {
            issuer,
            id,
            key_id,
            members,
            ..
        } = gathered;
        let verdict = rules::judge(&id, &members);
        KeyPair {
            issuer,
            id,
            key_id,
            certificate: members
                .certificates
                .iter()
                .find_map(|c| Some((c.handle, c.parsed.clone().ok()?))),
            private_key: members.private_keys.first().map(|(key, _)| *key),
            public_key: members.public_keys.first().map(|key| key.handle),
            flaws: verdict.flaws,
            ignored: verdict.ignored,
        }
    }
}

/// Every key pair on the token, or only `issuer`'s, sorted by issuer and
/// kid, each judged. Private keys are only visible to a logged-in session.
pub fn list(session: &Session, issuer: Option<&str>) -> Result<Vec<KeyPair>, HsmError> {
    let mut template = Vec::new();
    if let Some(issuer) = issuer {
        template.push(Attribute::Label(issuer.as_bytes().to_vec()));
    }
    let handles = session
        .find_objects(&template)
        .map_err(|e| HsmError::from_cryptoki("C_FindObjects", e))?;
    let mut groups: BTreeMap<(String, Vec<u8>), Members> = BTreeMap::new();
    for handle in handles {
        let Some(object) = readable(handle, objects::read(session, handle))?.flatten() else {
            continue;
        };
        let members = groups.entry((object.label, object.id)).or_default();
        match object.member {
            Member::Certificate(cert) => members.certificates.push(cert),
            Member::PrivateKey(key, values) => members.private_keys.push((key, values)),
            Member::PublicKey(key) => members.public_keys.push(key),
        }
    }
    let gathered = groups
        .into_iter()
        .map(|((issuer, id), members)| Gathered::new(issuer, id, members))
        .collect();
    Ok(lend::lend_keys(session, gathered)?
        .into_iter()
        .map(KeyPair::judge)
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

/// The key an issuer signs with, among its usable pairs whose certificate
/// is valid at `now`: the pinned kid if one is configured, otherwise the one
/// with the latest not-before (so a newly enrolled key takes over once it is
/// valid). Altinn Platform refuses tokens whose certificate is outside its
/// validity, so an expired pinned key is no active key either. An issuer
/// with an ambiguous pair has no active key at all: which objects are the
/// agent's cannot be told.
pub fn select_active<'a>(
    pairs: &'a [KeyPair],
    issuer: &str,
    pinned_kid: Option<&str>,
    now: i64,
) -> Option<&'a KeyPair> {
    let of_issuer = || pairs.iter().filter(move |pair| pair.issuer == issuer);
    if of_issuer().any(KeyPair::is_ambiguous) {
        return None;
    }
    let mut usable = of_issuer()
        .filter(|pair| pair.is_usable())
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
            why: why_none(&pairs),
        })
}

/// What is wrong with the pairs of an issuer that has no active key, for
/// its error: nothing when they are only expired or absent.
fn why_none(pairs: &[KeyPair]) -> String {
    // A pair without a private key could never have signed: it is listed
    // by `keys list`, and only noise here.
    let flawed: Vec<String> = pairs
        .iter()
        .filter(|pair| !pair.flaws.is_empty())
        .filter(|pair| pair.private_key.is_some() || pair.is_ambiguous())
        .map(|pair| format!("kid {}: {}", pair.kid(), pair.why_not_usable()))
        .collect();
    let remedy = if pairs.iter().any(KeyPair::is_ambiguous) {
        "; the issuer signs with none of its keys until the object that is not the key's is removed (`pkcs11-tool --list-objects` shows them)"
    } else {
        ""
    };
    match flawed.is_empty() {
        true => String::new(),
        false => format!(" (not usable: {}{remedy})", flawed.join("; ")),
    }
}

#[cfg(test)]
mod tests;
