//! Another certificate for a key already on the token (see
//! [`crate::hsm::shared_key`]): a renewed one, or one a CA issued.

use cryptoki::object::Attribute;
use cryptoki::session::Session;

use super::{certificate_template, ensure_new_kid, public_key_policy, EnrolError, Pending};
use crate::cert::Certificate;
use crate::clock::rfc3339;
use crate::hsm::key_pairs::{self, KeyPair};
use crate::hsm::{shared_key, sign};

/// Attaches `cert` to the key on the token whose public key it holds, of
/// whichever issuer, and returns that issuer. Refused, with nothing changed
/// on the token, unless it is valid at `now`, new on the token, and a
/// signature of that key verifies with it.
pub fn attach(session: &Session, cert: &Certificate, now: i64) -> Result<String, EnrolError> {
    if now < cert.not_before {
        return Err(EnrolError::Input(format!(
            "the certificate (kid {}) is not valid yet: its validity starts at {}, and Platform refuses tokens under a certificate outside its validity; attach it once it is valid",
            cert.kid(),
            rfc3339(cert.not_before)
        )));
    }
    if now > cert.not_after {
        return Err(EnrolError::Input(format!(
            "the certificate (kid {}) expired at {}; ask the CA for a new one (`access-token-agent keys csr` makes the request)",
            cert.kid(),
            rfc3339(cert.not_after)
        )));
    }
    ensure_new_kid(session, &cert.thumbprint)?;
    let pairs = key_pairs::list(session, None)?;
    let key = key_of(session, &pairs, cert)?.ok_or_else(|| EnrolError::NoKeyFor {
        kid: cert.kid(),
        subject: cert.subject.clone(),
    })?;
    prove(session, key, cert)?;
    store(session, key, cert)?;
    Ok(key.issuer.clone())
}

/// The first pair whose private key has `cert`'s public key.
fn key_of<'p>(
    session: &Session,
    pairs: &'p [KeyPair],
    cert: &Certificate,
) -> Result<Option<&'p KeyPair>, EnrolError> {
    let wanted = cert
        .public_key()
        .map_err(|e| EnrolError::Input(e.to_string()))?;
    for pair in pairs.iter().filter(|pair| pair.private_key.is_some()) {
        if shared_key::public_key(session, &pair.group(), cert.key)?.as_ref() == Some(&wanted) {
            return Ok(Some(pair));
        }
    }
    Ok(None)
}

/// The public keys are equal; a signature the key makes and the
/// certificate verifies shows that the private key is that public key's.
fn prove(session: &Session, key: &KeyPair, cert: &Certificate) -> Result<(), EnrolError> {
    let Some(private) = key.private_key else {
        return Err(EnrolError::NoKeyFor {
            kid: cert.kid(),
            subject: cert.subject.clone(),
        });
    };
    let mut challenge = [0u8; 32];
    openssl::rand::rand_bytes(&mut challenge)
        .map_err(|e| EnrolError::Input(format!("random challenge: {e}")))?;
    let alg = cert.key.alg();
    let signature = sign::sign_with(session, alg, private.handle, &challenge)?;
    let checked = alg
        .jose_to_der(signature)
        .map_err(|e| e.to_string())
        .and_then(|der| cert.verify(&challenge, &der));
    checked.map_err(|reason| {
        EnrolError::Input(format!(
            "the key of kid {} has the certificate's public key, but its signature does not verify with it ({reason}); nothing was stored",
            key.kid()
        ))
    })
}

/// Stores `cert`, whose public key is `key`'s, as a certificate of that key:
/// a private object under its own kid and the key's issuer. A key without a public key
/// object (an imported one) gets one first, so that its certificates still
/// find it once its own certificate is deleted. The certificate is written
/// last; if anything fails, nothing of it stays.
pub(super) fn store(
    session: &Session,
    key: &KeyPair,
    cert: &Certificate,
) -> Result<(), EnrolError> {
    ensure_new_kid(session, &cert.thumbprint)?;
    let mut pending = Pending::new(session);
    if key.public_key.is_none() {
        let public = cert
            .public_key()
            .and_then(|public| {
                cert.key
                    .public_key_object(&public)
                    .map_err(crate::cert::CertError::Parse)
            })
            .map_err(|e| EnrolError::Input(e.to_string()))?;
        let mut template = public_key_policy(&key.issuer, &key.key_id, true);
        template.extend(public);
        pending.create("public key", &template)?;
    }
    let template = certificate_template(&cert.der, &key.issuer, &cert.thumbprint)?;
    pending.create("certificate", &private(template))?;
    pending.commit();
    Ok(())
}

/// `template` as a private object: only a logged-in user can write one,
/// which is what lets the certificate vouch for itself without the key's
/// CKA_ID ([`crate::hsm::shared_key`]).
fn private(mut template: Vec<Attribute>) -> Vec<Attribute> {
    for attribute in &mut template {
        if let Attribute::Private(private) = attribute {
            *private = true;
        }
    }
    template
}
