//! The cluster's service-account issuer keys: a JWKS file, read at start,
//! on SIGHUP, and whenever the file changes.
//!
//! A ConfigMap mounted in a pod changes by a swap: the kubelet writes a
//! new `..2024_…` directory and renames the `..data` symlink to point at
//! it, so the file's path stays and what it leads to is a new inode. The
//! agent `stat`s the path, following links, before every verification and
//! reads the file again when its (device, inode, mtime, size) differ from
//! the last read's. One `stat` costs about a microsecond, far below the
//! signature check it precedes, and it is the simplest rule that is right
//! both ways: a new key works at once, and a key taken out of the file
//! (a leaked issuer key, rotated away) stops working at once, which
//! reading the file only on an unknown `kid` would never notice.
//! (An edit in place that keeps size and mtime to the nanosecond passes
//! unseen until SIGHUP.)
//!
//! A file that cannot be read or holds no usable key is a start error;
//! later, the keys read before keep serving and the error is logged, once
//! per change of the file.
//!
//! Only RS256 and ES256 keys are kept (the algorithms Kubernetes signs
//! service-account tokens with), each with its `kid` and one algorithm:
//! a token is verified with the algorithm of the key its `kid` names, never
//! with one its header chooses. Keys of other types (`oct`, `OKP`, other
//! curves) are left out, so no HMAC or `none` can ever verify.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One usable key: what a token's header must name to be checked with it.
pub struct Key {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The keys of one reading of the file.
pub struct Keys(Vec<Key>);

impl Keys {
    /// The key with this `kid`.
    pub fn find(&self, kid: &str) -> Option<&Key> {
        self.0.iter().find(|key| key.kid == kid)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What identifies one version of the file, cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let meta = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            size: meta.size(),
        })
    }
}

/// The key set and the file it comes from.
pub struct Jwks {
    path: PathBuf,
    keys: RwLock<Arc<Keys>>,
    /// The version of the file last read, whether or not it was usable:
    /// a bad file is read and logged once, not at every request.
    seen: Mutex<Option<Stamp>>,
}

impl Jwks {
    /// Reads the file; the error says what is wrong with it.
    pub fn load(path: &Path) -> Result<Jwks, String> {
        let stamp = Stamp::of(path).ok();
        let keys = read(path)?;
        Ok(Jwks {
            path: path.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            seen: Mutex::new(stamp),
        })
    }

    /// The keys in force, read again first if the file changed.
    pub fn current(&self) -> Arc<Keys> {
        let stamp = Stamp::of(&self.path).ok();
        let changed = *crate::sync::lock(&self.seen) != stamp;
        if changed {
            self.reload_if(|seen| *seen != stamp);
        }
        crate::sync::read(&self.keys).clone()
    }

    /// Reads the file again now (SIGHUP), changed or not.
    pub fn reload(&self) {
        self.reload_if(|_| true);
    }

    /// Reads the file if `wanted` says so of the version last read; one
    /// reader at a time, and the others then find it read.
    fn reload_if(&self, wanted: impl FnOnce(&Option<Stamp>) -> bool) {
        let mut seen = crate::sync::lock(&self.seen);
        if !wanted(&seen) {
            return;
        }
        *seen = Stamp::of(&self.path).ok();
        match read(&self.path) {
            Ok(keys) => {
                tracing::info!(
                    file = %self.path.display(),
                    keys = keys.len(),
                    "Kubernetes issuer keys read"
                );
                *crate::sync::write(&self.keys) = Arc::new(keys);
            }
            Err(error) => tracing::error!(
                %error,
                "`kubernetes.jwks_file`: the keys read before keep serving"
            ),
        }
    }
}

/// The usable keys of the JWKS file at `path`.
fn read(path: &Path) -> Result<Keys, String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "`kubernetes.jwks_file` = {}: cannot read it ({e})",
            path.display()
        )
    })?;
    parse(&text).map_err(|why| format!("`kubernetes.jwks_file` = {}: {why}", path.display()))
}

/// The RS256 and ES256 keys of a JWKS document.
pub fn parse(text: &[u8]) -> Result<Keys, String> {
    let set: JwkSet = serde_json::from_slice(text).map_err(|e| {
        format!("is not a JWKS ({e}); write the output of `kubectl get --raw /openid/v1/jwks`")
    })?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?} is not usable ({e})"))?;
        keys.push(Key {
            kid,
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        return Err("holds no RS256 or ES256 key with a `kid`; the cluster's service-account issuer signs with one of those".into());
    }
    Ok(Keys(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = r#"{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw","e":"AQAB"}"#;
    const EC: &str = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    fn set(keys: &[&str]) -> Vec<u8> {
        format!("{{\"keys\":[{}]}}", keys.join(",")).into_bytes()
    }

    #[test]
    fn rsa_and_p256_keys_are_kept_with_their_algorithm() {
        let keys = parse(&set(&[RSA, EC])).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.find("r1").unwrap().algorithm, Algorithm::RS256);
        assert_eq!(keys.find("e1").unwrap().algorithm, Algorithm::ES256);
        assert!(keys.find("x").is_none());
    }

    #[test]
    fn hmac_other_curves_other_algorithms_and_keys_without_kid_are_left_out() {
        let oct = r#"{"kty":"oct","kid":"h1","k":"c2VjcmV0"}"#;
        let p384 = EC.replace("P-256", "P-384").replace("e1", "e2");
        let ps256 = RSA.replace("RS256", "PS256").replace("r1", "r2");
        let no_kid = RSA.replace(r#""kid":"r1","#, "");
        let keys = parse(&set(&[oct, &p384, &ps256, &no_kid, EC])).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.find("e1").is_some());
        let err = parse(&set(&[oct])).err().unwrap();
        assert!(err.contains("no RS256 or ES256 key"), "{err}");
        let err = parse(b"{\"keys\": 5}").err().unwrap();
        assert!(err.contains("is not a JWKS"), "{err}");
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_one_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, set(&[RSA])).unwrap();
        let jwks = Jwks::load(&path).unwrap();
        assert!(jwks.current().find("r1").is_some());
        // Swapped in as a ConfigMap does: a new file renamed over the path.
        let next = dir.path().join("next.json");
        std::fs::write(&next, set(&[EC])).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let keys = jwks.current();
        assert!(keys.find("r1").is_none() && keys.find("e1").is_some());
        std::fs::write(&next, b"not json").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(jwks.current().find("e1").is_some());
        std::fs::remove_file(&path).unwrap();
        assert!(jwks.current().find("e1").is_some());
        assert!(Jwks::load(&path).is_err());
    }
}
