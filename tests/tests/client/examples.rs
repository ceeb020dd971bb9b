//! The examples in client/examples (Python, curl, the header line piped
//! into curl), run as a user would run them against a real agent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use integration_tests::daemon::{client_binary, exported_cert, ttd_token, Daemon};
use integration_tests::{verify_jwt, OutputExt};

use crate::{single_line, toward_agent};

/// `client/examples/NAME`.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../client/examples")
        .join(name)
}

/// Runs `program example args` toward the agent at `socket`.
fn run_example(program: &str, name: &str, socket: &Path, args: &[&str]) -> Output {
    toward_agent(Command::new(program).arg(example(name)).args(args), socket)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (install it: hsm-config/install-deps.sh): {e}"))
}

#[test]
fn the_python_example_prints_a_token_or_the_agents_refusal() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let out = run_example(
        "python3",
        "get_token.py",
        &daemon.socket,
        &["ttd", "py-app"],
    );
    let printed = single_line(&out.success());
    let claims = verify_jwt(&printed, &exported_cert(&token, "pem"), "ttd");
    assert_eq!(claims["urn:altinn:app"], "py-app");

    let refused = run_example("python3", "get_token.py", &daemon.socket, &["nope", "a"]).exit(1);
    let message = refused.stderr_text();
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("not-granted"), "{message}");
    assert!(refused.stdout.is_empty());
    run_example("python3", "get_token.py", &daemon.socket, &["ttd"]).exit(2);
}

/// A one-request HTTP server on 127.0.0.1 standing in for Platform: it
/// answers 200 "ok" and hands back the request head it received.
fn platform_stand_in() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/register/api/v1/parties",
        listener.local_addr().unwrap()
    );
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the example's request");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(&stream);
        let mut head = String::new();
        while reader.read_line(&mut head).unwrap() > 2 {}
        (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        head
    });
    (url, server)
}

/// The `PlatformAccessToken` header's value in a request head.
fn sent_token(head: &str) -> &str {
    head.lines()
        .find_map(|line| line.strip_prefix("PlatformAccessToken: "))
        .unwrap_or_else(|| panic!("a PlatformAccessToken header in {head}"))
}

#[test]
fn the_curl_example_prints_a_token_and_sends_it_as_the_header() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let pem = exported_cert(&token, "pem");
    let out = run_example("sh", "curl.sh", &daemon.socket, &["ttd", "curl-app"]);
    let printed = single_line(&out.success());
    assert_eq!(
        verify_jwt(&printed, &pem, "ttd")["urn:altinn:app"],
        "curl-app"
    );

    let (url, platform) = platform_stand_in();
    let out = run_example("sh", "curl.sh", &daemon.socket, &["ttd", "b", &url]).success();
    assert_eq!(out.stdout_text(), "ok", "Platform's answer");
    let head = platform.join().unwrap();
    assert_eq!(
        verify_jwt(sent_token(&head), &pem, "ttd")["urn:altinn:app"],
        "b"
    );

    let refused = run_example("sh", "curl.sh", &daemon.socket, &["nope", "a"]).exit(1);
    assert!(
        refused.stderr_text().contains("not-granted"),
        "{}",
        refused.stderr_text()
    );
    assert!(refused.stdout.is_empty());
}

#[test]
fn the_header_line_pipes_into_curl() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let (url, platform) = platform_stand_in();
    let pipeline =
        r#""$0" token --issuer ttd --app piped --header | curl --silent --show-error -H @- "$1""#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(pipeline)
        .arg(client_binary())
        .arg(&url);
    let out = toward_agent(&mut command, &daemon.socket).output().unwrap();
    assert_eq!(out.success().stdout_text(), "ok");
    let head = platform.join().unwrap();
    let claims = verify_jwt(sent_token(&head), &exported_cert(&token, "pem"), "ttd");
    assert_eq!(claims["urn:altinn:app"], "piped");
}
