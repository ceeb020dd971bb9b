//! Signals and sockets as systemd uses them: SIGHUP reloads and reopens
//! the audit file, SIGTERM finishes the request in flight, and socket
//! activation serves on the inherited listener.

use std::time::Duration;

use integration_tests::daemon::{
    client_as, log, open_socket_to_others, pass_listener, settled_text, status_of, ttd_token,
    Daemon,
};
use integration_tests::http::unread_by_peer;
use integration_tests::users::NOBODY;
use integration_tests::{on_every_store, poll_until, wait_count, OutputExt};

on_every_store! {
    fn sighup_adds_grants_and_activates_a_new_key() {
        let token = ttd_token("rsa2048", "");
        open_socket_to_others(&token);
        let config = std::fs::read_to_string(token.config_path()).unwrap();
        let mut daemon = Daemon::start(&token);
        let old_kid = daemon.client().token(Some("ttd"), Some("a")).unwrap().kid;
        let refused = client_as(
            NOBODY,
            NOBODY,
            &daemon.socket,
            &["token", "--issuer", "ttd", "--app", "a"],
        );
        assert_eq!(refused.code(), 3);

        // A newer key for ttd and a grant for nobody. The new certificate's
        // not-before must be a later second than the old one's for the key
        // to count as newer: a second passes on purpose.
        std::thread::sleep(Duration::from_millis(1100));
        token.generate("ttd", None).success();
        let grant = "\n[[grant]]\nuid = 65534\nissuer = \"ttd\"\napps = [\"*\"]\n";
        std::fs::write(token.config_path(), format!("{config}{grant}")).unwrap();
        let kept_open = daemon.client();
        kept_open.token(Some("ttd"), Some("warm")).unwrap();
        daemon.signal(libc::SIGHUP);
        daemon.wait_for(&token, "RELOADING=1");
        daemon.wait_for(&token, "READY=1");

        let served = client_as(
            NOBODY,
            NOBODY,
            &daemon.socket,
            &["token", "--issuer", "ttd", "--app", "a"],
        );
        served.success();
        let new = kept_open
            .token(Some("ttd"), Some("b"))
            .expect("the kept-open client still works");
        assert_ne!(new.kid, old_kid, "the newly enrolled key is active");

        // A broken config on reload is refused; the old one keeps serving.
        std::fs::write(token.config_path(), "[hsm\nbroken").unwrap();
        daemon.signal(libc::SIGHUP);
        daemon.wait_for(&token, "RELOADING=1");
        daemon.wait_for(&token, "READY=1");
        assert!(
            daemon.process.try_wait().unwrap().is_none(),
            "still running:\n{}",
            log(&token)
        );
        let still = daemon
            .client()
            .token(Some("ttd"), Some("c"))
            .expect("old config serves");
        assert_eq!(still.kid, new.kid);
        assert!(log(&token).contains("config"), "the refusal is logged");
    }
}

#[test]
fn sighup_reopens_the_audit_file_after_rotation() {
    let token = ttd_token("rsa2048", "");
    let mut daemon = Daemon::start(&token);
    let client = daemon.client();
    client.token(Some("ttd"), Some("before")).unwrap();
    // What logrotate does: move the file away, then SIGHUP.
    let path = token.path().join("audit.jsonl");
    let rotated = token.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    client.token(Some("ttd"), Some("after")).unwrap();

    let apps_in = |file: &std::path::Path| -> Vec<String> {
        assert!(file.exists(), "{}\n{}", file.display(), log(&token));
        settled_text(file)
            .lines()
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).unwrap();
                json["app"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(apps_in(&rotated), ["before"]);
    assert_eq!(apps_in(&path), ["after"]);
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_removes_the_socket() {
    use std::io::{Read, Write};
    let token = ttd_token("rsa2048", "");
    let mut daemon = Daemon::start(&token);
    let mut stream = daemon.connect_accepted();
    stream
        .write_all(b"GET /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\n")
        .unwrap();
    poll_until("the agent to read the request's start", || {
        unread_by_peer(&stream) == 0
    });
    daemon.signal(libc::SIGTERM);
    daemon.wait_for(&token, "STOPPING=1");
    stream.write_all(b"Connection: close\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert_eq!(status_of(&answer), 200, "{answer}\n{}", log(&token));

    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", log(&token));
    assert!(!daemon.socket.exists(), "the socket it bound is removed");
}

#[test]
fn socket_activation_serves_on_the_inherited_listener() {
    let token = ttd_token("rsa2048", "");
    let socket = token.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let daemon = Daemon::spawn(&token, |command| pass_listener(command, &listener));
    let mut daemon = daemon.ready(&token);
    assert!(
        !token.path().join("agent.sock").exists(),
        "it did not bind its own socket"
    );
    daemon.socket = socket.clone();
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("served on the inherited socket");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(socket.exists(), "a socket systemd owns is left in place");
}

/// Audit lines are written in batches, a moment after the answers they
/// record: a clean stop in the middle of a stream of answers still leaves
/// a line for every token handed out.
#[test]
fn sigterm_under_load_leaves_an_audit_line_for_every_token_handed_out() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const CLIENTS: usize = 4;
    let token = ttd_token("rsa2048", "");
    let mut daemon = Daemon::start(&token);
    let answered = AtomicUsize::new(0);
    let clients: Vec<_> = (0..CLIENTS).map(|_| daemon.client()).collect();
    std::thread::scope(|scope| {
        for client in clients {
            let answered = &answered;
            // Until the agent has stopped and the request fails.
            scope.spawn(move || {
                while client.token(Some("ttd"), Some("a")).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        wait_count(&answered, 500, "tokens before SIGTERM");
        daemon.signal(libc::SIGTERM);
    });
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", log(&token));
    let answered = answered.into_inner();
    // Read as the agent left it: it has exited.
    let text = std::fs::read_to_string(token.path().join("audit.jsonl")).unwrap();
    let issued = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["outcome"] == "issued")
        .count();
    // A token may have been sent to a client that left before reading it.
    assert!(
        (answered..=answered + CLIENTS).contains(&issued),
        "{answered} tokens answered, {issued} issued lines"
    );
}
