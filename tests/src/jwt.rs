//! Tokens read as a relying party reads them: decoded, and verified against
//! the certificate's public key.

/// Decodes one base64url part of a JWS into JSON.
pub fn jws_part(token: &str, index: usize) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(index).expect("a compact JWS part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// The claims of `token` (its second part) as JSON.
pub fn claims(token: &str) -> serde_json::Value {
    jws_part(token, 1)
}

/// Verifies `token` with the `jsonwebtoken` crate against the public key of
/// the PEM certificate `cert_pem`, as a relying party would: the algorithm
/// from the key type, `exp` checked, audience `platform.altinn.no`, issuer
/// `issuer`. Returns the claims.
pub fn verify_jwt(token: &str, cert_pem: &[u8], issuer: &str) -> serde_json::Value {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let header = jsonwebtoken::decode_header(token).expect("a JWS header");
    let key = match header.alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(cert_pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(cert_pem),
        other => panic!("unexpected alg {other:?}"),
    }
    .expect("a public key from the certificate");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["platform.altinn.no"]);
    validation.set_issuer(&[issuer]);
    validation.leeway = 10;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("the token does not verify: {e}"))
        .claims
}

/// Verifies every distinct token of `tokens` as [`verify_jwt`] does;
/// returns how many distinct ones there were.
pub fn verify_all(tokens: &[String], cert_pem: &[u8], issuer: &str) -> usize {
    let mut distinct: Vec<&String> = tokens.iter().collect();
    distinct.sort();
    distinct.dedup();
    for token in &distinct {
        verify_jwt(token, cert_pem, issuer);
    }
    distinct.len()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
