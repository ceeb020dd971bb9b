//! Putting keys and certificates on the token and taking them off again:
//! PKCS#12 import ([`import()`]), generation inside the HSM with a
//! self-signed certificate ([`generate()`]), a new certificate for a key
//! there ([`renew()`]), a request a CA certifies it from ([`csr`]) and the
//! certificate the CA issues ([`attach()`]), and deletion ([`delete()`]).
//!
//! Every enrolment writes the private key, then its public key, and the
//! certificate last: the
//! certificate is the commit marker, and [`super::key_pairs`] never signs with a
//! pair that lacks it. If any step fails, the objects created so far are
//! destroyed again (`Pending`), so nothing of a failed enrolment remains.

mod attach;
pub mod csr;
mod delete;
pub mod generate;
mod hsm_key;
pub mod import;
pub mod renew;
pub mod subject;

pub use attach::attach;
pub use delete::{delete, Deleted};
pub use generate::{generate, CertificateRequest};
pub use import::{import, read_pkcs12, read_pkcs12_certificate, KeyMaterial};
pub use renew::renew;

use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::x509::X509;

use super::held_signals::HeldSignals;
use super::HsmError;
use crate::exit;

/// Why an enrolment or deletion failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The file, key or certificate given cannot be used; the message says
    /// why and what to do.
    #[error("{0}")]
    Input(String),
    #[error("kid {kid} is already on the token (issuer {issuer:?}); to enrol it again, remove it first with `access-token-agent keys delete --kid {kid}`")]
    AlreadyEnrolled { kid: String, issuer: String },
    #[error("no object with kid {0} on the token; `access-token-agent keys list` shows the kids there are")]
    NoSuchKid(String),
    #[error("no key on the token has the public key of the certificate (kid {kid}, {subject}): it was issued for another key; have the CA certify a key in the HSM with the request `access-token-agent keys csr` makes")]
    NoKeyFor { kid: String, subject: String },
    #[error("{kid} is no certificate's kid any more but the key of the certificate(s) {certificates}; delete those instead: the key goes with the last of them")]
    KeyInUse { kid: String, certificates: String },
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

impl EnrolError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            EnrolError::Input(_) => exit::DATA,
            EnrolError::AlreadyEnrolled { .. } => exit::FAILURE,
            EnrolError::NoSuchKid(_) => exit::UNAVAILABLE,
            EnrolError::KeyInUse { .. } => exit::FAILURE,
            EnrolError::NoKeyFor { .. } => exit::DATA,
            EnrolError::Hsm(error) => error.exit_code(),
        }
    }
}

/// Objects of an enrolment that has not yet written its certificate.
/// Dropped without [`Pending::commit`] (an error, an early return, a
/// panic), it destroys them, newest first. While it lives, Ctrl-C and
/// SIGTERM wait, so that they end the command after the enrolment, not
/// half-way through it.
struct Pending<'s> {
    session: &'s Session,
    created: Vec<ObjectHandle>,
    _held: HeldSignals,
}

impl<'s> Pending<'s> {
    fn new(session: &'s Session) -> Pending<'s> {
        Pending {
            session,
            created: Vec::new(),
            _held: HeldSignals::hold(),
        }
    }

    /// Takes responsibility for an object created elsewhere (key generation).
    fn adopt(&mut self, handle: ObjectHandle) {
        self.created.push(handle);
    }

    /// Creates the object `what` (named in the error) from `template`; it is
    /// destroyed again unless the enrolment commits.
    fn create(&mut self, what: &str, template: &[Attribute]) -> Result<ObjectHandle, HsmError> {
        let handle = self
            .session
            .create_object(template)
            .map_err(|e| HsmError::from_cryptoki(&format!("C_CreateObject ({what})"), e))?;
        self.created.push(handle);
        Ok(handle)
    }

    /// The enrolment is complete: keep everything.
    fn commit(mut self) {
        self.created.clear();
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        for handle in self.created.drain(..).rev() {
            if let Err(error) = self.session.destroy_object(handle) {
                tracing::error!(
                    "cannot remove object {handle} of the failed enrolment ({error}); `access-token-agent keys list` shows it as incomplete and `keys delete --kid` removes it"
                );
            }
        }
    }
}

/// A template whose byte values (key components) are zeroized on drop.
struct SecretTemplate(Vec<Attribute>);

impl Drop for SecretTemplate {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for attribute in &mut self.0 {
            match attribute {
                Attribute::Value(bytes)
                | Attribute::PrivateExponent(bytes)
                | Attribute::Prime1(bytes)
                | Attribute::Prime2(bytes)
                | Attribute::Exponent1(bytes)
                | Attribute::Exponent2(bytes)
                | Attribute::Coefficient(bytes)
                | Attribute::Modulus(bytes)
                | Attribute::PublicExponent(bytes) => bytes.zeroize(),
                _ => {}
            }
        }
    }
}

/// The attributes every private key the agent enrols carries: on the token,
/// private, sensitive, never extractable, and able to sign and nothing else.
fn private_key_policy(issuer: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::SignRecover(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(issuer.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// The attributes of the public key object beside it. `private` makes it
/// readable, and writable, only by a logged-in user: an imported key's
/// public key object is what proves that its certificate holds it
/// ([`super::key_pairs::rules`]), so nobody without the PIN may have
/// written it. A generated one is proven by the token having made it.
fn public_key_policy(issuer: &str, id: &[u8], private: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(true),
        Attribute::Private(private),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(issuer.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// The certificate object: the DER and the fields PKCS#11 tools show,
/// public so that it can be read without logging in.
fn certificate_template(der: &[u8], issuer: &str, id: &[u8]) -> Result<Vec<Attribute>, EnrolError> {
    let x509 = X509::from_der(der).map_err(|e| EnrolError::Input(format!("certificate: {e}")))?;
    let name_der = |name: &openssl::x509::X509NameRef| {
        name.to_der()
            .map_err(|e| EnrolError::Input(format!("certificate name: {e}")))
    };
    let serial = x509
        .serial_number()
        .to_bn()
        .map_err(|e| EnrolError::Input(format!("certificate serial number: {e}")))?;
    Ok(vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(issuer.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(name_der(x509.subject_name())?),
        Attribute::Issuer(name_der(x509.issuer_name())?),
        Attribute::SerialNumber(der_integer(&serial.to_vec())),
        Attribute::Value(der.to_vec()),
    ])
}

/// DER INTEGER of a non-negative big-endian magnitude (CKA_SERIAL_NUMBER).
fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    let pad = digits.first().is_none_or(|&b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    let mut out = vec![0x02];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// Every object carrying CKA_ID `id`, of any class and label.
fn objects_with_id(session: &Session, id: &[u8]) -> Result<Vec<ObjectHandle>, HsmError> {
    session
        .find_objects(&[Attribute::Id(id.to_vec())])
        .map_err(|e| HsmError::from_cryptoki("C_FindObjects", e))
}

/// Refuses an enrolment whose kid is already on the token, complete or not.
fn ensure_new_kid(session: &Session, id: &[u8]) -> Result<(), EnrolError> {
    let Some(&existing) = objects_with_id(session, id)?.first() else {
        return Ok(());
    };
    let issuer = session
        .get_attributes(existing, &[AttributeType::Label])
        .ok()
        .and_then(|attributes| {
            attributes
                .into_iter()
                .find_map(|attribute| match attribute {
                    Attribute::Label(label) => String::from_utf8(label).ok(),
                    _ => None,
                })
        })
        .unwrap_or_default();
    Err(EnrolError::AlreadyEnrolled {
        kid: crate::token::upper_hex(id),
        issuer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integer_is_minimal_and_positive() {
        assert_eq!(der_integer(&[0x01]), [0x02, 0x01, 0x01]);
        assert_eq!(der_integer(&[0x00, 0x00, 0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(der_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(
            der_integer(&[0x00, 0xFF, 0x00, 0x11]),
            [0x02, 0x04, 0x00, 0xFF, 0x00, 0x11]
        );
        assert_eq!(der_integer(&[]), [0x02, 0x01, 0x00]);
        let long = der_integer(&[0x11; 200]);
        assert_eq!(&long[..4], &[0x02, 0x81, 200, 0x11]);
    }
}
