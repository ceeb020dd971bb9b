//! A key on the token as rcgen sees it: the public key it names in a
//! certificate or request, and signatures the HSM makes.

use std::cell::RefCell;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

use super::EnrolError;
use crate::hsm::{sign, HsmError};
use crate::key_type::KeyKind;

/// The private key `private` with its public half, signing through the HSM.
pub struct HsmKey<'s> {
    session: &'s Session,
    private: ObjectHandle,
    kind: KeyKind,
    /// The public key as [`KeyKind::public_key_der`] encodes it.
    public_der: Vec<u8>,
    /// The HSM's error behind a failed signature; rcgen's error cannot carry it.
    sign_error: RefCell<Option<HsmError>>,
}

impl<'s> HsmKey<'s> {
    pub fn new(
        session: &'s Session,
        kind: KeyKind,
        private: ObjectHandle,
        public_der: Vec<u8>,
    ) -> HsmKey<'s> {
        HsmKey {
            session,
            private,
            kind,
            public_der,
            sign_error: RefCell::new(None),
        }
    }

    /// Turns rcgen's error into the HSM error behind it, if there was one.
    pub fn failure(&self, error: rcgen::Error, what: &str) -> EnrolError {
        match self.sign_error.borrow_mut().take() {
            Some(hsm) => hsm.into(),
            None => EnrolError::Input(format!("cannot build the {what}: {error}")),
        }
    }
}

impl PublicKeyData for HsmKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.kind.alg().rcgen_algorithm()
    }
}

impl SigningKey for HsmKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let alg = self.kind.alg();
        // X.509 and PKCS#10 want an ECDSA signature as DER, not as the token's r||s.
        let signed = sign::sign_with(self.session, alg, self.private, msg).and_then(|signature| {
            alg.jose_to_der(signature).map_err(|e| HsmError::Invalid {
                what: "ECDSA signature from the token".into(),
                reason: e.to_string(),
            })
        });
        signed.map_err(|error| {
            *self.sign_error.borrow_mut() = Some(error);
            rcgen::Error::RemoteKeyError
        })
    }
}
