//! Enrolment: `keys import | generate | list | export-cert | delete` against
//! a real token, with pkcs11-tool and openssl as independent witnesses;
//! enrolments that fail half-way or are killed; and only the agent's own
//! keys signing.
//!
//! | module | what it asserts |
//! |---|---|
//! | [`keys`] | each command against a real token: keys made or imported sensitive, never extractable and sign-only; unusable files refused with nothing left behind; listing, export and deletion, incomplete pairs included |
//! | [`faults`] | an enrolment that fails after its key is written leaves nothing behind; a damaged object hides no other |
//! | [`kill`] | `keys import` and `keys generate` killed (SIGKILL) or terminated (SIGTERM) at random moments leave a complete pair or nothing usable, on SoftHSM and Kryoptic |
//! | [`own_keys`] | objects another tool wrote or anyone planted without the PIN are listed as not usable, with the reason, and never sign |

mod faults;
mod keys;
mod kill;
mod own_keys;

use integration_tests::{OutputExt, TestToken};

/// `keys generate --issuer ISSUER`; its kid.
fn generate(token: &TestToken, issuer: &str) -> String {
    let out = token.generate(issuer, None).success();
    out.stdout_text().trim().to_owned()
}
