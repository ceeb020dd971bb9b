//! PKCS#12 import: the private key becomes a sensitive, non-extractable,
//! sign-only token object; its public key (a private object) and the
//! certificate are stored beside it.
//!
//! OpenSSL reads every PKCS#12 flavour operators bring: Altinn's files (3DES
//! key bag, plain certificate bag, SHA-1 MAC over the null password), OpenSSL
//! 3's PBES2/AES-256 with a SHA-256 MAC, and, with OpenSSL's legacy provider
//! loaded, Windows exports whose certificate bag uses RC2-40.

use std::sync::OnceLock;

use cryptoki::object::Attribute;
use cryptoki::session::Session;
use openssl::bn::BigNumRef;
use openssl::error::ErrorStack;
use openssl::pkcs12::{ParsedPkcs12_2, Pkcs12};
use openssl::pkey::{Id, PKey, Private};
use openssl::provider::Provider;
use openssl::x509::X509;
use zeroize::Zeroizing;

use super::SecretTemplate;
use super::{
    certificate_template, ensure_new_kid, private_key_policy, public_key_policy, EnrolError,
    Pending,
};
use crate::cert::Certificate;
use crate::key_type::{self, KeyKind, MIN_RSA_BITS, SUPPORTED_KEYS};

/// The command that rewrites an old PKCS#12 file in a form OpenSSL 3 reads.
const CONVERT: &str =
    "openssl pkcs12 -in old.pfx -nodes -legacy | openssl pkcs12 -export -out new.pfx";

/// What a PKCS#12 file holds, read and checked; nothing has touched the
/// token yet.
pub struct KeyMaterial {
    /// The key's certificate.
    pub certificate: Certificate,
    /// The private key's components as PKCS#11 attributes, zeroized on drop.
    components: SecretTemplate,
    /// The key type and public values of its public key object.
    public: Vec<Attribute>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("certificate", &self.certificate.kid())
            .finish_non_exhaustive()
    }
}

/// Stores the key and certificate of a PKCS#12 file ([`read_pkcs12`]) on
/// the token for `issuer`, both with CKA_ID = the certificate's SHA-1
/// thumbprint. Returns the certificate enrolled.
pub fn import(
    session: &Session,
    issuer: &str,
    material: KeyMaterial,
) -> Result<Certificate, EnrolError> {
    let KeyMaterial {
        certificate: cert,
        mut components,
        public,
    } = material;
    ensure_new_kid(session, &cert.thumbprint)?;
    let mut key = SecretTemplate(private_key_policy(issuer, &cert.thumbprint));
    key.0.append(&mut components.0);
    let mut public_key = public_key_policy(issuer, &cert.thumbprint, true);
    public_key.extend(public);
    let mut pending = Pending::new(session);
    pending.create("private key", &key.0)?;
    pending.create("public key", &public_key)?;
    pending.create(
        "certificate",
        &certificate_template(&cert.der, issuer, &cert.thumbprint)?,
    )?;
    pending.commit();
    Ok(cert)
}

/// Reads and checks a PKCS#12 file without touching the token: it must
/// open with `password`, hold an RSA (at least [`MIN_RSA_BITS`]) or P-256
/// private key and that key's certificate. Every refusal says what to do.
pub fn read_pkcs12(pfx: &[u8], password: &str) -> Result<KeyMaterial, EnrolError> {
    let (key, x509) = open_pkcs12(pfx, password)?;
    let kind = check_key(&key, &x509)?;
    let certificate = certificate_of(&x509)?;
    let components = key_components(&key, kind)?;
    let mut public = kind.object_attributes();
    public.extend(
        key_type::public_key_values(&key)
            .map_err(|e| EnrolError::Input(format!("cannot read the public key: {e}")))?,
    );
    Ok(KeyMaterial {
        certificate,
        components,
        public,
    })
}

/// The certificate of a PKCS#12 file, for a key already on the token, and
/// whether the file holds a private key too; that key is never stored.
pub fn read_pkcs12_certificate(
    pfx: &[u8],
    password: &str,
) -> Result<(Certificate, bool), EnrolError> {
    let ParsedPkcs12_2 { pkey, cert, ca } = parse(pfx, password)?;
    // Without a key, OpenSSL cannot tell the file's own certificate from a
    // chain and lists them all with the CA's.
    let others: Vec<X509> = ca
        .map(|stack| stack.into_iter().collect())
        .unwrap_or_default();
    let x509 = match (cert, <[X509; 1]>::try_from(others)) {
        (Some(cert), _) => cert,
        (None, Ok([only])) => only,
        (None, Err(others)) if others.is_empty() => {
            return Err(EnrolError::Input(
                "the PKCS#12 file holds no certificate; export it again with the certificate"
                    .into(),
            ))
        }
        (None, Err(others)) => {
            return Err(EnrolError::Input(format!(
                "the PKCS#12 file holds {} certificates and no key to tell which one is its own; give that certificate with --cert FILE",
                others.len()
            )))
        }
    };
    Ok((certificate_of(&x509)?, pkey.is_some()))
}

/// The file's certificate in the agent's terms.
fn certificate_of(x509: &X509) -> Result<Certificate, EnrolError> {
    let der = x509
        .to_der()
        .map_err(|e| EnrolError::Input(format!("cannot encode the certificate: {e}")))?;
    Certificate::from_der(&der).map_err(|e| EnrolError::Input(e.to_string()))
}

/// The file opened with `password`.
fn parse(pfx: &[u8], password: &str) -> Result<ParsedPkcs12_2, EnrolError> {
    load_legacy_provider();
    let file = Pkcs12::from_der(pfx).map_err(|e| {
        EnrolError::Input(format!(
            "not a PKCS#12 (.pfx/.p12) file ({}); to pack a PEM key and certificate: openssl pkcs12 -export -inkey key.pem -in cert.pem -out new.pfx",
            describe(&e)
        ))
    })?;
    file.parse2(password).map_err(unreadable)
}

/// The private key and the certificate that belongs to it.
fn open_pkcs12(pfx: &[u8], password: &str) -> Result<(PKey<Private>, X509), EnrolError> {
    let ParsedPkcs12_2 { pkey, cert, .. } = parse(pfx, password)?;
    match (pkey, cert) {
        (Some(key), Some(cert)) => Ok((key, cert)),
        (None, _) => Err(EnrolError::Input(
            "the PKCS#12 file holds no private key; export it again with the key included".into(),
        )),
        (Some(_), None) => Err(EnrolError::Input(
            "the PKCS#12 file holds no certificate for its private key; export it again with the key's certificate".into(),
        )),
    }
}

/// RC2-40 (Windows certificate bags) lives in OpenSSL 3's legacy provider.
/// Loaded once, with the default provider kept, and held for the process's
/// lifetime; where it is not installed, such files get the conversion hint.
fn load_legacy_provider() {
    static LEGACY: OnceLock<Option<Provider>> = OnceLock::new();
    LEGACY.get_or_init(|| Provider::try_load(None, "legacy", true).ok());
}

/// Why OpenSSL could not open the file, in words an operator can act on.
fn unreadable(error: ErrorStack) -> EnrolError {
    let detail = describe(&error);
    let lower = detail.to_ascii_lowercase();
    let message = if lower.contains("mac verify") {
        format!("wrong password: the file's integrity check (MAC) fails with the password given ({detail}); pass the right one with --password-file FILE (without it the empty password is used)")
    } else if lower.contains("unsupported") || lower.contains("fetch") || lower.contains("unknown")
    {
        format!("the file uses an encryption scheme OpenSSL cannot read here ({detail}); convert it with: {CONVERT}")
    } else {
        format!("cannot decrypt the file ({detail}); check the password, or convert the file with: {CONVERT}")
    };
    EnrolError::Input(message)
}

/// OpenSSL's reasons and details, e.g. `unsupported (Algorithm (RC2-40-CBC : 0))`.
fn describe(error: &ErrorStack) -> String {
    let parts: Vec<String> = error
        .errors()
        .iter()
        .map(|e| match (e.reason(), e.data()) {
            (Some(reason), Some(data)) => format!("{reason}: {data}"),
            (Some(reason), None) => reason.to_owned(),
            (None, _) => format!("error {:#x}", e.code()),
        })
        .collect();
    if parts.is_empty() {
        "no detail from OpenSSL".into()
    } else {
        parts.join("; ")
    }
}

/// The key must be of a type [`KeyKind::of`] knows and not
/// [too small](KeyKind::is_too_small), and the certificate must carry its
/// public half.
fn check_key(key: &PKey<Private>, cert: &X509) -> Result<KeyKind, EnrolError> {
    let kind = KeyKind::of(key).ok_or_else(|| {
        EnrolError::Input(format!(
            "the private key is {:?}{}; only {SUPPORTED_KEYS} keys can sign Altinn tokens",
            key.id(),
            key_type::curve(key)
                .map(|c| format!(" on {}", c.short_name().unwrap_or("?")))
                .unwrap_or_default()
        ))
    })?;
    if kind.is_too_small() {
        return Err(EnrolError::Input(format!(
            "the RSA key has {} bits; Altinn tokens need at least {MIN_RSA_BITS} (.NET refuses to sign with fewer); get a certificate for a larger key, or create one in the HSM with `access-token-agent keys generate`",
            key.bits()
        )));
    }
    let public = cert
        .public_key()
        .map_err(|e| EnrolError::Input(format!("cannot read the certificate's key: {e}")))?;
    if !public.public_eq(key) {
        return Err(EnrolError::Input(
            "the certificate in the file is not the private key's certificate (their public keys differ); export the key together with its own certificate".into(),
        ));
    }
    Ok(kind)
}

/// The `kind` key's type and components as PKCS#11 attributes. The template
/// zeroizes them when dropped, also when reading one of them fails half-way.
fn key_components(key: &PKey<Private>, kind: KeyKind) -> Result<SecretTemplate, EnrolError> {
    let mut template = SecretTemplate(kind.object_attributes());
    let read = match key.id() {
        Id::RSA => push_rsa_components(key, &mut template.0),
        _ => push_ec_components(key, &mut template.0),
    };
    read.map_err(|e| EnrolError::Input(format!("cannot read the private key: {e}")))?;
    Ok(template)
}

/// One CRT component of an RSA key and the attribute that carries it.
type CrtPart<'k> = (Option<&'k BigNumRef>, fn(Vec<u8>) -> Attribute);

fn push_rsa_components(key: &PKey<Private>, out: &mut Vec<Attribute>) -> Result<(), String> {
    let rsa = key.rsa().map_err(|e| e.to_string())?;
    out.push(Attribute::Modulus(rsa.n().to_vec()));
    out.push(Attribute::PublicExponent(rsa.e().to_vec()));
    out.push(Attribute::PrivateExponent(rsa.d().to_vec()));
    let crt: [CrtPart; 5] = [
        (rsa.p(), Attribute::Prime1),
        (rsa.q(), Attribute::Prime2),
        (rsa.dmp1(), Attribute::Exponent1),
        (rsa.dmq1(), Attribute::Exponent2),
        (rsa.iqmp(), Attribute::Coefficient),
    ];
    for (part, attribute) in crt {
        let part = part.ok_or("the RSA key lacks its CRT components (primes and exponents); export it again from the tool that made it")?;
        out.push(attribute(part.to_vec()));
    }
    Ok(())
}

/// The private scalar, padded to the size of the curve's order.
fn push_ec_components(key: &PKey<Private>, out: &mut Vec<Attribute>) -> Result<(), String> {
    let ec = key.ec_key().map_err(|e| e.to_string())?;
    let size = ec.group().order_bits().div_ceil(8);
    let scalar = ec
        .private_key()
        .to_vec_padded(size as i32)
        .map_err(|e| e.to_string())?;
    out.push(Attribute::Value(scalar));
    Ok(())
}

/// A password file's text: one trailing newline dropped, zeroized on drop.
/// A NUL byte is refused: OpenSSL takes the password as a C string, so it
/// could not be passed on.
pub fn password_from_bytes(bytes: &[u8]) -> Result<Zeroizing<String>, EnrolError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| EnrolError::Input("the password file is not UTF-8 text".into()))?;
    if text.contains('\0') {
        return Err(EnrolError::Input(
            "the password file contains a NUL byte, which no PKCS#12 password can hold; write only the password into it".into(),
        ));
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_loses_one_line_ending() {
        assert_eq!(
            password_from_bytes(b"secret\r\n").unwrap().as_str(),
            "secret"
        );
        assert_eq!(
            password_from_bytes(b"secret\n\n").unwrap().as_str(),
            "secret\n"
        );
        assert_eq!(password_from_bytes(b"").unwrap().as_str(), "");
    }

    #[test]
    fn a_nul_byte_in_the_password_file_is_refused() {
        for bytes in [&b"sec\0ret"[..], b"\0", b"secret\n\0"] {
            match password_from_bytes(bytes) {
                Err(EnrolError::Input(message)) => assert!(message.contains("NUL"), "{message}"),
                other => panic!("{bytes:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn altinn_test_file_is_read_without_a_token() {
        let pfx = include_bytes!("../../../../tests/data/ttd-org.pfx");
        let material = read_pkcs12(pfx, "").unwrap();
        // The kid Altinn publishes for its ttd test certificate.
        assert_eq!(
            material.certificate.kid(),
            "C5726728C38CFE6C16988454206B99CA29AE025E"
        );
        assert!(!material.components.0.is_empty());
    }

    #[test]
    fn bytes_that_are_not_pkcs12_are_refused_with_the_fix() {
        for bytes in [&b""[..], b"not a pfx", b"\x30\x03\x02\x01\x03"] {
            let Err(EnrolError::Input(message)) = read_pkcs12(bytes, "") else {
                panic!("{bytes:?} was accepted");
            };
            assert!(message.contains("openssl pkcs12 -export"), "{message}");
        }
    }
}
