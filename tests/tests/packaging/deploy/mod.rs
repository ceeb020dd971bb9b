//! The Kubernetes manifests in deploy/kubernetes: they parse, and carry what
//! README.md's "Kubernetes" section promises. No cluster is needed: the
//! YAML is read with a YAML library and the agent's config inside it with
//! the agent's own config parser; [`started`] runs the agent as the
//! DaemonSet would.

mod started;

use std::path::{Path, PathBuf};

use access_token_agent::config::Config;
use integration_tests::token::TestToken;
use yaml_rust2::{Yaml, YamlLoader};

fn manifest(name: &str) -> Vec<Yaml> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

fn of_kind<'a>(documents: &'a [Yaml], kind: &str) -> &'a Yaml {
    documents
        .iter()
        .find(|doc| doc["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

/// The strings of a YAML list.
fn strings(list: &Yaml) -> Vec<&str> {
    list.as_vec()
        .map(|items| items.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

fn pod_spec(documents: &[Yaml]) -> &Yaml {
    &of_kind(documents, "DaemonSet")["spec"]["template"]["spec"]
}

fn container<'a>(spec: &'a Yaml, list: &str, name: &str) -> &'a Yaml {
    spec[list]
        .as_vec()
        .and_then(|all| all.iter().find(|c| c["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

fn volume<'a>(spec: &'a Yaml, name: &str) -> &'a Yaml {
    spec["volumes"]
        .as_vec()
        .and_then(|all| all.iter().find(|v| v["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("no volume named {name}"))
}

#[test]
fn the_daemonset_runs_the_agent_unprivileged_with_its_socket_on_the_node() {
    let documents = manifest("agent.yaml");
    let spec = pod_spec(&documents);
    let pod = &spec["securityContext"];
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["runAsUser"].as_i64(), Some(10001));
    assert_eq!(
        pod["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(
        spec["hostPID"].as_bool(),
        Some(true),
        "callers' host pids, to read their pods from /proc/PID/cgroup"
    );
    assert!(
        spec["hostNetwork"].is_badvalue(),
        "the agent needs no host network"
    );
    let agent = container(spec, "containers", "agent");
    let security = &agent["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert!(
        security["capabilities"]["add"].is_badvalue(),
        "the agent adds no capability"
    );
    assert!(agent["resources"]["requests"]["cpu"].as_str().is_some());
    assert!(agent["resources"]["requests"]["memory"].as_str().is_some());
    assert!(agent["resources"]["limits"]["memory"].as_str().is_some());
    let socket = volume(spec, "socket");
    assert_eq!(
        socket["hostPath"]["path"].as_str(),
        Some("/run/access-token-agent")
    );
    let readiness = strings(&agent["readinessProbe"]["exec"]["command"]);
    assert_eq!(
        readiness[..2],
        ["access-token", "status"],
        "readiness comes from /readyz"
    );
}

#[test]
fn the_only_privilege_is_the_socket_directorys_owner_once() {
    let documents = manifest("agent.yaml");
    let spec = pod_spec(&documents);
    let init = container(spec, "initContainers", "socket-dir");
    let added = strings(&init["securityContext"]["capabilities"]["add"]);
    assert_eq!(added, ["CHOWN", "FOWNER"]);
    assert_eq!(
        init["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    for other in ["hsm-client", "pin"] {
        let security = &container(spec, "initContainers", other)["securityContext"];
        assert!(
            security["capabilities"]["add"].is_badvalue(),
            "{other} adds capabilities"
        );
        assert!(
            security["runAsUser"].is_badvalue(),
            "{other} runs as another user"
        );
    }
}

#[test]
fn the_pin_comes_from_a_secret_as_a_file_only_the_agent_reads() {
    let documents = manifest("agent.yaml");
    let spec = pod_spec(&documents);
    assert_eq!(
        volume(spec, "pin-secret")["secret"]["secretName"].as_str(),
        Some("access-token-agent-pin")
    );
    assert_eq!(
        volume(spec, "pin")["emptyDir"]["medium"].as_str(),
        Some("Memory")
    );
    let copy = strings(&container(spec, "initContainers", "pin")["command"]);
    assert_eq!(copy[..3], ["install", "-m", "0600"], "the PIN file is 0600");
    let agent = container(spec, "containers", "agent");
    let env: Vec<&str> = agent["env"]
        .as_vec()
        .map(|vars| vars.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !env.iter().any(|name| name.contains("PIN")),
        "no PIN in the environment"
    );
}

#[test]
fn apps_mount_the_socket_read_only_and_their_token_where_clients_look() {
    let documents = manifest("app-example.yaml");
    let pod = of_kind(&documents, "Pod");
    let spec = &pod["spec"];
    let groups = spec["securityContext"]["supplementalGroups"]
        .as_vec()
        .expect("supplementalGroups");
    assert!(groups.contains(&Yaml::Integer(10002)), "the socket's group");
    let mounts = &spec["containers"][0]["volumeMounts"];
    let mount = &mounts[0];
    assert_eq!(mount["mountPath"].as_str(), Some("/run/access-token-agent"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true));

    // The projected token: where the clients look by default, for the
    // agent's audience, an hour at most (the kubelet's floor is 10 min).
    let token_mount = mounts
        .as_vec()
        .into_iter()
        .flatten()
        .find(|m| m["name"].as_str() == Some("access-token-agent-token"))
        .expect("the token's mount");
    let source =
        &volume(spec, "access-token-agent-token")["projected"]["sources"][0]["serviceAccountToken"];
    let path = Path::new(token_mount["mountPath"].as_str().unwrap())
        .join(source["path"].as_str().unwrap());
    assert_eq!(
        path,
        Path::new(access_token_client::DEFAULT_KUBERNETES_TOKEN_FILE)
    );
    let lifetime = source["expirationSeconds"].as_i64().unwrap();
    assert!((600..=3600).contains(&lifetime), "{lifetime}");
    let config = local_config(&config_text(&manifest("agent.yaml")));
    let kubernetes = config.kubernetes.expect("a [kubernetes] section");
    assert_eq!(
        source["audience"].as_str(),
        Some(kubernetes.audience.as_str())
    );
    assert!(kubernetes.bind_to_pod);

    // The grant names the pod's namespace and service account, not its uid.
    let namespace = pod["metadata"]["namespace"].as_str().unwrap();
    let account = spec["serviceAccountName"].as_str().unwrap();
    let text = config_text(&manifest("agent.yaml"));
    assert!(
        text.contains(&format!("k8s_namespace = {namespace:?}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("k8s_service_account = {account:?}")),
        "{text}"
    );
    assert!(
        !text.contains("\nuid ="),
        "no uid grants in a cluster: {text}"
    );
}

#[test]
fn the_jwks_configmap_is_mounted_where_the_config_reads_it() {
    let documents = manifest("agent.yaml");
    let config = local_config(&config_text(&documents));
    let jwks_file = config.kubernetes.expect("[kubernetes]").jwks_file;
    let spec = pod_spec(&documents);
    let agent = container(spec, "containers", "agent");
    let mount = agent["volumeMounts"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|m| Some(Path::new(m["mountPath"].as_str().unwrap())) == jwks_file.parent())
        .expect("a mount at the JWKS file's directory");
    assert!(mount["subPath"].is_badvalue(), "a subPath is never updated");
    let name = volume(spec, mount["name"].as_str().unwrap())["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap volume");
    let key = jwks_file.file_name().unwrap().to_str().unwrap();
    let jwks = documents
        .iter()
        .find(|doc| {
            doc["kind"].as_str() == Some("ConfigMap")
                && doc["metadata"]["name"].as_str() == Some(name)
        })
        .map(|doc| &doc["data"][key])
        .expect("the JWKS ConfigMap in agent.yaml");
    let jwks: serde_json::Value = serde_json::from_str(jwks.as_str().unwrap()).unwrap();
    assert!(jwks["keys"].is_array(), "{jwks}");
}

#[test]
fn each_namespace_declares_the_pod_security_level_it_needs() {
    let level = |documents: &[Yaml]| {
        of_kind(documents, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
            .as_str()
            .map(str::to_owned)
    };
    // hostPID and hostPath (agent), hostPath (apps): beyond "baseline".
    assert_eq!(
        level(&manifest("agent.yaml")).as_deref(),
        Some("privileged")
    );
    let app = manifest("app-example.yaml");
    assert_eq!(level(&app).as_deref(), Some("privileged"));

    // What "baseline" no longer keeps out of the app's namespace, the
    // admission policy does: its binding selects that namespace.
    let policy = manifest("admission-policy.yaml");
    let binding = of_kind(&policy, "ValidatingAdmissionPolicyBinding");
    assert_eq!(
        binding["spec"]["policyName"].as_str(),
        of_kind(&policy, "ValidatingAdmissionPolicy")["metadata"]["name"].as_str()
    );
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
    let labels = &of_kind(&app, "Namespace")["metadata"]["labels"];
    let selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
        .as_hash()
        .expect("matchLabels");
    for (key, value) in selector {
        assert_eq!(
            &labels[key.as_str().unwrap()],
            value,
            "the app's namespace is selected"
        );
    }
    let agent = manifest("agent.yaml");
    let agent_labels = &of_kind(&agent, "Namespace")["metadata"]["labels"];
    assert!(
        selector
            .iter()
            .any(|(key, value)| &agent_labels[key.as_str().unwrap()] != value),
        "the agent's own namespace is not"
    );
}

/// The ConfigMap's agent.toml as this host's config parser reads it: the
/// module, the PIN file and the socket's group are this host's, every
/// other key and value the manifest's own.
fn local_config(text: &str) -> Config {
    let token = TestToken::new();
    let group = current_group();
    let local = text
        .replace(
            "/opt/hsm-client/lib/libCryptoki2_64.so",
            integration_tests::store::MODULE,
        )
        .replace(
            "/run/access-token-agent-pin/pin",
            &path_str(token.pin_file()),
        )
        .replace("\"access-token-clients\"", &format!("{group:?}"));
    Config::parse(&local).unwrap_or_else(|e| panic!("the ConfigMap's agent.toml: {e}"))
}

/// The agent.toml the ConfigMap carries.
fn config_text(documents: &[Yaml]) -> String {
    of_kind(documents, "ConfigMap")["data"]["agent.toml"]
        .as_str()
        .expect("agent.toml in the ConfigMap")
        .to_owned()
}

#[test]
fn the_configmap_holds_a_config_the_agent_accepts() {
    let config = local_config(&config_text(&manifest("agent.yaml")));
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(config.grants.len(), 1);
    assert_eq!(
        config.server.socket,
        PathBuf::from("/run/access-token-agent/agent.sock")
    );
}

fn path_str(path: PathBuf) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

fn current_group() -> String {
    let output = std::process::Command::new("id")
        .arg("-gn")
        .output()
        .expect("id");
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}
