//! The agent started exactly as the DaemonSet starts it, and asked for a
//! token exactly as the example app's pod asks: the ids, groups, config,
//! directory modes and group names come from the manifests and the image's
//! Containerfile, not from this file; so do the token's audience, lifetime,
//! namespace and service account.
//!
//! What the test rewrites, and only that: in the ConfigMap's agent.toml,
//! `hsm.module` and `hsm.pin_file` (this run's SoftHSM token and its PIN
//! file, in place of the vendor's module and the PIN Secret's copy), the
//! node's directory `/run/access-token-agent` in `server.socket` and the
//! JWKS ConfigMap's mount directory in `kubernetes.jwks_file` (temporary
//! directories standing for the hostPath and the ConfigMap volume); in the
//! init container's command and the app's `ACCESS_TOKEN_AGENT_SOCKET`,
//! the node's directory. The JWKS is this test's stand-in for the cluster's
//! issuer (what `kubectl get --raw /openid/v1/jwks` gives an operator).
//! The image's `/etc/group` (its `groupadd` lines) is bind-mounted over the
//! host's in a mount namespace of the agent's own, so that `socket_group`
//! resolves as it does in the container.
//!
//! The app's process is put in a pod's cgroup as the kubelet's systemd
//! driver names it, on the cgroup v2 hierarchy; where this process may not
//! make cgroups, that part says NOT RUN and the rest still runs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use access_token_agent::config::Config;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::daemon::{client_binary, exported_cert, log, Daemon};
use integration_tests::process::run_by;
use integration_tests::{
    openssl, p256_self_signed, unix_now, verify_jwt, KeyFiles, OutputExt, TestToken,
};
use yaml_rust2::Yaml;

use super::{config_text, container, manifest, of_kind, pod_spec, strings, volume};

/// The node's directory the socket is in: the hostPath, and the mountPath
/// in every pod that mounts it.
const NODE_DIR: &str = "/run/access-token-agent";

/// Where the DaemonSet mounts the JWKS ConfigMap.
const JWKS_DIR: &str = "/etc/access-token-agent-jwks";

/// The ids a container's processes run with: `runAsUser` and `runAsGroup`
/// (the container's `securityContext` over the pod's) and, as supplementary
/// groups, the pod's `fsGroup` and `supplementalGroups`, which the kubelet
/// adds to every container of the pod. The image's /etc/group lists its
/// users in no further group, so the runtime merges in nothing else.
#[derive(Debug, Clone)]
struct Ids {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Ids {
    fn of(pod: &Yaml, container: &Yaml) -> Ids {
        let setting = |key: &str| {
            let own = &container["securityContext"][key];
            let value = if own.is_badvalue() {
                &pod["securityContext"][key]
            } else {
                own
            };
            value.as_i64().map(|id| id as u32)
        };
        let mut groups: Vec<u32> = pod["securityContext"]["fsGroup"]
            .as_i64()
            .map(|id| id as u32)
            .into_iter()
            .collect();
        for id in pod["securityContext"]["supplementalGroups"]
            .as_vec()
            .into_iter()
            .flatten()
        {
            groups.push(id.as_i64().expect("a numeric group") as u32);
        }
        Ids {
            uid: setting("runAsUser").expect("a runAsUser"),
            gid: setting("runAsGroup").expect("a runAsGroup"),
            groups,
        }
    }

    /// `command` run by `setpriv` as these ids, exactly these groups.
    fn run(&self, command: &Command) -> Command {
        let mut setpriv = Command::new("setpriv");
        setpriv.arg(format!("--reuid={}", self.uid));
        setpriv.arg(format!("--regid={}", self.gid));
        match self.groups.is_empty() {
            true => setpriv.arg("--clear-groups"),
            false => {
                let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
                setpriv.arg(format!("--groups={}", list.join(",")))
            }
        };
        setpriv.arg("--");
        run_by(setpriv, command)
    }
}

/// The image's /etc/group: root, and a line for each `groupadd --gid N
/// NAME` of the Containerfile.
fn image_group_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/Containerfile");
    let containerfile = std::fs::read_to_string(&path).expect("read the Containerfile");
    let mut lines = String::from("root:x:0:\n");
    for line in containerfile
        .lines()
        .filter(|line| line.contains("groupadd"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "--gid").expect("--gid");
        let name = words[at + 2..]
            .iter()
            .find(|w| !w.starts_with('-') && **w != "\\")
            .expect("a group name");
        lines.push_str(&format!("{name}:x:{}:\n", words[at + 1]));
    }
    lines
}

/// `command` with `group_file` bind-mounted over /etc/group in a mount
/// namespace of its own, then run as `ids`; it keeps the shell's pid.
fn in_the_image(command: Command, ids: &Ids, group_file: &Path) -> Command {
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/group && exec "$@""#)
        .arg(group_file);
    run_by(unshare, &ids.run(&command))
}

/// The node: a directory standing for `/`, with `run/access-token-agent`
/// made as the kubelet makes a `DirectoryOrCreate` hostPath (root, 0755),
/// then handed over by the init container's own command.
struct Node {
    root: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(root.path().join("run/access-token-agent")).unwrap();
        Node { root }
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.path().join("run/access-token-agent")
    }

    /// `text` with the node's directory replaced by this node's.
    fn local(&self, text: &str) -> String {
        text.replace(NODE_DIR, self.socket_dir().to_str().unwrap())
    }

    /// Runs the init container `socket-dir`'s command as it runs: root.
    fn run_init_container(&self, spec: &Yaml) {
        let init = container(spec, "initContainers", "socket-dir");
        let mount = &init["volumeMounts"][0];
        assert_eq!(mount["name"].as_str(), Some("socket"));
        assert_eq!(mount["mountPath"].as_str(), Some(NODE_DIR));
        let command: Vec<String> = strings(&init["command"])
            .into_iter()
            .map(|part| self.local(part))
            .collect();
        Command::new(&command[0])
            .args(&command[1..])
            .output()
            .expect("run the init container's command")
            .success();
    }
}

/// `access-token token …` toward `socket`, sending the service-account
/// token in `sa_token` when given (else none: the default path is absent).
fn token_command(socket: &str, app: &str, sa_token: Option<&Path>) -> Command {
    let mut command = Command::new(client_binary());
    if let Some(file) = sa_token {
        command.arg("--kubernetes-token-file").arg(file);
    }
    command
        .args(["token", "--issuer", "ttd", "--app", app])
        .env(access_token_client::SOCKET_ENV, socket)
        .stdin(Stdio::null());
    command
}

/// [`token_command`] run as `ids`.
fn token_as(ids: &Ids, socket: &str, app: &str) -> Output {
    let command = token_command(socket, app, None);
    ids.run(&command).output().expect("run access-token")
}

/// The cluster's service-account issuer: a P-256 key, its JWKS, and
/// tokens with the claims of a projected one.
struct ClusterIssuer {
    key: KeyFiles,
    kid: String,
}

impl ClusterIssuer {
    fn new(dir: &Path) -> ClusterIssuer {
        let key = p256_self_signed(dir, "cluster-issuer", "/CN=cluster");
        ClusterIssuer {
            key,
            kid: "cluster-key-1".into(),
        }
    }

    /// The JWKS, as `kubectl get --raw /openid/v1/jwks` shows it.
    fn jwks(&self) -> String {
        let dir = self.key.key.parent().unwrap();
        let key = self.key.key.to_str().unwrap();
        let args = ["pkey", "-in", key, "-pubout", "-outform", "DER"];
        let der = openssl(dir, &args).success().stdout;
        // The SubjectPublicKeyInfo ends with the point: 0x04 || x || y.
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 4, "an uncompressed point");
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        serde_json::json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }]})
        .to_string()
    }

    /// A token as the kubelet projects it for `pod` (its name and UID) in
    /// namespace `namespace` under `service_account`.
    fn projected(&self, claims: &Projected) -> String {
        let now = unix_now();
        let body = serde_json::json!({
            "iss": claims.issuer,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
            "aud": [claims.audience],
            "exp": now + claims.lifetime, "iat": now, "nbf": now,
            "kubernetes.io": {
                "namespace": claims.namespace,
                "pod": {"name": claims.pod, "uid": claims.pod_uid},
                "serviceaccount": {"name": claims.service_account, "uid": "5a1c0e2d-0000-4000-8000-000000000001"},
                "node": {"name": "node-1", "uid": "6b2d1f3e-0000-4000-8000-000000000002"},
                "warnafter": now + claims.lifetime * 8 / 10,
            },
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let pem = std::fs::read(&self.key.key).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("the issuer's key");
        jsonwebtoken::encode(&header, &body, &key).expect("a signed token")
    }
}

/// What a projected token says, from the manifests.
struct Projected {
    issuer: String,
    audience: String,
    lifetime: i64,
    namespace: String,
    service_account: String,
    pod: String,
    pod_uid: String,
}

impl Projected {
    /// The example app's token: its pod's namespace, service account and
    /// projected volume's audience and lifetime; the agent's issuer.
    fn of_example(app: &[Yaml], agent_config: &str, pod_uid: &str) -> Projected {
        let pod = of_kind(app, "Pod");
        let projected = pod["spec"]["volumes"]
            .as_vec()
            .into_iter()
            .flatten()
            .flat_map(|v| v["projected"]["sources"].as_vec().into_iter().flatten())
            .map(|source| &source["serviceAccountToken"])
            .find(|token| !token.is_badvalue())
            .expect("a projected serviceAccountToken");
        // Parsed here, where the image's group is unknown: any group will do.
        let here = agent_config.replace("\"access-token-clients\"", "\"root\"");
        let kubernetes = Config::parse(&here)
            .expect("the agent's config")
            .kubernetes
            .expect("a [kubernetes] section");
        let text = |value: &Yaml| value.as_str().expect("a string").to_owned();
        Projected {
            issuer: kubernetes.issuer,
            audience: text(&projected["audience"]),
            lifetime: projected["expirationSeconds"]
                .as_i64()
                .expect("expirationSeconds"),
            namespace: text(&pod["metadata"]["namespace"]),
            service_account: text(&pod["spec"]["serviceAccountName"]),
            pod: text(&pod["metadata"]["name"]),
            pod_uid: pod_uid.to_owned(),
        }
    }
}

/// The cgroup v2 hierarchy, if this process may make cgroups in it: at
/// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one.
fn writable_cgroup2() -> Option<PathBuf> {
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

/// A pod's cgroup as the kubelet's systemd driver names it, with a
/// container's scope inside; removed (the parts this made) when dropped.
struct PodCgroup {
    made: Vec<PathBuf>,
}

impl PodCgroup {
    fn new(root: &Path, pod_uid: &str) -> PodCgroup {
        let qos = "kubepods-besteffort";
        let pod = format!("{qos}-pod{}.slice", pod_uid.replace('-', "_"));
        let scope = format!("cri-containerd-{:064x}.scope", std::process::id());
        let mut path = root.to_path_buf();
        let mut made = Vec::new();
        for part in ["kubepods.slice", &format!("{qos}.slice"), &pod, &scope] {
            path.push(part);
            match std::fs::create_dir(&path) {
                Ok(()) => made.push(path.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("mkdir {}: {e}", path.display()),
            }
        }
        PodCgroup { made }
    }

    /// `command`, moved into the container's cgroup before it starts.
    fn run(&self, command: &Command) -> Command {
        let scope = self.made.last().expect("the container's cgroup");
        let mut shell = Command::new("/bin/sh");
        shell
            .args(["-c", r#"echo $$ > "$0" && exec "$@""#])
            .arg(scope.join("cgroup.procs"));
        run_by(shell, command)
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for path in self.made.iter().rev() {
            let _ = std::fs::remove_dir(path);
        }
    }
}

#[test]
fn the_daemonset_starts_as_shipped_and_serves_the_example_app() {
    let documents = manifest("agent.yaml");
    let spec = pod_spec(&documents);
    let agent = Ids::of(spec, container(spec, "containers", "agent"));
    assert_eq!(
        volume(spec, "socket")["hostPath"]["path"].as_str(),
        Some(NODE_DIR)
    );
    let node = Node::new();
    node.run_init_container(spec);

    let token = TestToken::with_ttd_key("p256");
    let pem = exported_cert(&token, "pem");
    let issuer = ClusterIssuer::new(token.path());
    let jwks_dir = node.root.path().join("jwks");
    std::fs::create_dir(&jwks_dir).unwrap();
    std::fs::write(jwks_dir.join("jwks.json"), issuer.jwks()).unwrap();
    // The PIN's path first: it starts with the node directory's.
    let config = config_text(&documents)
        .replace("/opt/hsm-client/lib/libCryptoki2_64.so", &token.module())
        .replace(
            "/run/access-token-agent-pin/pin",
            token.pin_file().to_str().unwrap(),
        )
        .replace(JWKS_DIR, jwks_dir.to_str().unwrap());
    let config = node.local(&config);
    std::fs::write(token.config_path(), &config).unwrap();
    let group_file = token.write_file("image-group", image_group_file());

    let _daemon = Daemon::spawn(&token, |command| {
        // After the notify socket exists: the agent owns its files, as the
        // PIN's copy in the pod is the agent's (the init container `pin`
        // runs as the agent's uid).
        Command::new("chown")
            .args(["-R", &format!("{}:{}", agent.uid, agent.gid)])
            .arg(token.path())
            .output()
            .expect("run chown")
            .success();
        in_the_image(command, &agent, &group_file)
    })
    .ready(&token);

    let socket = node.socket_dir().join("agent.sock");
    let dir = std::fs::metadata(node.socket_dir()).unwrap();
    let file = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (dir.uid(), dir.gid(), dir.mode() & 0o7777),
        (agent.uid, 10002, 0o750)
    );
    assert_eq!(
        (file.uid(), file.gid(), file.mode() & 0o777),
        (agent.uid, 10002, 0o660)
    );

    // The example app, as its pod runs it.
    let app_documents = manifest("app-example.yaml");
    let app_spec = &of_kind(&app_documents, "Pod")["spec"];
    let app_container = &app_spec["containers"][0];
    let app = Ids::of(app_spec, app_container);
    let socket_env = app_container["env"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|var| var["name"].as_str() == Some(access_token_client::SOCKET_ENV))
        .and_then(|var| var["value"].as_str())
        .expect("the app's ACCESS_TOKEN_AGENT_SOCKET");
    let app_socket = node.local(socket_env);

    // Its uid alone is no identity: without its pod's token, nothing.
    let refused = token_as(&app, &app_socket, "my-app").exit(3);
    assert!(
        refused.stderr_text().contains("not granted"),
        "{}",
        refused.stderr_text()
    );
    // Without the socket's group the same pod cannot even connect.
    let outsider = Ids {
        groups: Vec::new(),
        ..app.clone()
    };
    let refused = token_as(&outsider, &app_socket, "my-app").exit(5);
    assert!(
        refused.stderr_text().contains("ermission denied"),
        "{}",
        refused.stderr_text()
    );

    let Some(cgroup2) = writable_cgroup2() else {
        println!("NOT RUN: the_daemonset_starts_as_shipped_and_serves_the_example_app, its pod part: no writable cgroup v2 hierarchy");
        return;
    };
    // The pod: its cgroup, and its projected token in a volume it can read.
    let pod_uid = format!("0f6b8a2e-3c1d-4e5f-9a7b-{:012x}", std::process::id());
    let pod = PodCgroup::new(&cgroup2, &pod_uid);
    let claims = Projected::of_example(&app_documents, &config, &pod_uid);
    let volume = tempfile::tempdir().unwrap();
    std::fs::set_permissions(volume.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let sa_token = volume.path().join("token");
    std::fs::write(&sa_token, issuer.projected(&claims)).unwrap();
    std::fs::set_permissions(&sa_token, PermissionsExt::from_mode(0o644)).unwrap();

    let ask = token_command(&app_socket, "my-app", Some(&sa_token));
    let out = pod.run(&app.run(&ask)).output().unwrap().success();
    let issued = out.stdout_text();
    assert_eq!(
        verify_jwt(issued.trim(), &pem, "ttd")["urn:altinn:app"],
        "my-app"
    );
    let logged = log(&token);
    let audit = logged
        .lines()
        .find(|line| line.contains("\"issued\"") && line.contains("k8s_namespace"))
        .unwrap_or_else(|| panic!("an audit line naming the pod:\n{logged}"));
    for part in [
        &claims.namespace,
        &claims.service_account,
        &claims.pod,
        &pod_uid,
    ] {
        assert!(audit.contains(part.as_str()), "{part} in {audit}");
    }

    // The same token from outside the pod's cgroup: refused.
    let replayed = app.run(&ask).output().unwrap().exit(3);
    assert!(
        replayed.stderr_text().contains("no pod"),
        "{}",
        replayed.stderr_text()
    );
}
