//! The key types the agent signs with, and everything that differs between
//! them: which keys can sign, the JWS `alg`, the PKCS#11 signing mechanism
//! and the two forms of a signature.
//!
//! A new key type is a new variant here, and the compiler leads through the
//! `match`es of this file; the other modules ask, they do not match.

use cryptoki::mechanism::Mechanism;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef};

/// RSA keys below this size are refused: .NET will not sign with them.
pub const MIN_RSA_BITS: u32 = 2048;

/// The key types that can sign, for messages that refuse another.
pub const SUPPORTED_KEYS: &str = "RSA (2048 bits or more) and EC P-256";

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
}

/// The curve of an EC key; `None` for any other key.
pub fn curve<T: HasPublic>(key: &PKeyRef<T>) -> Option<Nid> {
    key.ec_key().ok()?.group().curve_name()
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
        match self {
            Alg::Rs256 => (Mechanism::Sha256RsaPkcs, SignData::Input(input)),
            Alg::Es256 => (
                Mechanism::Ecdsa,
                SignData::Sha256(openssl::sha::sha256(input)),
            ),
        }
    }

    /// The digest a verifier of this algorithm hashes the input with.
    pub fn digest(self) -> MessageDigest {
        match self {
            Alg::Rs256 | Alg::Es256 => MessageDigest::sha256(),
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
