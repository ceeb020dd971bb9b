//! A key on the token as rcgen sees it: the public key it names in a
//! certificate or request, and signatures the HSM makes.

use std::cell::RefCell;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

use super::EnrolError;
use crate::cert::Certificate;
use crate::hsm::key_pairs::KeyPair;
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

    /// The key of `pair` (a complete pair), with the certificate that
    /// names its public key.
    pub fn of_pair(
        session: &'s Session,
        pair: &'s KeyPair,
    ) -> Result<(HsmKey<'s>, &'s Certificate), EnrolError> {
        let (Some((_, cert)), Some(private)) = (&pair.certificate, pair.private_key) else {
            return Err(EnrolError::Input(format!(
                "kid {} has no certificate or no private key on the token (an interrupted enrolment); choose a complete one (`access-token-agent keys list`)",
                pair.kid()
            )));
        };
        let public = cert
            .public_key()
            .map_err(|e| EnrolError::Input(e.to_string()))?;
        Ok((HsmKey::new(session, cert.key, private.handle, public), cert))
    }

    /// The refusal when what the HSM signed does not verify with the public
    /// key of `pair`'s certificate.
    pub fn not_its_key(pair: &KeyPair) -> EnrolError {
        EnrolError::Input(format!(
            "the private key of kid {} did not sign as its certificate's public key says: the key and its certificate do not belong together; nothing was stored (enrol the key again)",
            pair.kid()
        ))
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
