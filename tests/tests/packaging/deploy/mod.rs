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
    assert!(spec["hostPID"].is_badvalue() || spec["hostPID"].as_bool() == Some(false));
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
fn apps_mount_the_socket_read_only_and_run_as_their_own_uid() {
    let documents = manifest("app-example.yaml");
    let pod = &of_kind(&documents, "Pod")["spec"];
    let uid = pod["securityContext"]["runAsUser"]
        .as_i64()
        .expect("a runAsUser");
    let groups = pod["securityContext"]["supplementalGroups"]
        .as_vec()
        .expect("supplementalGroups");
    assert!(groups.contains(&Yaml::Integer(10002)), "the socket's group");
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), Some("/run/access-token-agent"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let agent_toml = config_text(&manifest("agent.yaml"));
    assert!(
        agent_toml.contains(&format!("uid = {uid}")),
        "the agent's config grants the example app's uid {uid}"
    );
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
    let text = config_text(&manifest("agent.yaml"));
    // The node's files, this host's: the module, the PIN file and the
    // socket's group; every other key and value is the manifest's own.
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
    let config =
        Config::parse(&local).unwrap_or_else(|e| panic!("the ConfigMap's agent.toml: {e}"));
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
