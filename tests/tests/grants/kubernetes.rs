//! Pods as callers: a grant by namespace and service account serves the
//! pod whose projected service-account token verifies and whose cgroup,
//! laid out as the kubelet lays it out, names the token's pod; everything
//! else is refused, with its reason in the audit line. No cluster runs
//! here: the issuer is a pair of keys made for the test, the tokens carry
//! exactly a projected token's claims, and the pods are cgroups on the real
//! cgroup v2 hierarchy with real client processes moved in, each in a pid
//! namespace of its own, as pods are. Clients run as uid 65534, which no
//! grant names, so only the Kubernetes grant can serve them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use integration_tests::daemon::{audit_lines, log, open_socket_to_others, ttd_token, Daemon};
use integration_tests::kubernetes::{cgroup2_for, jwks, Cgroups, Driver, IssuerKey, Pod, ISSUER};
use integration_tests::users::NOBODY;
use integration_tests::{poll_until, unix_now, TestToken};
use serde_json::json;

/// The app the grant gives the `apps`/`my-app` service account.
const APP: &str = "my-app";

/// An agent granting `APP` to service account `my-app` of namespace
/// `apps`, verifying tokens with `jwks_file`; `extra` goes into `[kubernetes]`.
fn agent(jwks_file: &Path, extra: &str) -> (TestToken, Daemon) {
    let config = format!(
        "[kubernetes]\njwks_file = {:?}\nissuer = {ISSUER:?}\n{extra}\n\n[[grant]]\nk8s_namespace = \"apps\"\nk8s_service_account = \"my-app\"\nissuer = \"ttd\"\napps = [{APP:?}]\n",
        jwks_file.display().to_string()
    );
    let token = ttd_token("p256", &config);
    open_socket_to_others(&token);
    let daemon = Daemon::start(&token);
    (token, daemon)
}

/// A cluster's issuer: an RSA and a P-256 key, and the JWKS file of both.
struct Cluster {
    dir: tempfile::TempDir,
    rsa: IssuerKey,
    p256: IssuerKey,
    jwks_file: PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let rsa = IssuerKey::rsa(dir.path(), "rsa");
        let p256 = IssuerKey::p256(dir.path(), "p256");
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks(&[&rsa, &p256])).unwrap();
        Cluster {
            dir,
            rsa,
            p256,
            jwks_file,
        }
    }
}

/// What the agent answered a client.
struct Answer {
    status: u16,
    body: String,
}

/// Asks for `APP` as uid 65534 with `token` (if any) as the bearer, from a
/// process moved into cgroup `cgroup` (if any) and then into a pid
/// namespace of its own.
fn ask(daemon: &Daemon, cgroup: Option<&Path>, token: Option<&str>) -> Answer {
    let script = r#"
        if [ -n "$CGROUP" ]; then echo $$ > "$CGROUP/cgroup.procs" || exit 99; fi
        set --
        if [ -n "$K8S_TOKEN" ]; then set -- -H "Authorization: Bearer $K8S_TOKEN"; fi
        exec unshare --pid --fork setpriv --reuid "$AS" --regid "$AS" --clear-groups \
            curl -sS --unix-socket "$SOCKET" "$@" -w '\n%{http_code}' "http://agent/v1/token?issuer=ttd&app=$APP"
    "#;
    let out = Command::new("sh")
        .args(["-c", script])
        .env("CGROUP", cgroup.map(Path::as_os_str).unwrap_or_default())
        .env("K8S_TOKEN", token.unwrap_or_default())
        .env("AS", NOBODY.to_string())
        .env("SOCKET", &daemon.socket)
        .env("APP", APP)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "no status: {text:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Answer {
        status,
        body: body.to_owned(),
    }
}

/// The audit line after the first `before`, once it is written.
fn line_after(token: &TestToken, before: usize) -> serde_json::Value {
    let mut lines = Vec::new();
    poll_until("the request's audit line", || {
        lines = audit_lines(token);
        lines.len() > before
    });
    lines.swap_remove(before)
}

/// [`ask`], and the request's audit line.
fn ask_audited(
    token: &TestToken,
    daemon: &Daemon,
    cgroup: Option<&Path>,
    sent: Option<&str>,
) -> (Answer, serde_json::Value) {
    let before = audit_lines(token).len();
    let answer = ask(daemon, cgroup, sent);
    (answer, line_after(token, before))
}

/// Asks as [`ask`] does, and asserts a 403 whose detail and audit line
/// name `reason`, and that nothing of the token sent shows in either.
fn assert_refused(
    token: &TestToken,
    daemon: &Daemon,
    cgroup: Option<&Path>,
    sent: &str,
    reason: &str,
) -> serde_json::Value {
    let (answer, line) = ask_audited(token, daemon, cgroup, Some(sent));
    assert_eq!(answer.status, 403, "{reason}: {}", answer.body);
    assert_eq!(line["outcome"], "refused", "{line}");
    let refusal = line["k8s_refusal"]
        .as_str()
        .unwrap_or(line["reason"].as_str().unwrap());
    assert_eq!(refusal, reason, "{line}\n{}", answer.body);
    assert!(answer.body.contains(reason), "{}", answer.body);
    // Every part long enough to be told from ordinary words.
    for part in sent.split('.').filter(|part| part.len() >= 16) {
        for text in [&answer.body, &line.to_string(), &log(token)] {
            assert!(!text.contains(part), "the token leaked: {text}");
        }
    }
    line
}

/// A token with `claims` and `header`, signed with HMAC-SHA256 keyed by `key`.
fn hs256(header: &serde_json::Value, claims: &serde_json::Value, key: &[u8]) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    let mut head: Header = serde_json::from_value(header.clone()).unwrap();
    head.alg = jsonwebtoken::Algorithm::HS256;
    jsonwebtoken::encode(&head, claims, &EncodingKey::from_secret(key)).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn the_right_pod_gets_its_apps_token_in_either_drivers_layout() {
    let Some(v2) = cgroup2_for("the_right_pod_gets_its_apps_token_in_either_drivers_layout") else {
        return;
    };
    let cluster = Cluster::new();
    let (token, daemon) = agent(&cluster.jwks_file, "");
    let mut cgroups = Cgroups::new(&v2);
    let layouts = [
        (Driver::Systemd, Some("burstable"), &cluster.rsa),
        (Driver::Systemd, None, &cluster.p256),
        (Driver::Cgroupfs, Some("besteffort"), &cluster.rsa),
        (Driver::Cgroupfs, None, &cluster.p256),
    ];
    for (driver, qos, key) in layouts {
        let pod = Pod::new("apps", "my-app");
        let container = cgroups.container(&pod, driver, qos);
        let sent = key.sign(&pod.claims());
        let (answer, line) = ask_audited(&token, &daemon, Some(&container), Some(&sent));
        assert_eq!(answer.status, 200, "{driver:?} {qos:?}: {}", answer.body);
        assert_eq!(line["outcome"], "issued", "{line}");
        assert_eq!(line["k8s_namespace"], "apps");
        assert_eq!(line["k8s_service_account"], "my-app");
        assert_eq!(line["k8s_pod"], pod.name.as_str());
        assert_eq!(line["k8s_pod_uid"], pod.uid.as_str());
        assert_eq!(line["uid"], NOBODY);
        // Judged by its pid on the host, not the 1 of its own pid namespace.
        assert!(line["pid"].as_i64().unwrap() > 1, "{line}");
        // Without its token, the same process gets nothing.
        let bare = ask(&daemon, Some(&container), None);
        assert_eq!(bare.status, 403, "{}", bare.body);
    }
}

#[test]
fn tokens_that_do_not_verify_are_refused_with_their_reason() {
    let Some(v2) = cgroup2_for("tokens_that_do_not_verify_are_refused_with_their_reason") else {
        return;
    };
    let cluster = Cluster::new();
    let (token, daemon) = agent(&cluster.jwks_file, "");
    let mut cgroups = Cgroups::new(&v2);
    let pod = Pod::new("apps", "my-app");
    let container = cgroups.container(&pod, Driver::Systemd, Some("besteffort"));
    let good = pod.claims();
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        claims
    };
    let now = unix_now();
    let stranger = IssuerKey::p256(cluster.dir.path(), "stranger");
    let header = json!({"alg": "RS256", "kid": cluster.rsa.kid, "typ": "JWT"});
    let signed = cluster.rsa.sign(&good);
    let mut parts: Vec<&str> = signed.split('.').collect();
    let tampered_payload = b64(serde_json::to_string(&with(&|c| {
        c["kubernetes.io"]["serviceaccount"]["name"] = json!("admin")
    }))
    .unwrap()
    .as_bytes());
    parts[1] = &tampered_payload;
    let tampered = parts.join(".");
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", signed.split('.').nth(1).unwrap());
    let jwks_bytes = std::fs::read(&cluster.jwks_file).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong audience",
            cluster.rsa.sign(&with(&|c| c["aud"] = json!(["vault"]))),
            "audience",
        ),
        (
            "expired",
            cluster.p256.sign(&with(&|c| c["exp"] = json!(now - 120))),
            "expired",
        ),
        (
            "not yet valid",
            cluster.rsa.sign(&with(&|c| {
                c["nbf"] = json!(now + 600);
                c["exp"] = json!(now + 1200);
            })),
            "not-yet-valid",
        ),
        ("unknown kid", stranger.sign(&good), "unknown-kid"),
        ("alg none", unsigned, "algorithm"),
        (
            "HMAC keyed with the JWKS",
            hs256(&header, &good, &jwks_bytes),
            "algorithm",
        ),
        ("tampered payload", tampered, "signature"),
        (
            "another issuer",
            cluster
                .rsa
                .sign(&with(&|c| c["iss"] = json!("https://evil"))),
            "issuer",
        ),
        (
            "sub disagreeing with kubernetes.io",
            cluster.p256.sign(&with(&|c| {
                c["sub"] = json!("system:serviceaccount:kube-system:admin")
            })),
            "claims",
        ),
        ("not a JWS", "abc.def".into(), "malformed"),
    ];
    for (case, sent, reason) in &cases {
        let line = assert_refused(&token, &daemon, Some(&container), sent, reason);
        assert_eq!(line["reason"], "kubernetes-token-refused", "{case}: {line}");
    }
    // Another namespace's token verifies, and its pod has no grant.
    let elsewhere = Pod {
        namespace: "other".into(),
        ..pod.clone()
    };
    let sent = cluster.rsa.sign(&elsewhere.claims());
    let line = assert_refused(&token, &daemon, Some(&container), &sent, "not-granted");
    assert_eq!(line["k8s_namespace"], "other");
    // And the right token still works from there.
    let answer = ask(&daemon, Some(&container), Some(&cluster.rsa.sign(&good)));
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn a_token_works_only_from_its_own_pod() {
    let Some(v2) = cgroup2_for("a_token_works_only_from_its_own_pod") else {
        return;
    };
    let cluster = Cluster::new();
    let (token, daemon) = agent(&cluster.jwks_file, "");
    let mut cgroups = Cgroups::new(&v2);
    let mine = Pod::new("apps", "my-app");
    let other = Pod::new("apps", "my-app");
    cgroups.container(&mine, Driver::Cgroupfs, Some("burstable"));
    let elsewhere = cgroups.container(&other, Driver::Systemd, Some("burstable"));
    let sent = cluster.rsa.sign(&mine.claims());
    // Replayed from another pod of the same service account.
    assert_refused(&token, &daemon, Some(&elsewhere), &sent, "other-pod");
    // From no pod at all: the caller's pod cannot be checked.
    assert_refused(&token, &daemon, None, &sent, "no-pod");
    let answer = ask(&daemon, None, Some(&sent));
    assert!(
        answer.body.contains("bind_to_pod = false"),
        "{}",
        answer.body
    );
    // From a cgroup path that names two pods: neither.
    let nested = cgroups.make(&format!(
        "kubepods/besteffort/pod{}/pod{}",
        mine.uid, other.uid
    ));
    assert_refused(&token, &daemon, Some(&nested), &sent, "several-pods");
    // A pod named inside someone's delegated subtree is no pod.
    let delegated = cgroups.make(&format!(
        "att-runtime-{}/kubepods/pod{}/c",
        std::process::id(),
        mine.uid
    ));
    assert_refused(&token, &daemon, Some(&delegated), &sent, "no-pod");
}

#[test]
fn without_binding_to_the_pod_the_token_alone_is_enough() {
    let cluster = Cluster::new();
    let (token, daemon) = agent(&cluster.jwks_file, "bind_to_pod = false");
    let pod = Pod::new("apps", "my-app");
    let sent = cluster.p256.sign(&pod.claims());
    let (answer, line) = ask_audited(&token, &daemon, None, Some(&sent));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(line["k8s_pod_uid"], pod.uid.as_str());
    // The token is still verified.
    let expired = {
        let mut claims = pod.claims();
        claims["exp"] = json!(unix_now() - 3600);
        cluster.rsa.sign(&claims)
    };
    assert_refused(&token, &daemon, None, &expired, "expired");
}

/// Polls until `sent` from `pod` gets `status`.
fn until_status(daemon: &Daemon, sent: &str, status: u16, what: &str) {
    poll_until(what, || ask(daemon, None, Some(sent)).status == status);
}

#[test]
fn a_jwks_swapped_like_a_configmap_is_read_again_and_a_bad_one_is_not() {
    let cluster = Cluster::new();
    // A ConfigMap volume: jwks.json -> ..data/jwks.json, ..data -> ..<version>.
    let volume = cluster.dir.path().join("volume");
    let version = |name: &str, text: &str| {
        let dir = volume.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jwks.json"), text).unwrap();
        let link = volume.join("..data_tmp");
        std::os::unix::fs::symlink(name, &link).unwrap();
        std::fs::rename(&link, volume.join("..data")).unwrap();
    };
    version("..v1", &jwks(&[&cluster.rsa]));
    std::os::unix::fs::symlink("..data/jwks.json", volume.join("jwks.json")).unwrap();
    let (token, daemon) = agent(&volume.join("jwks.json"), "bind_to_pod = false");
    let pod = Pod::new("apps", "my-app");
    let old = cluster.rsa.sign(&pod.claims());
    let new = cluster.p256.sign(&pod.claims());
    assert_eq!(ask(&daemon, None, Some(&old)).status, 200);
    assert_refused(&token, &daemon, None, &new, "unknown-kid");

    version("..v2", &jwks(&[&cluster.p256]));
    until_status(
        &daemon,
        &old,
        403,
        "the old key's token refused after the swap",
    );
    let (answer, line) = ask_audited(&token, &daemon, None, Some(&new));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(line["outcome"], "issued");

    // A broken version keeps the keys read before, and says so.
    version("..v3", "{\"keys\": [");
    assert_eq!(ask(&daemon, None, Some(&new)).status, 200);
    poll_until("the JWKS error in the log", || {
        log(&token).contains("`kubernetes.jwks_file`")
    });
}

#[test]
fn sighup_reads_the_jwks_again_and_a_new_jwks_file() {
    let cluster = Cluster::new();
    let (token, mut daemon) = agent(&cluster.jwks_file, "bind_to_pod = false");
    let pod = Pod::new("apps", "my-app");
    let old = cluster.rsa.sign(&pod.claims());
    let fresh = IssuerKey::rsa(cluster.dir.path(), "fresh");
    let new = fresh.sign(&pod.claims());
    assert_eq!(ask(&daemon, None, Some(&old)).status, 200);

    // The operator points `jwks_file` at the rotated keys and reloads.
    let rotated = cluster.dir.path().join("rotated.json");
    std::fs::write(&rotated, jwks(&[&fresh])).unwrap();
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let from = format!("jwks_file = {:?}", cluster.jwks_file.display().to_string());
    let to = format!("jwks_file = {:?}", rotated.display().to_string());
    assert!(config.contains(&from), "{config}");
    std::fs::write(token.config_path(), config.replace(&from, &to)).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    assert_refused(&token, &daemon, None, &old, "unknown-kid");
    assert_eq!(ask(&daemon, None, Some(&new)).status, 200);

    // A reload whose new JWKS file cannot be read is refused whole.
    std::fs::write(
        token.config_path(),
        std::fs::read_to_string(token.config_path())
            .unwrap()
            .replace(&to, "jwks_file = \"/nonexistent/jwks.json\""),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    assert_eq!(ask(&daemon, None, Some(&new)).status, 200);
    assert!(
        log(&token).contains("/nonexistent/jwks.json"),
        "{}",
        log(&token)
    );
}

/// The DaemonSet without `hostPID`: the agent in a pid namespace of its
/// own sees pid 0 for every caller, so it cannot read the caller's pod; by
/// default it refuses the token, and the answer and the log say why.
#[test]
fn an_agent_without_host_pids_refuses_a_pods_token_and_says_why() {
    let Some(v2) = cgroup2_for("an_agent_without_host_pids_refuses_a_pods_token_and_says_why")
    else {
        return;
    };
    let cluster = Cluster::new();
    let config = format!(
        "[kubernetes]\njwks_file = {:?}\nissuer = {ISSUER:?}\n\n[[grant]]\nk8s_namespace = \"apps\"\nk8s_service_account = \"my-app\"\nissuer = \"ttd\"\napps = [{APP:?}]\n",
        cluster.jwks_file.display().to_string()
    );
    let token = ttd_token("p256", &config);
    open_socket_to_others(&token);
    let daemon = Daemon::spawn(&token, |command| {
        let mut unshare = Command::new("unshare");
        unshare.args(["--pid", "--fork", "--kill-child"]);
        integration_tests::process::run_by(unshare, &command)
    })
    .ready(&token);
    let mut cgroups = Cgroups::new(&v2);
    let pod = Pod::new("apps", "my-app");
    let own = cgroups.container(&pod, Driver::Systemd, Some("burstable"));
    let sent = cluster.p256.sign(&pod.claims());
    assert_refused(&token, &daemon, Some(&own), &sent, "no-pod");
    let answer = ask(&daemon, Some(&own), Some(&sent));
    assert!(answer.body.contains("hostPID: true"), "{}", answer.body);
    assert!(
        answer.body.contains("bind_to_pod = false"),
        "{}",
        answer.body
    );
    poll_until("the log's word on host pids", || {
        log(&token).contains("the agent sees no host pids")
    });
}
