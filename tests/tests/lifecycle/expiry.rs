//! A certificate that expires while the agent runs: Altinn Platform refuses
//! tokens whose certificate is outside its validity, so the agent stops
//! signing for that issuer, says so on /readyz and in its 503s, and serves
//! again once a valid key is there.
//!
//! The certificates live for seconds; `openssl ca` is the openssl command
//! that takes a validity to the second (`req -x509 -days` counts days).

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::daemon::{body_of, log, serve_config, status_of, Daemon};
use integration_tests::unix_now;
use integration_tests::{
    openssl, pkcs12, utc_time, write_ca_files, OutputExt, Pkcs12Kind, TestToken,
};

/// How long the short-lived certificates are valid after the agent starts
/// with them: room for a slow machine to import, start and serve once.
const LIFETIME: i64 = 15;
/// How long after expiry the agent may take to notice: the second after
/// `notAfter`, then at most one probe interval (2 s), with slack for load.
const NOTICE: Duration = Duration::from_secs(8);
/// How long a newly enrolled key or a reload may take to serve.
const RECOVERY: Duration = Duration::from_secs(15);

/// Imports, for issuer `ttd`, an RSA key whose self-signed certificate is
/// valid from a minute ago until `not_after` (Unix seconds); returns its kid.
fn import_short_lived(token: &TestToken, not_after: i64) -> String {
    let dir = token.path();
    write_ca_files(dir);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "short.key",
            "-subj",
            "/CN=ttd",
            "-out",
            "short.csr",
        ],
    );
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-selfsign",
            "-notext",
            "-config",
            "ca.cnf",
            "-keyfile",
            "short.key",
            "-in",
            "short.csr",
            "-out",
            "short.pem",
            "-startdate",
            &utc_time(unix_now() - 60),
            "-enddate",
            &utc_time(not_after),
        ],
    );
    let pfx = pkcs12(
        dir,
        "short",
        &dir.join("short.key"),
        &dir.join("short.pem"),
        "",
        Pkcs12Kind::Modern,
    );
    let kid = token
        .agent(&["keys", "import", "--issuer", "ttd", "--pfx", path(&pfx)])
        .success()
        .stdout_text();
    kid.trim().to_owned()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A serve config for issuer `ttd` (with `issuer_extra` in its table, e.g. a
/// pinned kid) that grants this process's uid every app.
fn write_serve_config(token: &TestToken, issuer_extra: &str) {
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    token.write_config(&serve_config(
        token,
        &format!(
            "[[issuer]]\nname = \"ttd\"\n{issuer_extra}\n[[grant]]\nuid = {me}\nissuer = \"ttd\"\napps = [\"*\"]\n"
        ),
    ));
}

/// `GET /v1/token` for `app`: the status and the body.
fn request(daemon: &Daemon, app: &str) -> (u16, String) {
    let answer = daemon.get(&format!("/v1/token?issuer=ttd&app={app}"), &[]);
    (status_of(&answer), body_of(&answer).to_owned())
}

/// The kid of a 200 answer's token.
fn kid_of(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON token answer");
    json["kid"].as_str().expect("a kid").to_owned()
}

/// Polls /readyz until its status is `status`; returns its body.
fn wait_for_readyz(token: &TestToken, daemon: &Daemon, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let answer = daemon.get("/readyz", &[]);
        if status_of(&answer) == status {
            return body_of(&answer).to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer {status} within {within:?}: {answer}\n{}",
            log(token)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Serves until the short-lived certificate expires; then /readyz and a
/// token request (also for a cached app) say why, naming the issuer.
fn serve_until_expiry(token: &TestToken, daemon: &Daemon, kid: &str, not_after: i64) -> String {
    let (status, body) = request(daemon, "cached");
    assert_eq!(status, 200, "{body}\n{}", log(token));
    assert_eq!(kid_of(&body), kid);
    assert_eq!(status_of(&daemon.get("/readyz", &[])), 200);
    assert!(
        unix_now() <= not_after,
        "the certificate expired before the agent served with it; raise LIFETIME"
    );

    while unix_now() <= not_after {
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready = wait_for_readyz(token, daemon, 503, NOTICE);
    assert!(ready.contains("issuer \\\"ttd\\\""), "{ready}");
    assert!(ready.contains(kid), "names the expired key: {ready}");
    assert!(ready.contains("expired at"), "{ready}");
    assert!(ready.contains("enrol a new key"), "{ready}");
    let (status, refused) = request(daemon, "cached");
    assert_eq!(
        status, 503,
        "the cached token of the expired key is not served: {refused}"
    );
    assert!(refused.contains("enrol a new key"), "{refused}");
    ready
}

#[test]
fn an_expired_certificate_stops_signing_until_a_new_key_is_enrolled() {
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let not_after = unix_now() + LIFETIME;
    let short = import_short_lived(&token, not_after);
    write_serve_config(&token, "");
    let daemon = Daemon::start(&token);

    serve_until_expiry(&token, &daemon, &short, not_after);

    // No reload: the agent looks for a key at every probe while it has none.
    let new = token.generate("ttd", None).success().stdout_text();
    wait_for_readyz(&token, &daemon, 200, RECOVERY);
    let (status, body) = request(&daemon, "cached");
    assert_eq!(status, 200, "{body}");
    assert_eq!(kid_of(&body), new.trim());
}

#[test]
fn a_pinned_key_whose_certificate_expired_stops_signing_until_a_reload_pins_a_valid_one() {
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let valid = token
        .generate("ttd", None)
        .success()
        .stdout_text()
        .trim()
        .to_owned();
    let not_after = unix_now() + LIFETIME;
    let short = import_short_lived(&token, not_after);
    write_serve_config(&token, &format!("kid = \"{short}\"\n"));
    let mut daemon = Daemon::start(&token);

    // Another key of the issuer is valid, but the pin says which one signs.
    let ready = serve_until_expiry(&token, &daemon, &short, not_after);
    assert!(ready.contains("pinned kid"), "{ready}");
    assert!(ready.contains("reload"), "{ready}");

    write_serve_config(&token, &format!("kid = \"{valid}\"\n"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    wait_for_readyz(&token, &daemon, 200, RECOVERY);
    let (status, body) = request(&daemon, "cached");
    assert_eq!(status, 200, "{body}");
    assert_eq!(kid_of(&body), valid);
}
