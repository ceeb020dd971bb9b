//! The Altinn access token, byte for byte.
//!
//! Altinn's `AccessTokenGenerator` serialises the header and claims with
//! Microsoft.IdentityModel in a fixed member order, with integer times and
//! relaxed escaping. Platform only checks the signature and the lifetime, but
//! the agent's bar is byte identity with Altinn's generator, so everything here
//! is written by hand rather than through a general JSON serialiser.

pub mod name;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::key_type::Alg;

/// The longest token lifetime, and the largest shift of `nbf` before `iat`,
/// the configuration accepts: one day. Altinn uses 300 seconds; the bound
/// keeps every claim time far inside `i64`.
pub const MAX_LIFETIME_SECONDS: i64 = 86_400;

/// The latest instant a token is made for: 9999-12-31T23:59:59Z, the end of
/// what .NET's DateTime and RFC 3339 can express.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Lifetime settings, the `[token]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    /// Seconds from `iat` to `exp` (Altinn's `TokenLifetimeInSeconds`).
    pub lifetime_seconds: i64,
    /// Added to `iat` to give `nbf` (Altinn's `ValidFromAdjustmentSeconds`).
    pub valid_from_adjustment_seconds: i64,
    /// The `aud` claim.
    pub audience: String,
}

impl Default for Lifetime {
    fn default() -> Self {
        Lifetime {
            lifetime_seconds: 300,
            valid_from_adjustment_seconds: -5,
            audience: "platform.altinn.no".to_owned(),
        }
    }
}

/// Which key signs: everything the header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyId {
    pub alg: Alg,
    /// SHA-1 of the certificate DER, upper-case hex (the .NET thumbprint).
    pub kid: String,
    /// The same digest, base64url without padding.
    pub x5t: String,
    /// The header ([`header_json`]) in base64url: the same for every token
    /// the key signs, so encoded once.
    pub header: String,
}

/// A token waiting for its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedToken {
    /// `b64(header) + "." + b64(payload)`: the bytes the key signs.
    pub signing_input: String,
    /// The `exp` claim, so callers can cache and report expiry.
    pub expires_at: i64,
}

impl UnsignedToken {
    /// Appends the signature and returns the compact JWS.
    pub fn finish(self, signature: &[u8]) -> String {
        let mut token = self.signing_input;
        token.reserve(1 + signature.len().div_ceil(3) * 4);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        token
    }
}

/// Builds the unsigned token for `issuer` and `app` at `now` (Unix seconds).
/// An empty `app` leaves the `urn:altinn:app` claim out, as Altinn does.
pub fn build(
    key: &SigningKeyId,
    issuer: &str,
    app: &str,
    now: i64,
    lifetime: &Lifetime,
) -> UnsignedToken {
    let expires_at = now + lifetime.lifetime_seconds;
    let payload = payload_json(issuer, app, now, lifetime);
    // One allocation, with room for the signature ([`UnsignedToken::finish`]).
    let capacity =
        key.header.len() + 2 + (payload.len() * 4).div_ceil(3) + key.alg.max_jws_signature_len();
    let mut signing_input = String::with_capacity(capacity);
    signing_input.push_str(&key.header);
    signing_input.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut signing_input);
    UnsignedToken {
        signing_input,
        expires_at,
    }
}

/// `{"alg":…,"kid":…,"x5t":…,"typ":"JWT"}` in Altinn's member order.
pub fn header_json(alg: Alg, kid: &str, x5t: &str) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"alg\":");
    push_json_string(&mut out, alg.as_str());
    out.push_str(",\"kid\":");
    push_json_string(&mut out, kid);
    out.push_str(",\"x5t\":");
    push_json_string(&mut out, x5t);
    out.push_str(",\"typ\":\"JWT\"}");
    out
}

/// The claims in Altinn's member order: app, nbf, exp, iat, iss, aud.
pub fn payload_json(issuer: &str, app: &str, now: i64, lifetime: &Lifetime) -> String {
    let mut out = String::with_capacity(160);
    out.push('{');
    if !app.is_empty() {
        out.push_str("\"urn:altinn:app\":");
        push_json_string(&mut out, app);
        out.push(',');
    }
    let nbf = now + lifetime.valid_from_adjustment_seconds;
    let exp = now + lifetime.lifetime_seconds;
    for (name, time) in [("\"nbf\":", nbf), (",\"exp\":", exp), (",\"iat\":", now)] {
        out.push_str(name);
        out.push_str(decimal(time, &mut [0; 20]));
    }
    out.push_str(",\"iss\":");
    push_json_string(&mut out, issuer);
    out.push_str(",\"aud\":");
    push_json_string(&mut out, &lifetime.audience);
    out.push('}');
    out
}

/// `value` in decimal, written backwards into the end of `buf` (room for
/// `i64::MIN`): cheaper than the formatting machinery for the few numbers a
/// token or an audit line has.
pub fn decimal(value: i64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    std::str::from_utf8(&buf[at..]).expect("ASCII digits")
}

/// Writes a JSON string the way System.Text.Json's relaxed encoder does:
/// only `"`, `\`, control characters (C0, DEL and C1) and the line and
/// paragraph separators U+2028 and U+2029 are escaped; `/`, `+`, `<`, `&`,
/// `'` and non-ASCII text stay literal. Control characters use the short
/// forms where JSON has them, the others `\uXXXX` with upper-case hex.
///
/// The relaxed encoder also escapes other space separators than U+0020,
/// U+FEFF, private-use and unassigned code points, and writes characters
/// outside the BMP as escaped surrogate pairs; those stay literal here.
/// Names served over the socket are checked to be ASCII, so this only
/// matters for names given to `mint`.
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Key id and x5t from the SHA-1 thumbprint of a certificate.
pub fn key_id(alg: Alg, thumbprint: &[u8; 20]) -> SigningKeyId {
    let kid = upper_hex(thumbprint);
    let x5t = URL_SAFE_NO_PAD.encode(thumbprint);
    let header = URL_SAFE_NO_PAD.encode(header_json(alg, &kid, &x5t));
    SigningKeyId {
        alg,
        kid,
        x5t,
        header,
    }
}

/// Upper-case hex, the form .NET prints thumbprints in.
pub fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(part: &str) -> String {
        String::from_utf8(URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn ttd_key() -> SigningKeyId {
        // Thumbprint of Altinn's public ttd test certificate.
        let digest: [u8; 20] = [
            0xC5, 0x72, 0x67, 0x28, 0xC3, 0x8C, 0xFE, 0x6C, 0x16, 0x98, 0x84, 0x54, 0x20, 0x6B,
            0x99, 0xCA, 0x29, 0xAE, 0x02, 0x5E,
        ];
        key_id(Alg::Rs256, &digest)
    }

    #[test]
    fn kid_and_x5t_match_the_published_test_certificate() {
        let key = ttd_key();
        assert_eq!(key.kid, "C5726728C38CFE6C16988454206B99CA29AE025E");
        assert_eq!(key.x5t, "xXJnKMOM_mwWmIRUIGuZyimuAl4");
    }

    #[test]
    fn signing_input_matches_the_shared_vector_up_to_the_signature() {
        // The first two parts of the test vector in altinn-access-token.md.
        let expected = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkM1NzI2NzI4QzM4Q0ZFNkMxNjk4ODQ1NDIwNkI5OUNBMjlBRTAyNUUiLCJ4NXQiOiJ4WEpuS01PTV9td1dtSVJVSUd1WnlpbXVBbDQiLCJ0eXAiOiJKV1QifQ.eyJ1cm46YWx0aW5uOmFwcCI6Im15LWFwcCIsIm5iZiI6MTc2NzIyNTU5NSwiZXhwIjoxNzY3MjI1OTAwLCJpYXQiOjE3NjcyMjU2MDAsImlzcyI6InR0ZCIsImF1ZCI6InBsYXRmb3JtLmFsdGlubi5ubyJ9";
        let token = build(
            &ttd_key(),
            "ttd",
            "my-app",
            1_767_225_600,
            &Lifetime::default(),
        );
        assert_eq!(token.signing_input, expected);
        assert_eq!(token.expires_at, 1_767_225_900);
    }

    #[test]
    fn empty_app_leaves_the_claim_out() {
        let token = build(&ttd_key(), "ttd", "", 100, &Lifetime::default());
        let payload = decode(token.signing_input.split('.').nth(1).unwrap());
        assert_eq!(
            payload,
            r#"{"nbf":95,"exp":400,"iat":100,"iss":"ttd","aud":"platform.altinn.no"}"#
        );
    }

    #[test]
    fn only_quotes_backslashes_and_controls_are_escaped() {
        let payload = payload_json("ttd", "a/b+<c>&'d\"e\\f\u{1}\næøå", 0, &Lifetime::default());
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(value["urn:altinn:app"], "a/b+<c>&'d\"e\\f\u{1}\næøå");
        assert!(payload.contains(r#""a/b+<c>&'d\"e\\f\u0001\næøå""#));
    }

    #[test]
    fn del_c1_controls_and_line_separators_are_escaped_in_upper_case_hex() {
        let app = "a\u{7f}b\u{80}c\u{85}d\u{9f}e\u{e9}f\u{2028}g\u{2029}h";
        let payload = payload_json("ttd", app, 0, &Lifetime::default());
        assert!(
            payload.contains(r#""a\u007Fb\u0080c\u0085d\u009Feéf\u2028g\u2029h""#),
            "{payload}"
        );
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(value["urn:altinn:app"], app);
    }

    #[test]
    fn custom_lifetime_and_audience_are_used() {
        let lifetime = Lifetime {
            lifetime_seconds: 60,
            valid_from_adjustment_seconds: 0,
            audience: "platform.tt02.altinn.no".into(),
        };
        let payload = payload_json("studio", "studio.designer", 1000, &lifetime);
        assert_eq!(
            payload,
            r#"{"urn:altinn:app":"studio.designer","nbf":1000,"exp":1060,"iat":1000,"iss":"studio","aud":"platform.tt02.altinn.no"}"#
        );
    }

    #[test]
    fn claim_times_at_the_accepted_extremes_are_exact() {
        let lifetime = Lifetime {
            lifetime_seconds: MAX_LIFETIME_SECONDS,
            valid_from_adjustment_seconds: -MAX_LIFETIME_SECONDS,
            ..Lifetime::default()
        };
        let payload = payload_json("ttd", "", MAX_UNIX_SECONDS, &lifetime);
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(value["exp"], 253_402_387_199_i64);
        assert_eq!(value["nbf"], 253_402_214_399_i64);
        let payload = payload_json("ttd", "", 0, &lifetime);
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(value["nbf"], -86_400);
    }

    #[test]
    fn finish_appends_base64url_signature() {
        let token = build(&ttd_key(), "ttd", "x", 0, &Lifetime::default());
        let jws = token.clone().finish(&[0xfb, 0xff, 0x00]);
        assert_eq!(jws, format!("{}.-_8A", token.signing_input));
    }
}
