//! The agent daemon end to end: a real `serve` process on a real Unix
//! socket, real SoftHSM behind it, and clients that are real processes;
//! one module per surface.

mod grants;
mod signals;
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

fn claims(token: &str) -> serde_json::Value {
    serde_json::from_str(&part(token, 1)).expect("JSON claims")
}
