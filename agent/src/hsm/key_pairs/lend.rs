//! Lending a key to its other certificates before the rules judge them.
//!
//! A key may have more certificates than the one it was enrolled with
//! (renewed, or issued by a CA); [`crate::hsm::shared_key`] says how they
//! find it. Each is a pair of its own, under its own CKA_ID (its kid), that
//! holds no private key: it borrows the key's private and public key objects
//! so that [`super::rules`] judges it as the key's pair, with its own
//! certificate. A key whose own certificate is gone is then listed only
//! through its other certificates.

use cryptoki::session::Session;

use super::rules::Members;
use crate::hsm::shared_key::{self, Group};
use crate::hsm::HsmError;

/// The objects under one label and CKA_ID, not yet judged.
#[derive(Debug)]
pub struct Gathered {
    pub issuer: String,
    pub id: Vec<u8>,
    /// CKA_ID of the key objects: `id`, unless the key was lent.
    pub key_id: Vec<u8>,
    pub members: Members,
    /// Another certificate borrowed this group's key.
    pub lent: bool,
}

impl Gathered {
    pub fn new(issuer: String, id: Vec<u8>, members: Members) -> Gathered {
        Gathered {
            issuer,
            key_id: id.clone(),
            id,
            members,
            lent: false,
        }
    }

    /// What [`shared_key`] needs to know of the group: its first certificate
    /// that parses, and its first public key object that a logged-in user
    /// wrote or the token generated (else its first).
    fn group(&self) -> Group<'_> {
        let members = &self.members;
        let trusted =
            |key: &&super::objects::PublicKey| key.private == Some(true) || key.local == Some(true);
        Group {
            issuer: &self.issuer,
            certificate: members
                .certificates
                .iter()
                .find_map(|c| Some((c.handle, c.parsed.as_ref().ok()?))),
            private_key: !members.private_keys.is_empty(),
            public_key: members
                .public_keys
                .iter()
                .find(trusted)
                .or(members.public_keys.first())
                .map(|key| key.handle),
        }
    }
}

/// Gives each certificate without a key of its own the objects of the key
/// it belongs to, next to its own, and drops the keys that were lent and
/// have no certificate object of their own left.
pub fn lend_keys(
    session: &Session,
    mut gathered: Vec<Gathered>,
) -> Result<Vec<Gathered>, HsmError> {
    let owners = {
        let groups: Vec<Group> = gathered.iter().map(Gathered::group).collect();
        shared_key::owners(session, &groups)?
    };
    for (at, owner) in owners.into_iter().enumerate() {
        let Some(owner) = owner.filter(|&owner| owner != at) else {
            continue;
        };
        let key = &gathered[owner];
        let private_keys = key.members.private_keys.clone();
        let public_keys = key.members.public_keys.clone();
        let key_id = key.id.clone();
        gathered[owner].lent = true;
        let borrower = &mut gathered[at];
        borrower.members.private_keys.extend(private_keys);
        borrower.members.public_keys.extend(public_keys);
        borrower.key_id = key_id;
    }
    Ok(gathered
        .into_iter()
        .filter(|group| !group.lent || !group.members.certificates.is_empty())
        .collect())
}
