//! Which key pairs the agent may sign with. Anyone who can open a session
//! may write public objects (certificates, public keys) with any label and
//! CKA_ID without logging in, so the rules trust only what a logged-in user
//! made, and check everything else against it:
//!
//! - the private key is a token object, private (only a logged-in session
//!   can create one), sensitive, not extractable and allowed to sign. A key
//!   generated on the token (CKA_LOCAL) must also be always sensitive and
//!   never extractable. An imported key was outside the token before its
//!   import, so "never extractable" cannot be true of it (Kryoptic says so;
//!   SoftHSM claims it anyway): what it must be is sensitive and not
//!   extractable from then on;
//! - the certificate parses, and its SHA-1 thumbprint is the pair's CKA_ID
//!   (which only the logged-in user set, on the private key);
//! - the certificate holds the key's public half, compared with the values
//!   the private key shows (RSA's modulus and exponent), and with every
//!   public key object that only a logged-in user could have written
//!   (private) or that the token generated with the key (both CKA_LOCAL).
//!   Other public key objects prove nothing and are only noted;
//! - one object of each class: two with the same label and CKA_ID are
//!   ambiguous, never a silent choice.

use cryptoki::object::Attribute;

use super::objects::{value_of, CertificateObject, PrivateKey, PublicKey};
use crate::cert::Certificate;

/// The objects under one label and CKA_ID, by class.
#[derive(Debug, Default)]
pub struct Members {
    pub certificates: Vec<CertificateObject>,
    pub private_keys: Vec<(PrivateKey, Vec<Attribute>)>,
    pub public_keys: Vec<PublicKey>,
}

/// Why a pair may not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Flaw {
    #[error("{count} {class} objects carry this label and kid, so which one belongs to the key cannot be told")]
    Duplicate { class: &'static str, count: usize },
    #[error("the objects have no CKA_ID")]
    NoId,
    #[error("no certificate (an enrolment that did not finish, or a key made by another tool)")]
    NoCertificate,
    #[error("the certificate object does not parse ({0})")]
    UnreadableCertificate(String),
    #[error("the certificate's SHA-1 thumbprint is {0}, not the pair's CKA_ID")]
    ForeignCertificate(String),
    #[error("no private key")]
    NoPrivateKey,
    #[error("the private key {0}")]
    Protection(&'static str),
    #[error("the certificate does not hold the public key shown by {0}")]
    OtherKey(&'static str),
    #[error("the public key cannot be read from {0}")]
    UnreadablePublicKey(&'static str),
    #[error("nothing on the token shows the key's public half to compare with the certificate (no public values on the private key, and no public key object written while logged in or generated with the key); enrol the key again")]
    Unproven,
}

impl Flaw {
    /// Two objects of one class: the whole issuer stops, not just this pair.
    pub fn is_ambiguity(&self) -> bool {
        matches!(self, Flaw::Duplicate { .. })
    }
}

/// The verdict on one pair.
#[derive(Debug, Default)]
pub struct Judgement {
    /// Why it may not sign; empty when it may.
    pub flaws: Vec<Flaw>,
    /// Objects that play no part in the verdict, and why.
    pub ignored: Vec<String>,
}

/// Judges the pair `members` under CKA_ID `id`.
pub fn judge(id: &[u8], members: &Members) -> Judgement {
    let mut verdict = Judgement::default();
    let flaws = &mut verdict.flaws;
    for (class, count) in [
        ("certificate", members.certificates.len()),
        ("private key", members.private_keys.len()),
        ("public key", members.public_keys.len()),
    ] {
        if count > 1 {
            flaws.push(Flaw::Duplicate { class, count });
        }
    }
    if id.is_empty() {
        flaws.push(Flaw::NoId);
    }
    let certificate = match members.certificates.first().map(|c| &c.parsed) {
        None => {
            flaws.push(Flaw::NoCertificate);
            None
        }
        Some(Err(why)) => {
            flaws.push(Flaw::UnreadableCertificate(why.clone()));
            None
        }
        Some(Ok(cert)) if cert.thumbprint.as_slice() != id => {
            flaws.push(Flaw::ForeignCertificate(cert.kid()));
            None
        }
        Some(Ok(cert)) => Some(cert),
    };
    let Some((key, values)) = members.private_keys.first() else {
        flaws.push(Flaw::NoPrivateKey);
        return verdict;
    };
    flaws.extend(protection(key).into_iter().map(Flaw::Protection));
    if let Some(cert) = certificate {
        compare_public_keys(cert, key, values, &members.public_keys, &mut verdict);
    }
    verdict
}

/// What is wrong with the private key's flags, in words.
fn protection(key: &PrivateKey) -> Vec<&'static str> {
    let generated = key.local == Some(true);
    [
        (
            key.token != Some(true),
            "is a session object, not a token object (CKA_TOKEN)",
        ),
        (
            key.private != Some(true),
            "is not private: it was written without logging in (CKA_PRIVATE)",
        ),
        (
            key.sensitive != Some(true),
            "is not sensitive (CKA_SENSITIVE)",
        ),
        (
            key.extractable != Some(false),
            "is extractable (CKA_EXTRACTABLE)",
        ),
        (key.sign != Some(true), "may not sign (CKA_SIGN)"),
        (
            generated && key.never_extractable != Some(true),
            "was generated on the token but was extractable once (CKA_NEVER_EXTRACTABLE)",
        ),
        (
            generated && key.always_sensitive != Some(true),
            "was generated on the token but was readable once (CKA_ALWAYS_SENSITIVE)",
        ),
    ]
    .into_iter()
    .filter_map(|(wrong, what)| wrong.then_some(what))
    .collect()
}

/// Compares the certificate's public key with every trustworthy source.
fn compare_public_keys(
    cert: &Certificate,
    key: &PrivateKey,
    key_values: &[Attribute],
    public_keys: &[PublicKey],
    verdict: &mut Judgement,
) {
    let Ok(expected) = cert.public_key() else {
        verdict
            .flaws
            .push(Flaw::UnreadablePublicKey("the certificate"));
        return;
    };
    let mut sources = vec![(key_values, "the private key", false)];
    for public in public_keys {
        let written_logged_in = public.private == Some(true);
        let generated_with_key = public.local == Some(true) && key.local == Some(true);
        if written_logged_in || generated_with_key {
            sources.push((public.values.as_slice(), "its public key object", true));
        } else {
            verdict.ignored.push(format!(
                "public key object {} was written without logging in, so it proves nothing and is not compared",
                public.handle
            ));
        }
    }
    let wanted = cert.key.public_key_attributes();
    let mut compared = 0;
    for (values, source, required) in sources {
        let found: Option<Vec<Vec<u8>>> = wanted.iter().map(|&t| value_of(values, t)).collect();
        let Some(found) = found else {
            if required {
                verdict.flaws.push(Flaw::UnreadablePublicKey(source));
            }
            continue;
        };
        compared += 1;
        match cert.key.public_key_der(&found) {
            Ok(actual) if actual == expected => {}
            Ok(_) => verdict.flaws.push(Flaw::OtherKey(source)),
            Err(_) => verdict.flaws.push(Flaw::UnreadablePublicKey(source)),
        }
    }
    if compared == 0 {
        verdict.flaws.push(Flaw::Unproven);
    }
}
