//! The HTTP API: what the agent answers on its socket, a real `serve`
//! process with real SoftHSM behind it.
//!
//! | module | what it asserts |
//! |---|---|
//! | [`tokens`] | `/v1/token` as JSON or a bare JWT, from the cache until its refresh point or signed anew; one connection kept alive through pauses loses no bytes; bad requests get problem documents; `/healthz`, `/readyz` and `/metrics` |
//! | [`hostile_input`] | random, mutated, truncated and crafted bytes, HTTP/2 and TLS get client errors or a close within the header deadline, and the agent serves on |
//! | [`mint`] | the token format, through `mint`: tokens byte-identical to an independent computation (the documented format, openssl for thumbprint and signature) that verify with `jsonwebtoken`; the socket hands out what the same code builds |
//!
//! `mint` reads keys that `keys import` and `keys generate` enrolled, so it
//! belongs with `enrolment` too; it is here because what it asserts is the
//! token's bytes.

mod hostile_input;
mod mint;
mod tokens;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::daemon::exported_cert;
use integration_tests::TestToken;

fn exported_pem(token: &TestToken) -> String {
    String::from_utf8(exported_cert(token, "pem")).expect("PEM is text")
}

fn part(token: &str, index: usize) -> String {
    let part = token.split('.').nth(index).expect("a JWS part");
    String::from_utf8(URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("UTF-8")
}
