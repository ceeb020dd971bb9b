//! The key types the agent signs with, and everything that differs between
//! them: the JWS `alg`, the `keys generate` names, the PKCS#11 mechanisms and
//! templates, the rcgen algorithm and the two forms of a signature.
//!
//! A new key type is a new variant here, and the compiler leads through the
//! `match`es of this file; the other modules ask, they do not match.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::PointConversionForm;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef};
use openssl::rsa::Rsa;

/// RSA keys below this size are refused: .NET will not sign with them.
pub const MIN_RSA_BITS: u32 = 2048;

/// The key types that can sign, for messages that refuse another.
pub const SUPPORTED_KEYS: &str = "RSA (2048 bits or more) and EC P-256";

/// DER of the OID prime256v1 (1.2.840.10045.3.1.7): CKA_EC_PARAMS of P-256 keys.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// Bytes in a P-256 coordinate, and in each of an ES256 signature's r and s.
const P256_BYTES: usize = 32;

/// A signing key's type, as read from a certificate or a PKCS#12 key, or as
/// chosen with `keys generate --key-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA, with its modulus size.
    Rsa { bits: u32 },
    /// EC on NIST P-256 (prime256v1).
    P256,
}

/// JWS signature algorithm, decided by the key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`CKM_SHA256_RSA_PKCS`).
    Rs256,
    /// ECDSA P-256 with SHA-256; the signature is the 64-byte r||s.
    Es256,
}

impl KeyKind {
    /// The type of an OpenSSL key, or `None` if it cannot sign Altinn tokens
    /// (another algorithm or curve). RSA keys of any size are given here;
    /// [`KeyKind::is_too_small`] tells the ones enrolment refuses.
    pub fn of<T: HasPublic>(key: &PKeyRef<T>) -> Option<KeyKind> {
        match key.id() {
            Id::RSA => Some(KeyKind::Rsa { bits: key.bits() }),
            Id::EC if curve(key) == Some(Nid::X9_62_PRIME256V1) => Some(KeyKind::P256),
            _ => None,
        }
    }

    /// An RSA key under [`MIN_RSA_BITS`].
    pub fn is_too_small(self) -> bool {
        matches!(self, KeyKind::Rsa { bits } if bits < MIN_RSA_BITS)
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(self) -> Alg {
        match self {
            KeyKind::Rsa { .. } => Alg::Rs256,
            KeyKind::P256 => Alg::Es256,
        }
    }

    /// A short name for listings: `rsa2048`, `p256`; for the types
    /// `keys generate` makes, the `--key-type` value.
    pub fn name(self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("rsa{bits}"),
            KeyKind::P256 => "p256".to_owned(),
        }
    }

    /// The C_GenerateKeyPair mechanism, and the public-key template's
    /// attributes that fix the key's size or curve.
    pub fn pair_generation(self) -> (Mechanism<'static>, Vec<Attribute>) {
        match self {
            KeyKind::Rsa { bits } => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(u64::from(bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ],
            ),
            KeyKind::P256 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P256_PARAMS.to_vec())],
            ),
        }
    }

    /// CKA_KEY_TYPE, and the curve where there is one, of a private key
    /// object created from imported components.
    pub fn object_attributes(self) -> Vec<Attribute> {
        match self {
            KeyKind::Rsa { .. } => vec![Attribute::KeyType(KeyType::RSA)],
            KeyKind::P256 => vec![
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(P256_PARAMS.to_vec()),
            ],
        }
    }

    /// The public-key attributes [`KeyKind::public_key_der`] is built from.
    pub fn public_key_attributes(self) -> &'static [AttributeType] {
        match self {
            KeyKind::Rsa { .. } => &[AttributeType::Modulus, AttributeType::PublicExponent],
            KeyKind::P256 => &[AttributeType::EcPoint],
        }
    }

    /// The public key in the form a certificate's SubjectPublicKeyInfo
    /// wraps (PKCS#1 RSAPublicKey, or the uncompressed EC point), from the
    /// values of [`KeyKind::public_key_attributes`], in that order.
    pub fn public_key_der(self, values: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        match (self, values) {
            (KeyKind::Rsa { .. }, [n, e]) => rsa_public_key(n, e),
            (KeyKind::P256, [point]) => ec_point(point, P256_BYTES),
            _ => Err(format!(
                "the {} public key: {} attribute values, expected {}",
                self.name(),
                values.len(),
                self.public_key_attributes().len()
            )),
        }
    }

    /// An OpenSSL key's public half (a certificate's) in the form
    /// [`KeyKind::public_key_der`] gives, so that the two compare.
    pub fn public_key_of<T: HasPublic>(self, key: &PKeyRef<T>) -> Result<Vec<u8>, String> {
        let encoded = match self {
            KeyKind::Rsa { .. } => key.rsa().and_then(|rsa| rsa.public_key_to_der_pkcs1()),
            KeyKind::P256 => key.ec_key().and_then(|ec| {
                let mut context = BigNumContext::new()?;
                ec.public_key().to_bytes(
                    ec.group(),
                    PointConversionForm::UNCOMPRESSED,
                    &mut context,
                )
            }),
        };
        encoded.map_err(|e| format!("the certificate's {} public key: {e}", self.name()))
    }

    /// The type and key attributes of a public key object holding
    /// `public_key` (as [`KeyKind::public_key_der`] encodes it): modulus and
    /// exponent, or curve and point.
    pub fn public_key_object(self, public_key: &[u8]) -> Result<Vec<Attribute>, String> {
        let mut attributes = self.object_attributes();
        match self {
            KeyKind::Rsa { .. } => {
                let rsa = Rsa::public_key_from_der_pkcs1(public_key)
                    .map_err(|e| format!("the RSA public key: {e}"))?;
                attributes.push(Attribute::Modulus(rsa.n().to_vec()));
                attributes.push(Attribute::PublicExponent(rsa.e().to_vec()));
            }
            KeyKind::P256 => {
                // CKA_EC_POINT is the point as a DER OCTET STRING.
                let point = ec_point(public_key, P256_BYTES)?;
                let mut wrapped = vec![0x04, point.len() as u8];
                wrapped.extend(point);
                attributes.push(Attribute::EcPoint(wrapped));
            }
        }
        Ok(attributes)
    }
}

/// `key`'s public half as [`KeyKind::public_key_der`] encodes it: PKCS#1
/// RSAPublicKey, or the uncompressed EC point.
pub fn public_key_bytes<T: HasPublic>(key: &PKeyRef<T>) -> Result<Vec<u8>, String> {
    let encoded = match key.id() {
        Id::RSA => key.rsa().and_then(|rsa| rsa.public_key_to_der_pkcs1()),
        Id::EC => key.ec_key().and_then(|ec| {
            let mut context = BigNumContext::new()?;
            ec.public_key()
                .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut context)
        }),
        other => return Err(format!("a {other:?} key")),
    };
    encoded.map_err(|e| e.to_string())
}

/// `key`'s public values as a public key object holds them: CKA_MODULUS
/// and CKA_PUBLIC_EXPONENT, or CKA_EC_POINT as PKCS#11 says, a DER OCTET
/// STRING around the uncompressed point.
pub fn public_key_values<T: HasPublic>(key: &PKeyRef<T>) -> Result<Vec<Attribute>, String> {
    if let Ok(rsa) = key.rsa() {
        return Ok(vec![
            Attribute::Modulus(rsa.n().to_vec()),
            Attribute::PublicExponent(rsa.e().to_vec()),
        ]);
    }
    let point = public_key_bytes(key)?;
    let length = u8::try_from(point.len()).map_err(|_| "an EC point too long".to_owned())?;
    let mut wrapped = vec![0x04, length];
    wrapped.extend(point);
    Ok(vec![Attribute::EcPoint(wrapped)])
}

/// The curve of an EC key; `None` for any other key.
pub fn curve<T: HasPublic>(key: &PKeyRef<T>) -> Option<Nid> {
    key.ec_key().ok()?.group().curve_name()
}

fn rsa_public_key(n: &[u8], e: &[u8]) -> Result<Vec<u8>, String> {
    let encode = || {
        let rsa = Rsa::from_public_components(BigNum::from_slice(n)?, BigNum::from_slice(e)?)?;
        rsa.public_key_to_der_pkcs1()
    };
    encode().map_err(|e| format!("the RSA public key: {e}"))
}

/// CKA_EC_POINT as the bare uncompressed point. PKCS#11 says it is a DER
/// OCTET STRING (SoftHSM does so); some modules return the bare point.
fn ec_point(raw: &[u8], coordinate_len: usize) -> Result<Vec<u8>, String> {
    let len = 1 + 2 * coordinate_len;
    match raw {
        [0x04, wrapped, point @ ..] if usize::from(*wrapped) == len && point.len() == len => {
            Ok(point.to_vec())
        }
        [0x04, ..] if raw.len() == len => Ok(raw.to_vec()),
        _ => Err(format!(
            "the EC public point (CKA_EC_POINT) has an unexpected form ({} bytes)",
            raw.len()
        )),
    }
}

/// `keys generate --key-type`: the values and help texts users see.
impl clap::ValueEnum for KeyKind {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            KeyKind::Rsa { bits: 2048 },
            KeyKind::Rsa { bits: 3072 },
            KeyKind::Rsa { bits: 4096 },
            KeyKind::P256,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let (name, help) = match self {
            KeyKind::Rsa { bits: 2048 } => (
                "rsa2048",
                "RSA 2048 bits, RS256 (what Altinn's own certificates use)",
            ),
            KeyKind::Rsa { bits: 3072 } => ("rsa3072", "RSA 3072 bits, RS256"),
            KeyKind::Rsa { bits: 4096 } => ("rsa4096", "RSA 4096 bits, RS256"),
            KeyKind::P256 => ("p256", "EC P-256, ES256"),
            KeyKind::Rsa { .. } => return None,
        };
        Some(clap::builder::PossibleValue::new(name).help(help))
    }
}

/// The bytes C_Sign is given for a signing input.
#[derive(Debug)]
pub enum SignData<'a> {
    /// The input itself: the mechanism hashes.
    Input(&'a [u8]),
    /// The input's SHA-256: the mechanism signs a digest.
    Sha256([u8; 32]),
}

impl AsRef<[u8]> for SignData<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            SignData::Input(input) => input,
            SignData::Sha256(digest) => digest,
        }
    }
}

/// Why a signature cannot be converted between its JOSE and DER forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// An r||s signature of the wrong length.
    #[error("{got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
    /// OpenSSL could not encode or decode it.
    #[error("{0}")]
    Encoding(String),
}

impl Alg {
    /// The longest signature in a token's third part, base64url: P-256's r||s
    /// (64 bytes), or RSA's up to a 4,096-bit key (512 bytes).
    pub fn max_jws_signature_len(self) -> usize {
        let bytes: usize = match self {
            Alg::Es256 => 2 * P256_BYTES,
            Alg::Rs256 => 512,
        };
        (bytes * 4).div_ceil(3)
    }

    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    /// The C_Sign mechanism and what it is given for `input`. SoftHSM (and
    /// p11-kit remoting) have no `CKM_ECDSA_SHA256`, so ES256 is hashed in
    /// process and signed with `CKM_ECDSA`, whose r||s output is already
    /// the JWS signature.
    pub fn sign_request(self, input: &[u8]) -> (Mechanism<'static>, SignData<'_>) {
        self.sign_request_with(input, || {
            // SHA256_Init/Update/Final: OpenSSL 3's one-shot SHA256()
            // looks the algorithm up again on every call.
            let mut digest = openssl::sha::Sha256::new();
            digest.update(input);
            digest.finish()
        })
    }

    /// [`Alg::sign_request`], with `sha256` giving the input's SHA-256
    /// where the mechanism signs a digest (a caller that has hashed a part
    /// of the input before).
    pub fn sign_request_with(
        self,
        input: &[u8],
        sha256: impl FnOnce() -> [u8; 32],
    ) -> (Mechanism<'static>, SignData<'_>) {
        match self {
            Alg::Rs256 => (Mechanism::Sha256RsaPkcs, SignData::Input(input)),
            Alg::Es256 => (Mechanism::Ecdsa, SignData::Sha256(sha256())),
        }
    }

    /// The digest a verifier of this algorithm hashes the input with.
    pub fn digest(self) -> MessageDigest {
        match self {
            Alg::Rs256 | Alg::Es256 => MessageDigest::sha256(),
        }
    }

    /// The algorithm rcgen writes into a certificate this key signs.
    pub fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Alg::Rs256 => &rcgen::PKCS_RSA_SHA256,
            Alg::Es256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }

    /// The size of r and of s, for ECDSA.
    fn ecdsa_coordinate_len(self) -> Option<usize> {
        match self {
            Alg::Rs256 => None,
            Alg::Es256 => Some(P256_BYTES),
        }
    }

    /// A JWS (and PKCS#11) signature in the form X.509 and OpenSSL use:
    /// ECDSA's r||s becomes a DER ECDSA-Sig-Value; RSA's is the same in both.
    pub fn jose_to_der(self, signature: Vec<u8>) -> Result<Vec<u8>, SignatureError> {
        let Some(len) = self.ecdsa_coordinate_len() else {
            return Ok(signature);
        };
        if signature.len() != 2 * len {
            return Err(SignatureError::Length {
                got: signature.len(),
                expected: 2 * len,
            });
        }
        let (r, s) = signature.split_at(len);
        let encode = || {
            EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?
                .to_der()
        };
        encode().map_err(|e| SignatureError::Encoding(e.to_string()))
    }

    /// An X.509 or OpenSSL signature in the form JWS uses: a DER
    /// ECDSA-Sig-Value becomes r||s, each padded to the curve's size.
    pub fn der_to_jose(self, signature: Vec<u8>) -> Result<Vec<u8>, SignatureError> {
        let Some(len) = self.ecdsa_coordinate_len() else {
            return Ok(signature);
        };
        let decode = || {
            let sig = EcdsaSig::from_der(&signature)?;
            let mut raw = sig.r().to_vec_padded(len as i32)?;
            raw.extend(sig.s().to_vec_padded(len as i32)?);
            Ok(raw)
        };
        decode().map_err(|e: openssl::error::ErrorStack| SignatureError::Encoding(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
