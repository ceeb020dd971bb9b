//! The projected service-account token, verified: its signature with the
//! issuer key its `kid` names, in that key's algorithm; `iss`, `aud`,
//! `exp` and `nbf`; and the claims that say which pod sent it.
//!
//! `exp` and `nbf` allow [`SKEW_SECONDS`] of clock difference between the
//! API server that signed and this node, as the API server itself allows
//! when it checks such tokens. `nbf`, `exp`, `iss`, `aud` and `sub` must
//! be present; `sub` must be `system:serviceaccount:<namespace>:<name>` of
//! the `kubernetes.io` claim's namespace and service account, and the
//! token must name a pod (a projected volume's always does).

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::jwks::Keys;
use super::{PodIdentity, Rejection};

/// Clock difference allowed on `exp` and `nbf`, in seconds.
pub const SKEW_SECONDS: u64 = 60;

/// The claims of a projected token the agent reads (others are ignored).
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Deserialize)]
struct KubernetesClaim {
    namespace: String,
    pod: Option<ObjectRef>,
    serviceaccount: ObjectRef,
    /// The node the pod runs on (Kubernetes 1.30+); read, not required.
    #[allow(dead_code)]
    node: Option<ObjectRef>,
    /// When the kubelet should have renewed the token; not checked.
    #[allow(dead_code)]
    warnafter: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ObjectRef {
    name: String,
    uid: String,
}

/// The parts of the header the key is chosen by.
#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// What the agent checks a token against.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
}

/// Verifies `token` with `keys`; the pod it names, or why not.
pub fn verify(token: &str, keys: &Keys, expected: &Expected<'_>) -> Result<PodIdentity, Rejection> {
    let header = header(token)?;
    let algorithm = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            return Err(Rejection::new(
                "algorithm",
                format!("its header's alg {:?} is not RS256 or ES256, the algorithms of the cluster's issuer keys", short(other)),
            ))
        }
    };
    let kid = header.kid.unwrap_or_default();
    let Some(key) = keys.find(&kid) else {
        return Err(Rejection::new(
            "unknown-kid",
            format!("no key of `kubernetes.jwks_file` has its kid {:?}; the file may be older than the cluster's keys", short(&kid)),
        ));
    };
    if key.algorithm != algorithm {
        return Err(Rejection::new(
            "algorithm",
            format!(
                "its alg {} is not that of the key {:?}",
                header.alg, key.kid
            ),
        ));
    }
    let mut validation = Validation::new(key.algorithm);
    validation.leeway = SKEW_SECONDS;
    validation.validate_nbf = true;
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|e| rejection(e.kind(), expected))?
        .claims;
    identity(claims)
}

/// The header, decoded before anything else so that its `alg` is judged
/// by this code, not by whether a library knows the name.
fn header(token: &str) -> Result<Header, Rejection> {
    let malformed = |why: &str| {
        Rejection::new(
            "malformed",
            format!("it is not a JWS in compact form ({why})"),
        )
    };
    if token.split('.').count() != 3 {
        return Err(malformed("three dot-separated parts"));
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed("the header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| malformed("the header is not a JSON object with alg"))
}

/// The rejection for a failure jsonwebtoken found.
fn rejection(kind: &ErrorKind, expected: &Expected<'_>) -> Rejection {
    let (reason, detail) = match kind {
        ErrorKind::InvalidSignature => ("signature", "its signature does not verify with the issuer key its kid names".to_owned()),
        ErrorKind::ExpiredSignature => ("expired", format!("it has expired (exp more than {SKEW_SECONDS} s ago); the kubelet renews projected tokens: read the file again")),
        ErrorKind::ImmatureSignature => ("not-yet-valid", format!("it is not valid yet (nbf more than {SKEW_SECONDS} s ahead); check the node's clock")),
        ErrorKind::InvalidIssuer => ("issuer", format!("its iss is not `kubernetes.issuer` ({:?})", expected.issuer)),
        ErrorKind::InvalidAudience => ("audience", format!("its aud does not contain {:?}; project the token with that audience", expected.audience)),
        ErrorKind::MissingRequiredClaim(claim) => ("claims", format!("it has no {claim:?} claim")),
        ErrorKind::InvalidAlgorithm => ("algorithm", "its algorithm is not its key's".to_owned()),
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => ("claims", "its claims are not those of a projected service-account token (sub, kubernetes.io with namespace, pod and serviceaccount)".to_owned()),
        _ => ("malformed", "it is not a JWS the agent can read".to_owned()),
    };
    Rejection::new(reason, detail)
}

/// The pod the verified claims name, if `sub` agrees with them.
fn identity(claims: Claims) -> Result<PodIdentity, Rejection> {
    let k8s = claims.kubernetes;
    let expected_sub = format!(
        "system:serviceaccount:{}:{}",
        k8s.namespace, k8s.serviceaccount.name
    );
    if claims.sub != expected_sub {
        return Err(Rejection::new(
            "claims",
            "its sub does not name the namespace and service account of its kubernetes.io claim",
        ));
    }
    let Some(pod) = k8s.pod else {
        return Err(Rejection::new(
            "claims",
            "it is bound to no pod; send the pod's projected service-account token",
        ));
    };
    Ok(PodIdentity {
        namespace: k8s.namespace,
        service_account: k8s.serviceaccount.name,
        service_account_uid: k8s.serviceaccount.uid,
        pod_name: pod.name,
        pod_uid: pod.uid,
    })
}

/// A caller-supplied value, cut short for a message.
fn short(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const EXPECTED: Expected<'static> = Expected {
        issuer: "https://k8s",
        audience: "access-token-agent",
    };

    fn now() -> i64 {
        crate::clock::unix_now()
    }

    /// A P-256 key as jsonwebtoken signs with it, and its key set.
    fn key() -> (EncodingKey, Keys) {
        let pem = crate::test_keys::p256().private_key_to_pem_pkcs8().unwrap();
        let encoding = EncodingKey::from_ec_pem(&pem).unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let set = serde_json::to_vec(&JwkSet { keys: vec![jwk] }).unwrap();
        (encoding, super::super::jwks::parse(&set).unwrap())
    }

    fn claims() -> serde_json::Value {
        let now = now();
        json!({
            "aud": ["access-token-agent"], "exp": now + 600, "iat": now, "nbf": now,
            "iss": "https://k8s", "sub": "system:serviceaccount:apps:my-app",
            "kubernetes.io": {
                "namespace": "apps",
                "pod": {"name": "my-app-1", "uid": "p-uid"},
                "serviceaccount": {"name": "my-app", "uid": "s-uid"},
                "node": {"name": "n", "uid": "n-uid"},
                "warnafter": now + 400,
            },
        })
    }

    fn sign(key: &EncodingKey, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn reason(token: &str, keys: &Keys) -> &'static str {
        verify(token, keys, &EXPECTED).unwrap_err().reason
    }

    #[test]
    fn a_projected_token_names_its_pod() {
        let (encoding, keys) = key();
        let pod = verify(&sign(&encoding, &claims()), &keys, &EXPECTED).unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.service_account.as_str()),
            ("apps", "my-app")
        );
        assert_eq!(
            (pod.pod_name.as_str(), pod.pod_uid.as_str()),
            ("my-app-1", "p-uid")
        );
    }

    #[test]
    fn times_allow_a_minute_of_skew_and_no_more() {
        let (encoding, keys) = key();
        let at = |exp: i64, nbf: i64| {
            let mut c = claims();
            (c["exp"], c["nbf"]) = (json!(exp), json!(nbf));
            sign(&encoding, &c)
        };
        let now = now();
        assert!(verify(&at(now - 30, now - 600), &keys, &EXPECTED).is_ok());
        assert!(verify(&at(now + 600, now + 30), &keys, &EXPECTED).is_ok());
        assert_eq!(reason(&at(now - 90, now - 600), &keys), "expired");
        assert_eq!(reason(&at(now + 900, now + 90), &keys), "not-yet-valid");
    }

    #[test]
    fn claims_that_disagree_or_are_missing_are_refused() {
        let (encoding, keys) = key();
        let without = |path: &[&str]| {
            let mut c = claims();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut c;
            for p in parents {
                at = &mut at[*p];
            }
            at.as_object_mut().unwrap().remove(*last);
            sign(&encoding, &c)
        };
        assert_eq!(reason(&without(&["kubernetes.io", "pod"]), &keys), "claims");
        assert_eq!(reason(&without(&["nbf"]), &keys), "claims");
        assert_eq!(reason(&without(&["aud"]), &keys), "claims");
        assert_eq!(reason(&without(&["kubernetes.io"]), &keys), "claims");
        let mut c = claims();
        c["sub"] = json!("system:serviceaccount:apps:other");
        assert_eq!(reason(&sign(&encoding, &c), &keys), "claims");
        c = claims();
        c["aud"] = json!("access-token-agent-x");
        assert_eq!(reason(&sign(&encoding, &c), &keys), "audience");
    }

    #[test]
    fn only_the_keys_algorithm_verifies() {
        let (encoding, keys) = key();
        let good = sign(&encoding, &claims());
        let payload = good.split('.').nth(1).unwrap();
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        for (alg, reason_expected) in [
            ("none", "algorithm"),
            ("HS256", "algorithm"),
            ("RS256", "algorithm"),
            ("PS256", "algorithm"),
        ] {
            let header = b64(&format!("{{\"alg\":\"{alg}\",\"kid\":\"k1\"}}"));
            let signature = good.split('.').nth(2).unwrap();
            let token = format!("{header}.{payload}.{signature}");
            assert_eq!(reason(&token, &keys), reason_expected, "{alg}");
        }
        let no_kid = format!("{}.{payload}.x", b64("{\"alg\":\"ES256\"}"));
        assert_eq!(reason(&no_kid, &keys), "unknown-kid");
        assert_eq!(reason("a.b", &keys), "malformed");
        assert_eq!(reason("!!.b.c", &keys), "malformed");
    }
}
