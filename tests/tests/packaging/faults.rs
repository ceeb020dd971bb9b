//! Faults around a running agent: killed with SIGKILL under load and
//! restarted on the listening socket systemd holds, a wrong PIN, and a PIN
//! file others may read. The HSM going away is the `hsm_faults` target's.

use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use access_token_client::{blocking, Client, Retry};
use integration_tests::daemon::{
    client_binary, exported_cert, log_tail, pass_listener, ttd_token, Daemon,
};
use integration_tests::{verify_all, wait_count, OutputExt, TestToken, MODULE, PIN};

/// OpenSC's PKCS#11 spy: passes every call to the module named in
/// `PKCS11SPY` and logs it, so a test can count the agent's C_Login calls.
const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";

/// Starts an agent on the listening socket the test holds, as systemd's
/// socket unit would pass it.
fn start_on(token: &TestToken, listener: &UnixListener) -> Daemon {
    Daemon::spawn(token, |command| pass_listener(command, listener)).ready(token)
}

#[test]
fn sigkill_under_load_and_a_restart_on_the_held_socket_lose_no_request() {
    const THREADS: usize = 6;
    const REQUESTS: usize = 300;
    const KILLS: usize = 3;
    const COMMANDS: usize = 20;
    let token = ttd_token("rsa2048", "[token]\ncache = false\n");
    let socket = token.path().join("activated.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut agent = start_on(&token, &listener);
    let pem = String::from_utf8(exported_cert(&token, "pem")).unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (done, tokens, failures) = (done.clone(), tokens.clone(), failures.clone());
            let socket = socket.clone();
            std::thread::spawn(move || {
                for i in 0..REQUESTS {
                    // The library's own retry policy, as applications use it,
                    // on a new connection each time: a request cut off on a
                    // reused connection is re-sent even without retries.
                    let client = blocking::Client::new(&socket).unwrap();
                    match client.token(Some("ttd"), Some(&format!("app{t}-{}", i % 3))) {
                        Ok(issued) => tokens.lock().unwrap().push(issued.token),
                        Err(e) => failures.lock().unwrap().push(format!("request {i}: {e}")),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // For comparison, clients without retries: what the restarts cost them.
    let stopped = Arc::new(AtomicBool::new(false));
    let unretried = Arc::new(AtomicUsize::new(0));
    let controls: Vec<_> = (0..2)
        .map(|_| {
            let (socket, stopped, unretried) = (socket.clone(), stopped.clone(), unretried.clone());
            std::thread::spawn(move || {
                let no_retry = Retry {
                    attempts: 1,
                    ..Retry::default()
                };
                while !stopped.load(Ordering::Relaxed) {
                    let client = Client::new(&socket).with_retry(no_retry);
                    let client = blocking::Client::wrap(client).unwrap();
                    if client.token(Some("ttd"), Some("control")).is_err() {
                        unretried.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // The `access-token` command, run again and again through the restarts.
    let command_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    clients.push({
        let (socket, failures) = (socket.clone(), command_failures.clone());
        std::thread::spawn(move || {
            for _ in 0..COMMANDS {
                let out = std::process::Command::new(client_binary())
                    .arg("--socket")
                    .arg(&socket)
                    .args(["token", "--issuer", "ttd", "--app", "cmd"])
                    .output()
                    .unwrap();
                if !out.status.success() {
                    failures.lock().unwrap().push(out.stderr_text());
                }
                // Spread the commands over the kills and restarts.
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    });

    let mut restarts = Vec::new();
    for kill in 1..=KILLS {
        wait_count(
            &done,
            kill * THREADS * REQUESTS / (KILLS + 1),
            "requests between kills",
        );
        let old = agent.pid();
        agent.process.kill().unwrap();
        agent.process.wait().unwrap();
        let killed = Instant::now();
        // systemd's default RestartSec=100ms; meanwhile clients queue on the socket.
        std::thread::sleep(Duration::from_millis(100));
        agent = start_on(&token, &listener);
        restarts.push(killed.elapsed());
        assert_ne!(agent.pid(), old);
    }
    for client in clients {
        client.join().unwrap();
    }
    stopped.store(true, Ordering::Relaxed);
    for control in controls {
        control.join().unwrap();
    }

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} lost requests, e.g. {:?}\n{}",
        failures.len(),
        failures.first(),
        log_tail(&token)
    );
    let unretried = unretried.load(Ordering::Relaxed);
    assert!(
        unretried > 0,
        "no kill cut a request off; the test shows nothing"
    );
    let command_failures = command_failures.lock().unwrap();
    assert!(command_failures.is_empty(), "{command_failures:?}");
    let tokens = tokens.lock().unwrap();
    assert_eq!(tokens.len(), THREADS * REQUESTS);
    let distinct = verify_all(&tokens, pem.as_bytes(), "ttd");
    eprintln!(
        "{} requests and {COMMANDS} commands across {KILLS} SIGKILLs, none lost; {distinct} distinct tokens verified; restart to READY took {:?}; clients without retries failed {unretried} times",
        tokens.len(),
        restarts
    );
}

/// `[hsm]` pointing at the spy, which logs every call to `spy_log`.
fn through_the_spy(token: &TestToken) {
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let config = config.replacen(
        &format!("module = {MODULE:?}"),
        &format!("module = {SPY:?}"),
        1,
    );
    std::fs::write(token.config_path(), config).unwrap();
}

/// Runs `serve` through the spy until it exits (sent SIGTERM once ready
/// if `stop_when_ready`); returns its exit code and how many times it
/// called C_Login.
fn serve_through_spy(token: &TestToken, stop_when_ready: bool) -> (Option<i32>, usize) {
    let spy_log = token.path().join("spy.log");
    let _ = std::fs::remove_file(&spy_log);
    let mut daemon = Daemon::spawn(token, |mut command| {
        command
            .env("PKCS11SPY", MODULE)
            .env("PKCS11SPY_OUTPUT", &spy_log);
        command
    });
    if stop_when_ready {
        daemon = daemon.ready(token);
        daemon.signal(libc::SIGTERM);
    }
    let code = daemon.wait_exit().code();
    let calls = std::fs::read_to_string(&spy_log).unwrap_or_default();
    let logins = calls
        .lines()
        .filter(|line| line.ends_with(": C_Login"))
        .count();
    (code, logins)
}

fn token_flags(token: &TestToken) -> String {
    let info = token
        .pkcs11_tool(&["--list-token-slots"])
        .success()
        .stdout_text();
    info.lines()
        .find(|line| line.contains("token flags"))
        .unwrap_or_else(|| panic!("no token flags in {info}"))
        .to_owned()
}

#[test]
fn a_wrong_pin_exits_77_after_exactly_one_login() {
    let token = ttd_token("p256", "");
    through_the_spy(&token);
    // The spy sees the right PIN's login, so counting works.
    assert_eq!(serve_through_spy(&token, true), (Some(0), 1));
    assert!(
        !token_flags(&token).contains("user PIN count low"),
        "{}",
        token_flags(&token)
    );

    std::fs::write(token.pin_file(), "0000\n").unwrap();
    let (code, logins) = serve_through_spy(&token, false);
    assert_eq!(code, Some(77), "{}", log_tail(&token));
    assert_eq!(logins, 1, "one attempt only");
    let flags = token_flags(&token);
    assert!(
        flags.contains("user PIN count low"),
        "the attempt reached the token: {flags}"
    );
    let log = log_tail(&token);
    assert!(log.contains("CKR_PIN_INCORRECT"), "{log}");
    assert!(!token.path().join("agent.sock").exists(), "nothing listens");

    // One failed attempt did not lock the token: the right PIN serves again.
    std::fs::write(token.pin_file(), format!("{PIN}\n")).unwrap();
    assert_eq!(serve_through_spy(&token, true), (Some(0), 1));
}

#[test]
fn a_pin_file_others_or_the_group_may_read_is_refused_before_any_login() {
    use std::os::unix::fs::PermissionsExt;
    let token = ttd_token("p256", "");
    through_the_spy(&token);
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(token.pin_file(), std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, logins) = serve_through_spy(&token, false);
        assert_eq!(code, Some(78), "mode {mode:o}: {}", log_tail(&token));
        assert_eq!(logins, 0, "mode {mode:o}: the PIN was used");
        let log = log_tail(&token);
        assert!(log.contains(&format!("{mode:04o}")), "{log}");
        assert!(log.contains("chmod 600"), "{log}");
        assert!(!token.path().join("agent.sock").exists(), "nothing listens");
    }
}
