//! The token's hand-written JSON: for any issuer, app and audience text, any
//! instant `mint --now` accepts and any lifetime the configuration accepts,
//! header and claims parse as JSON with serde_json, in Altinn's member order,
//! and give back exactly the values put in.

#![no_main]

use access_token_agent::key_type::Alg;
use access_token_agent::token::{
    self, Lifetime, SigningKeyId, MAX_LIFETIME_SECONDS, MAX_UNIX_SECONDS,
};
use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

#[derive(Debug, Arbitrary)]
struct Input {
    issuer: String,
    app: String,
    audience: String,
    kid: String,
    x5t: String,
    es256: bool,
    now: i64,
    lifetime_seconds: i64,
    valid_from_adjustment_seconds: i64,
}

impl Input {
    /// The times folded into what the agent accepts: `--now` from 0 to
    /// [`MAX_UNIX_SECONDS`], a lifetime from 1 to [`MAX_LIFETIME_SECONDS`],
    /// an adjustment from -[`MAX_LIFETIME_SECONDS`] to below the lifetime.
    fn accepted(self) -> Input {
        let lifetime_seconds = 1 + self.lifetime_seconds.rem_euclid(MAX_LIFETIME_SECONDS);
        let adjustments = MAX_LIFETIME_SECONDS + lifetime_seconds;
        Input {
            now: self.now.rem_euclid(MAX_UNIX_SECONDS + 1),
            lifetime_seconds,
            valid_from_adjustment_seconds: self
                .valid_from_adjustment_seconds
                .rem_euclid(adjustments)
                - MAX_LIFETIME_SECONDS,
            ..self
        }
    }
}

fuzz_target!(|input: Input| {
    let input = input.accepted();
    let lifetime = Lifetime {
        lifetime_seconds: input.lifetime_seconds,
        valid_from_adjustment_seconds: input.valid_from_adjustment_seconds,
        audience: input.audience.clone(),
    };
    let key = SigningKeyId {
        alg: if input.es256 { Alg::Es256 } else { Alg::Rs256 },
        kid: input.kid.clone(),
        x5t: input.x5t.clone(),
    };
    let unsigned = token::build(&key, &input.issuer, &input.app, input.now, &lifetime);
    let (header, payload) = unsigned
        .signing_input
        .split_once('.')
        .expect("two parts before the signature");
    check_header(&object(header), &key);
    check_claims(&object(payload), &input);
});

/// A base64url part decoded and parsed, member order kept.
fn object(part: &str) -> Map<String, Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
    let text = String::from_utf8(bytes).expect("UTF-8");
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(members)) => members,
        other => panic!("not a JSON object: {other:?} from {text:?}"),
    }
}

fn check_header(header: &Map<String, Value>, key: &SigningKeyId) {
    let names: Vec<&str> = header.keys().map(String::as_str).collect();
    assert_eq!(names, ["alg", "kid", "x5t", "typ"]);
    assert_eq!(header["alg"], key.alg.as_str());
    assert_eq!(header["kid"], key.kid.as_str());
    assert_eq!(header["x5t"], key.x5t.as_str());
    assert_eq!(header["typ"], "JWT");
}

fn check_claims(claims: &Map<String, Value>, input: &Input) {
    let names: Vec<&str> = claims.keys().map(String::as_str).collect();
    let mut expected = vec!["nbf", "exp", "iat", "iss", "aud"];
    if !input.app.is_empty() {
        expected.insert(0, "urn:altinn:app");
        assert_eq!(claims["urn:altinn:app"], input.app.as_str());
    }
    assert_eq!(names, expected);
    assert_eq!(claims["iss"], input.issuer.as_str());
    assert_eq!(claims["aud"], input.audience.as_str());
    assert_eq!(claims["iat"], input.now);
    assert_eq!(
        claims["nbf"],
        input.now + input.valid_from_adjustment_seconds
    );
    assert_eq!(claims["exp"], input.now + input.lifetime_seconds);
}
