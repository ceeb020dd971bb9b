//! Signing through the HSM, with the mechanism [`Alg::sign_request`] names:
//! the signature comes out in its JWS form.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use super::key_pairs::SigningKey;
use super::HsmError;
use crate::key_type::{Alg, SignData};
use crate::token::{self, Lifetime};

/// Signs `input` with the private key `handle` as `alg` prescribes; also
/// used before a key has its certificate (self-signing a generated key).
pub fn sign_with(
    session: &Session,
    alg: Alg,
    handle: ObjectHandle,
    input: &[u8],
) -> Result<Vec<u8>, HsmError> {
    c_sign(session, handle, alg.sign_request(input))
}

fn c_sign(
    session: &Session,
    handle: ObjectHandle,
    (mechanism, data): (Mechanism, SignData),
) -> Result<Vec<u8>, HsmError> {
    session
        .sign(&mechanism, handle, data.as_ref())
        .map_err(|e| HsmError::from_cryptoki("C_Sign", e))
}

/// A signed token and its expiry. Its `Debug` form leaves the token out.
#[derive(Clone)]
pub struct SignedToken {
    pub token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for SignedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Builds and signs the Altinn token for `app` at `now` with `key`, in
/// `buffer`'s memory ([`token::build`]).
pub fn sign_token(
    session: &Session,
    key: &SigningKey,
    app: &str,
    now: i64,
    lifetime: &Lifetime,
    buffer: String,
) -> Result<SignedToken, HsmError> {
    let unsigned = token::build(&key.id, &key.issuer, app, now, lifetime, buffer);
    let input = unsigned.signing_input.as_bytes();
    let request = key
        .id
        .alg
        .sign_request_with(input, || unsigned.sha256(&key.id));
    let signature = c_sign(session, key.handle, request)?;
    let expires_at = unsigned.expires_at;
    Ok(SignedToken {
        token: unsigned.finish(&signature),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_token_out() {
        let signed = SignedToken {
            token: "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ0dGQifQ.c2lnbmF0dXJl".into(),
            expires_at: 1_767_225_900,
        };
        let debug = format!("{signed:?}");
        assert!(!debug.contains("eyJ"), "{debug}");
        assert!(debug.contains("token: \"<redacted>\""), "{debug}");
        assert!(debug.contains("1767225900"), "{debug}");
    }
}
