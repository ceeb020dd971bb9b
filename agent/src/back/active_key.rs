//! An issuer's key in service, and the keys and refusals the back serves
//! from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cert::Certificate;
use crate::hsm::key_pairs::SigningKey;

/// An issuer's key in service: the handle to sign with and the certificate
/// its signatures verify against.
#[derive(Debug)]
pub struct ActiveKey {
    pub signing: SigningKey,
    pub certificate: Certificate,
    /// The kid, shared by every token issued with this key.
    pub kid: Arc<str>,
}

/// Every configured issuer's active key, by issuer name.
pub type Keys = HashMap<Box<str>, Arc<ActiveKey>>;

/// The issuers that have no usable key any more, with the reason and what
/// to do about it.
pub type Unavailable = BTreeMap<Box<str>, Arc<str>>;
