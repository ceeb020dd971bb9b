//! The key types the agent signs with, and everything that differs between
//! them: which keys can sign, and the JWS `alg` each signs with.
//!
//! A new key type is a new variant here, and the compiler leads through the
//! `match`es of this file; the other modules ask, they do not match.

use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef};

/// RSA keys below this size are refused: .NET will not sign with them.
pub const MIN_RSA_BITS: u32 = 2048;

/// The key types that can sign, for messages that refuse another.
pub const SUPPORTED_KEYS: &str = "RSA (2048 bits or more) and EC P-256";

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

impl Alg {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

#[cfg(test)]
mod tests;
