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
//! driver names it, on the cgroup v2 hierarchy (the fixture's
//! [`integration_tests::kubernetes`]); where this process may not make
//! cgroups, that part says NOT RUN and the rest still runs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use access_token_agent::config::Config;
use integration_tests::daemon::{client_binary, exported_cert, log, Daemon};
use integration_tests::kubernetes::{cgroup2_for, jwks, Cgroups, Driver, IssuerKey, Pod};
use integration_tests::process::run_by;
use integration_tests::{unix_now, verify_jwt, OutputExt, TestToken};
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

/// The example app's projected token for `pod`: the claims the kubelet
/// writes, with the audience and lifetime of the app's projected volume
/// and the issuer the agent's `[kubernetes]` section expects.
fn projected_token(app: &[Yaml], agent_config: &str, pod: &Pod, key: &IssuerKey) -> String {
    let projected = of_kind(app, "Pod")["spec"]["volumes"]
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
    let mut claims = pod.claims();
    let lifetime = projected["expirationSeconds"]
        .as_i64()
        .expect("expirationSeconds");
    claims["iss"] = kubernetes.issuer.into();
    claims["aud"] = serde_json::json!([projected["audience"].as_str().expect("an audience")]);
    claims["exp"] = (unix_now() + lifetime).into();
    key.sign(&claims)
}

/// `command`, moved into cgroup `cgroup` before it starts.
fn in_cgroup(cgroup: &Path, command: &Command) -> Command {
    let mut shell = Command::new("/bin/sh");
    shell
        .args(["-c", r#"echo $$ > "$0" && exec "$@""#])
        .arg(cgroup.join("cgroup.procs"));
    run_by(shell, command)
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
    let issuer = IssuerKey::p256(token.path(), "cluster");
    let jwks_dir = node.root.path().join("jwks");
    std::fs::create_dir(&jwks_dir).unwrap();
    std::fs::write(jwks_dir.join("jwks.json"), jwks(&[&issuer])).unwrap();
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

    let test = "the_daemonset_starts_as_shipped_and_serves_the_example_app, its pod part";
    let Some(cgroup2) = cgroup2_for(test) else {
        return;
    };
    // The pod: its cgroup, and its projected token in a volume it can read.
    let app_pod = of_kind(&app_documents, "Pod");
    let text = |value: &Yaml| value.as_str().expect("a string").to_owned();
    let mut pod = Pod::new(
        &text(&app_pod["metadata"]["namespace"]),
        &text(&app_pod["spec"]["serviceAccountName"]),
    );
    pod.name = text(&app_pod["metadata"]["name"]);
    let mut cgroups = Cgroups::new(&cgroup2);
    let container = cgroups.container(&pod, Driver::Systemd, Some("besteffort"));
    let volume = tempfile::tempdir().unwrap();
    std::fs::set_permissions(volume.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let sa_token = volume.path().join("token");
    let projected = projected_token(&app_documents, &config, &pod, &issuer);
    std::fs::write(&sa_token, projected).unwrap();
    std::fs::set_permissions(&sa_token, PermissionsExt::from_mode(0o644)).unwrap();

    let ask = token_command(&app_socket, "my-app", Some(&sa_token));
    let out = in_cgroup(&container, &app.run(&ask))
        .output()
        .unwrap()
        .success();
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
    for part in [&pod.namespace, &pod.service_account, &pod.name, &pod.uid] {
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
