//! Revoking a grant never waits for keys: a reload whose issuers cannot all
//! be brought into service (here `skd`'s key was deleted from the token)
//! still puts its grants in force, and says plainly that the rest was not.
//! Nor does a reload wait for a pause in the load.

use std::process::{Command, Stdio};
use std::time::Instant;

use integration_tests::daemon::{
    add_server_settings, body_of, client_as, log, open_directory_to_others, serve_config,
    settled_text, status_of, Daemon,
};
use integration_tests::users::NOBODY;
use integration_tests::{agent_binary, OutputExt, TestToken};

fn config(token: &TestToken, issuers: &[&str], grant_nobody: bool) -> String {
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    let mut extra = String::new();
    for issuer in issuers {
        extra.push_str(&format!(
            "[[issuer]]\nname = \"{issuer}\"\n\n[[grant]]\nuid = {me}\nissuer = \"{issuer}\"\napps = [\"*\"]\n\n"
        ));
    }
    if grant_nobody {
        extra.push_str(&format!(
            "[[grant]]\nuid = {NOBODY}\nissuer = \"ttd\"\napps = [\"*\"]\n"
        ));
    }
    serve_config(token, &extra)
}

/// Writes `config` with the socket given to group nogroup.
fn write(token: &TestToken, config: &str) {
    token.write_config(config);
    add_server_settings(token, "socket_group = \"nogroup\"");
}

/// Writes `config`, sends SIGHUP and waits until the agent is ready again.
fn reload(daemon: &mut Daemon, token: &TestToken, config: &str) {
    write(token, config);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(token, "RELOADING=1");
    daemon.wait_for(token, "READY=1");
}

fn nobody_asks(daemon: &Daemon) -> std::process::Output {
    client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    )
}

#[test]
fn a_revoked_grant_is_refused_though_another_issuers_key_is_gone() {
    let token = TestToken::new();
    token.generate("ttd", Some("p256")).success();
    token.generate("skd", Some("p256")).success();
    write(&token, &config(&token, &["ttd", "skd"], true));
    open_directory_to_others(&token);
    let mut daemon = Daemon::start(&token);
    nobody_asks(&daemon).success();

    // skd's key goes; the new config also takes uid 65534's grant away.
    let keys = token.keys_json();
    let skd = keys
        .iter()
        .find(|k| k["issuer"] == "skd")
        .expect("skd's key");
    let kid = skd["kid"].as_str().unwrap();
    token
        .agent(&["keys", "delete", "--kid", kid, "--yes"])
        .success();
    reload(&mut daemon, &token, &config(&token, &["ttd", "skd"], false));

    let refused = nobody_asks(&daemon);
    assert_eq!(refused.code(), 3, "not granted any more\n{}", log(&token));
    assert!(refused.stdout.is_empty());
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("the keys in force keep serving");
    let ready = daemon.get("/readyz", &[]);
    assert_eq!(status_of(&ready), 503, "{ready}");
    assert!(
        body_of(&ready).contains("reload") && body_of(&ready).contains("skd"),
        "{ready}"
    );
    assert_eq!(daemon.metric("access_token_agent_reload_incomplete"), 1.0);
    assert!(
        log(&token).contains("reload partly applied"),
        "{}",
        log(&token)
    );

    // A config the keys can serve is applied whole, and says so.
    reload(&mut daemon, &token, &config(&token, &["ttd"], false));
    assert_eq!(status_of(&daemon.get("/readyz", &[])), 200);
    assert_eq!(daemon.metric("access_token_agent_reload_incomplete"), 0.0);
    assert_eq!(nobody_asks(&daemon).code(), 3);
}

#[test]
fn a_revoked_grant_is_refused_though_the_socket_setting_changed_too() {
    let token = TestToken::new();
    token.generate("ttd", Some("p256")).success();
    write(&token, &config(&token, &["ttd"], true));
    open_directory_to_others(&token);
    let mut daemon = Daemon::start(&token);
    nobody_asks(&daemon).success();

    // Only a restart applies [server]; the grants go at once all the same.
    let changed = config(&token, &["ttd"], false).replacen(
        "[server]\n",
        "[server]\nmax_connections = 100\n",
        1,
    );
    reload(&mut daemon, &token, &changed);
    assert_eq!(nobody_asks(&daemon).code(), 3, "{}", log(&token));
    let ready = daemon.get("/readyz", &[]);
    assert_eq!(status_of(&ready), 503, "{ready}");
    assert!(body_of(&ready).contains("`[server]`"), "{ready}");
}

/// A SIGHUP under steady load: reopening the audit file and reloading
/// must not wait for a moment without audit lines queued, which steady
/// load may never give. A client process takes cached tokens over 64
/// connections as fast as it can; the reload must complete (READY=1)
/// while that load still runs, and every token issued has its line in the
/// rotated file or the new one, once.
#[test]
fn a_reload_under_steady_load_completes_while_the_load_runs() {
    let token = integration_tests::daemon::ttd_token("p256", "");
    let mut daemon = Daemon::start(&token);
    let (path, rotated) = (
        token.path().join("audit.jsonl"),
        token.path().join("audit.jsonl.1"),
    );
    // Far more requests than it gets to send: it is killed after the reload.
    let mut load = Command::new(agent_binary().with_file_name("request-loop"))
        .arg(&daemon.socket)
        .args(["64", "100000000", "/v1/token?issuer=ttd&app=a"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start request-loop");
    while daemon.metric("access_token_agent_tokens_issued_total") < 2000.0 {
        assert!(load.try_wait().unwrap().is_none(), "the load ended early");
    }
    std::fs::rename(&path, &rotated).unwrap();
    let started = Instant::now();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    let took = started.elapsed();
    let still_running = load.try_wait().unwrap().is_none();
    load.kill().unwrap();
    load.wait().unwrap();
    eprintln!("reload under load took {took:?}");
    assert!(
        still_running,
        "the reload completed only once the load ended"
    );

    let issued = |path: &std::path::Path| {
        settled_text(path)
            .lines()
            .filter(|line| line.contains("\"outcome\":\"issued\""))
            .count()
    };
    let (old, new) = (issued(&rotated), issued(&path));
    assert!(old > 0 && new > 0, "old {old}, new {new}");
    let total = daemon.metric("access_token_agent_tokens_issued_total");
    assert_eq!((old + new) as f64, total, "old {old}, new {new}");
}
