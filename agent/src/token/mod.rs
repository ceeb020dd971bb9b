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
use openssl::sha::Sha256;

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
    /// SHA-256 having absorbed `header` and the dot after it, with which
    /// every signing input of this key begins: hashed once, as a third of
    /// what ES256 hashes per token.
    pub header_sha256: HeaderSha256,
}

/// A SHA-256 state that has absorbed a key's header and dot.
#[derive(Clone)]
pub struct HeaderSha256(Sha256);

impl HeaderSha256 {
    fn of(header: &str) -> HeaderSha256 {
        let mut state = Sha256::new();
        state.update(header.as_bytes());
        state.update(b".");
        HeaderSha256(state)
    }
}

impl std::fmt::Debug for HeaderSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderSha256")
    }
}

/// Made from the header alone, so equal whenever the headers are (which
/// [`SigningKeyId`]'s equality compares).
impl PartialEq for HeaderSha256 {
    fn eq(&self, _: &HeaderSha256) -> bool {
        true
    }
}

impl Eq for HeaderSha256 {}

/// A token waiting for its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedToken {
    /// `b64(header) + "." + b64(payload)`: the bytes the key signs.
    pub signing_input: String,
    /// The `exp` claim, so callers can cache and report expiry.
    pub expires_at: i64,
}

impl UnsignedToken {
    /// The SHA-256 of the signing input, which `key` built: its header's
    /// state ([`SigningKeyId::header_sha256`]) carried on over the payload.
    pub fn sha256(&self, key: &SigningKeyId) -> [u8; 32] {
        let payload = self
            .signing_input
            .strip_prefix(&key.header)
            .and_then(|rest| rest.strip_prefix('.'))
            .expect("a signing input that this key's header begins");
        let mut state = key.header_sha256.0.clone();
        state.update(payload.as_bytes());
        state.finish()
    }

    /// Appends the signature and returns the compact JWS.
    pub fn finish(self, signature: &[u8]) -> String {
        let mut token = self.signing_input;
        token.reserve(1 + signature.len().div_ceil(3) * 4);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        token
    }
}

/// Builds the unsigned token for `issuer` and `app` at `now` (Unix seconds)
/// in `buffer`, whose memory the token keeps (see [`max_len`]). An empty
/// `app` leaves the `urn:altinn:app` claim out, as Altinn does.
pub fn build(
    key: &SigningKeyId,
    issuer: &str,
    app: &str,
    now: i64,
    lifetime: &Lifetime,
    buffer: String,
) -> UnsignedToken {
    let expires_at = now + lifetime.lifetime_seconds;
    let payload = payload_json(issuer, app, now, lifetime);
    // At most one allocation, with room for the signature
    // ([`UnsignedToken::finish`]); none when `buffer` is large enough.
    let capacity = token_len(key, payload.len());
    let mut signing_input = buffer;
    signing_input.clear();
    signing_input.reserve(capacity);
    signing_input.push_str(&key.header);
    signing_input.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut signing_input);
    UnsignedToken {
        signing_input,
        expires_at,
    }
}

/// The most bytes the token [`build`] makes for `issuer` and `app` can take,
/// signature included: the capacity a requester allocates for it, so that
/// the token's memory is freed by the thread that allocated it. (glibc
/// frees memory that another thread allocated through that thread's arena
/// and lock, and now and then tidies that arena as it does: measured,
/// 4,700 instructions per fresh token; see BENCHMARKS.md, section 7.)
pub fn max_len(key: &SigningKeyId, issuer: &str, app: &str, lifetime: &Lifetime) -> usize {
    // A string's every character escaped as \uXXXX at worst; a claim time
    // is at most 20 characters; the member names and punctuation under 64.
    let json = |text: &str| 2 + 6 * text.len();
    let payload = 64 + json(app) + 3 * 20 + json(issuer) + json(&lifetime.audience);
    token_len(key, payload)
}

/// The length of a token of `key` whose payload JSON is `payload` bytes,
/// with the longest signature of its algorithm.
fn token_len(key: &SigningKeyId, payload: usize) -> usize {
    key.header.len() + 2 + (payload * 4).div_ceil(3) + key.alg.max_jws_signature_len()
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
    // Names are nearly always plain: copied whole, not a char at a time.
    let plain = |c: char| c != '"' && c != '\\' && !needs_escape(c);
    if value.chars().all(plain) {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if needs_escape(c) => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Characters written as `\uXXXX`: controls, and the line and paragraph
/// separators that JavaScript's string literals reject.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
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
        header_sha256: HeaderSha256::of(&header),
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
            String::new(),
        );
        assert_eq!(token.signing_input, expected);
        assert_eq!(token.expires_at, 1_767_225_900);
    }

    #[test]
    fn empty_app_leaves_the_claim_out() {
        let token = build(
            &ttd_key(),
            "ttd",
            "",
            100,
            &Lifetime::default(),
            String::new(),
        );
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
        let token = build(
            &ttd_key(),
            "ttd",
            "x",
            0,
            &Lifetime::default(),
            String::new(),
        );
        let jws = token.clone().finish(&[0xfb, 0xff, 0x00]);
        assert_eq!(jws, format!("{}.-_8A", token.signing_input));
    }

    #[test]
    fn the_digest_carried_on_from_the_header_is_the_whole_inputs() {
        for alg in [Alg::Rs256, Alg::Es256] {
            let key = key_id(alg, &[9; 20]);
            let token = build(
                &key,
                "ttd",
                "app",
                1_767_225_600,
                &Lifetime::default(),
                String::new(),
            );
            let whole = openssl::sha::sha256(token.signing_input.as_bytes());
            assert_eq!(token.sha256(&key), whole);
        }
    }

    #[test]
    fn a_buffer_of_max_len_takes_the_whole_token_without_growing() {
        let lifetime = Lifetime {
            audience: "\u{1}\"\u{2028}é".repeat(40),
            ..Lifetime::default()
        };
        let app = "\u{7f}\\".repeat(100);
        for (alg, issuer) in [(Alg::Rs256, "ttd"), (Alg::Es256, "\u{85}")] {
            let key = key_id(alg, &[7; 20]);
            let capacity = max_len(&key, issuer, &app, &lifetime);
            let buffer = String::with_capacity(capacity);
            let (before, now) = (buffer.as_ptr(), -MAX_LIFETIME_SECONDS);
            let unsigned = build(&key, issuer, &app, now, &lifetime, buffer);
            let longest = match alg {
                Alg::Es256 => 64,
                Alg::Rs256 => 512,
            };
            let jws = unsigned.finish(&vec![0xff; longest]);
            assert_eq!(jws.as_ptr(), before, "{alg:?}: the buffer grew");
            assert!(jws.len() <= capacity);
        }
    }
}
