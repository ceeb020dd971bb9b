//! One object on the token, read: what pairs it (class, label, CKA_ID) and
//! what judges it (protection flags, public key values, the certificate).

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::cert::Certificate;
use crate::hsm::HsmError;

/// A private key's flags as the token reports them; `None` where it
/// reports nothing.
#[derive(Debug, Clone, Copy)]
pub struct PrivateKey {
    pub handle: ObjectHandle,
    /// CKA_TOKEN: stored on the token, not a session object.
    pub token: Option<bool>,
    /// CKA_PRIVATE: only a logged-in session sees it, or could have made it.
    pub private: Option<bool>,
    pub sensitive: Option<bool>,
    pub extractable: Option<bool>,
    pub always_sensitive: Option<bool>,
    pub never_extractable: Option<bool>,
    pub sign: Option<bool>,
    /// CKA_LOCAL: generated on the token (an imported key is not).
    pub local: Option<bool>,
}

/// A public key object: its values, and whether only a logged-in user
/// could have written it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub handle: ObjectHandle,
    pub private: Option<bool>,
    pub local: Option<bool>,
    /// CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_EC_POINT, where present.
    pub values: Vec<Attribute>,
}

/// A certificate object and its DER, parsed or why not.
#[derive(Debug, Clone)]
pub struct CertificateObject {
    pub handle: ObjectHandle,
    pub parsed: Result<Certificate, String>,
}

/// What one object is, by class.
pub enum Member {
    Certificate(CertificateObject),
    /// The private key, and the public values it shows (RSA keys show
    /// modulus and exponent; EC keys seldom show their point).
    PrivateKey(PrivateKey, Vec<Attribute>),
    PublicKey(PublicKey),
}

/// One object: its label, its CKA_ID (empty when it has none) and what it is.
pub struct Object {
    pub label: String,
    pub id: Vec<u8>,
    pub member: Member,
}

/// The attributes read from every object. get_attributes leaves out what
/// the token will not reveal or the class lacks, so results are matched by
/// variant. CKA_VALUE is read only from certificates: a private key's value
/// must never be asked for.
const WANTED: [AttributeType; 14] = [
    AttributeType::Class,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::AlwaysSensitive,
    AttributeType::NeverExtractable,
    AttributeType::Sign,
    AttributeType::Local,
    AttributeType::Modulus,
    AttributeType::PublicExponent,
    AttributeType::EcPoint,
];

/// The object at `handle`; `None` for classes that are no part of a key
/// pair and labels that are empty or not text (no issuer name is).
pub fn read(session: &Session, handle: ObjectHandle) -> Result<Option<Object>, HsmError> {
    let attributes = session
        .get_attributes(handle, &WANTED)
        .map_err(|e| HsmError::from_cryptoki("C_GetAttributeValue", e))?;
    let mut class = None;
    let mut label = None;
    let mut id = Vec::new();
    for attribute in &attributes {
        match attribute {
            Attribute::Class(c) => class = Some(*c),
            Attribute::Label(l) => label = String::from_utf8(l.clone()).ok(),
            Attribute::Id(i) => id = i.clone(),
            _ => {}
        }
    }
    // No issuer's name is empty: an object without a label is no issuer's
    // (SoftHSM leaves such a shell when a process dies while creating one).
    let (Some(class), Some(label)) = (class, label.filter(|l| !l.is_empty())) else {
        return Ok(None);
    };
    let flag_of = |wanted| flag(&attributes, wanted);
    let member = if class == ObjectClass::CERTIFICATE {
        Member::Certificate(CertificateObject {
            handle,
            parsed: read_certificate(session, handle)?,
        })
    } else if class == ObjectClass::PRIVATE_KEY {
        let key = PrivateKey {
            handle,
            token: flag_of(AttributeType::Token),
            private: flag_of(AttributeType::Private),
            sensitive: flag_of(AttributeType::Sensitive),
            extractable: flag_of(AttributeType::Extractable),
            always_sensitive: flag_of(AttributeType::AlwaysSensitive),
            never_extractable: flag_of(AttributeType::NeverExtractable),
            sign: flag_of(AttributeType::Sign),
            local: flag_of(AttributeType::Local),
        };
        Member::PrivateKey(key, public_values(attributes))
    } else if class == ObjectClass::PUBLIC_KEY {
        Member::PublicKey(PublicKey {
            handle,
            private: flag_of(AttributeType::Private),
            local: flag_of(AttributeType::Local),
            values: public_values(attributes),
        })
    } else {
        return Ok(None);
    };
    Ok(Some(Object { label, id, member }))
}

fn flag(attributes: &[Attribute], wanted: AttributeType) -> Option<bool> {
    attributes.iter().find_map(|attribute| match attribute {
        Attribute::Token(b)
        | Attribute::Private(b)
        | Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::AlwaysSensitive(b)
        | Attribute::NeverExtractable(b)
        | Attribute::Sign(b)
        | Attribute::Local(b)
            if attribute.attribute_type() == wanted =>
        {
            Some(*b)
        }
        _ => None,
    })
}

fn public_values(attributes: Vec<Attribute>) -> Vec<Attribute> {
    attributes
        .into_iter()
        .filter(|attribute| {
            matches!(
                attribute,
                Attribute::Modulus(_) | Attribute::PublicExponent(_) | Attribute::EcPoint(_)
            )
        })
        .collect()
}

/// The bytes of the attribute of type `wanted` among `values`.
pub fn value_of(values: &[Attribute], wanted: AttributeType) -> Option<Vec<u8>> {
    values.iter().find_map(|attribute| match attribute {
        Attribute::Modulus(v) | Attribute::PublicExponent(v) | Attribute::EcPoint(v)
            if attribute.attribute_type() == wanted =>
        {
            Some(v.clone())
        }
        _ => None,
    })
}

/// The certificate object's DER, parsed, or why it cannot be: a damaged
/// object is judged (and listed) like any other, never hiding the rest.
fn read_certificate(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Result<Certificate, String>, HsmError> {
    let attributes = session
        .get_attributes(handle, &[AttributeType::Value])
        .map_err(|e| HsmError::from_cryptoki("C_GetAttributeValue", e))?;
    Ok(attributes
        .iter()
        .find_map(|attribute| match attribute {
            Attribute::Value(der) => Some(Certificate::from_der(der).map_err(|e| e.to_string())),
            _ => None,
        })
        .unwrap_or_else(|| Err("the object has no CKA_VALUE".into())))
}
