//! The parts of a Kubernetes cluster the agent meets, made without a
//! cluster: the service-account issuer (fresh RSA and P-256 keys made by
//! openssl, their JWKS file, projected tokens with exactly a projected
//! token's claims, signed by jsonwebtoken) and the kubelet's pod cgroups on
//! the real cgroup v2 hierarchy, with processes moved into them.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::openssl::openssl;
use crate::unix_now;

/// The `iss` the test cluster's tokens carry, and the agent is told to expect.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The audience the agent expects by default.
pub const AUDIENCE: &str = "access-token-agent";

/// One key of the cluster's service-account issuer.
pub struct IssuerKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl IssuerKey {
    /// A fresh RSA-2048 key (RS256), made by openssl in `dir` as `<name>.pem`.
    pub fn rsa(dir: &Path, name: &str) -> IssuerKey {
        let pem = generate(
            dir,
            name,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        );
        let encoding = EncodingKey::from_rsa_pem(&pem).expect("openssl's RSA key");
        IssuerKey::new(name, Algorithm::RS256, encoding)
    }

    /// A fresh P-256 key (ES256), as [`IssuerKey::rsa`].
    pub fn p256(dir: &Path, name: &str) -> IssuerKey {
        let pem = generate(
            dir,
            name,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let encoding = EncodingKey::from_ec_pem(&pem).expect("openssl's P-256 key");
        IssuerKey::new(name, Algorithm::ES256, encoding)
    }

    fn new(name: &str, algorithm: Algorithm, encoding: EncodingKey) -> IssuerKey {
        let kid = format!("{name}-{}", unique());
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("a public JWK");
        jwk.common.key_id = Some(kid.clone());
        IssuerKey {
            kid,
            algorithm,
            encoding,
            jwk,
        }
    }

    /// `claims` signed with this key, the header naming its alg and kid.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign a token")
    }
}

fn generate(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(format!("{name}.pem"));
    let out = crate::path_str(&path);
    let mut all = vec!["genpkey"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-out", &out]);
    openssl(dir, &all);
    std::fs::read(&path).expect("read the key openssl wrote")
}

/// A name part no other key or cgroup of this test run has.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The JWKS document of `keys`, as `/openid/v1/jwks` serves it.
pub fn jwks(keys: &[&IssuerKey]) -> String {
    let set = JwkSet {
        keys: keys.iter().map(|key| key.jwk.clone()).collect(),
    };
    serde_json::to_string(&set).expect("a JWKS")
}

/// A pod the test cluster runs.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub service_account: String,
    pub name: String,
    /// A UUID, as the API server gives every pod.
    pub uid: String,
}

impl Pod {
    pub fn new(namespace: &str, service_account: &str) -> Pod {
        let uid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .expect("a fresh UUID from the kernel")
            .trim()
            .to_owned();
        Pod {
            namespace: namespace.into(),
            service_account: service_account.into(),
            name: format!("{service_account}-{}", &uid[..8]),
            uid,
        }
    }

    /// Exactly the claims of this pod's projected token, valid from a
    /// minute ago for ten minutes.
    pub fn claims(&self) -> serde_json::Value {
        let now = unix_now();
        json!({
            "aud": [AUDIENCE],
            "exp": now + 600,
            "iat": now - 60,
            "iss": ISSUER,
            "jti": format!("{}-jti", self.uid),
            "kubernetes.io": {
                "namespace": self.namespace,
                "node": {"name": "node-1", "uid": "5b9d2a1e-0000-4000-8000-00000000cafe"},
                "pod": {"name": self.name, "uid": self.uid},
                "serviceaccount": {"name": self.service_account, "uid": "2c4e6a8b-0000-4000-8000-0000000000aa"},
                "warnafter": now + 420,
            },
            "nbf": now - 60,
            "sub": format!("system:serviceaccount:{}:{}", self.namespace, self.service_account),
        })
    }
}

/// The kubelet's cgroup drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

/// The cgroup v2 hierarchy, if this process may make cgroups in it: at
/// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one.
pub fn writable_cgroup2() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let root = mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
    })?;
    let probe = root.join(format!("att-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).ok()?;
    std::fs::remove_dir(&probe).ok()?;
    Some(root)
}

/// The writable cgroup v2 hierarchy, or `None` after saying that `test`
/// is not run; under `CI` (which runs as root on cgroup v2) a failure.
pub fn cgroup2_for(test: &str) -> Option<PathBuf> {
    let root = writable_cgroup2();
    if root.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs a writable cgroup v2 hierarchy for {test}"
        );
        println!("NOT RUN: {test}: no writable cgroup v2 hierarchy");
    }
    root
}

/// Cgroups a test made, removed deepest first when it ends. Levels other
/// tests share (`kubepods.slice`, …) are removed too once nobody uses them.
pub struct Cgroups {
    root: PathBuf,
    made: Vec<PathBuf>,
}

impl Cgroups {
    pub fn new(root: &Path) -> Cgroups {
        Cgroups {
            root: root.to_path_buf(),
            made: Vec::new(),
        }
    }

    /// Makes `relative` (and what leads to it) under the root; made again
    /// if another test removed a shared level on the way.
    pub fn make(&mut self, relative: &str) -> PathBuf {
        let path = self.root.join(relative);
        let mut walked = self.root.clone();
        for part in Path::new(relative).components() {
            walked.push(part);
            if !self.made.contains(&walked) {
                self.made.push(walked.clone());
            }
        }
        for _ in 0..50 {
            match std::fs::create_dir_all(&path) {
                Ok(()) => return path,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("mkdir {}: {e}", path.display()),
            }
        }
        panic!("mkdir {}: its parents keep disappearing", path.display());
    }

    /// Removes `path` with the rest: a cgroup the test's client made.
    pub fn adopt(&mut self, path: PathBuf) {
        self.made.push(path);
    }

    /// A container's cgroup in `pod`, laid out as `driver` lays it out,
    /// in qos class `qos` (`None`: a guaranteed pod).
    pub fn container(&mut self, pod: &Pod, driver: Driver, qos: Option<&str>) -> PathBuf {
        let id = unique();
        let relative = match (driver, qos) {
            (Driver::Systemd, Some(qos)) => format!(
                "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/cri-containerd-{id}.scope",
                pod.uid.replace('-', "_")
            ),
            (Driver::Systemd, None) => format!(
                "kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope",
                pod.uid.replace('-', "_")
            ),
            (Driver::Cgroupfs, Some(qos)) => format!("kubepods/{qos}/pod{}/{id}", pod.uid),
            (Driver::Cgroupfs, None) => format!("kubepods/pod{}/{id}", pod.uid),
        };
        self.make(&relative)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Deepest first; a level another test still uses stays.
        let mut made = std::mem::take(&mut self.made);
        made.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
        for path in made {
            let _ = std::fs::remove_dir(path);
        }
    }
}
