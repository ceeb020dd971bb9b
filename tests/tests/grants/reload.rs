//! Revoking a grant never waits for keys: a reload whose issuers cannot all
//! be brought into service (here `skd`'s key was deleted from the token)
//! still puts its grants in force, and says plainly that the rest was not.

use integration_tests::daemon::{
    add_server_settings, body_of, client_as, log, open_directory_to_others, serve_config,
    status_of, Daemon,
};
use integration_tests::users::NOBODY;
use integration_tests::{OutputExt, TestToken};

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
