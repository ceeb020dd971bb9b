//! The client library, the `access-token` command and the examples in
//! client/examples, against a real agent on a real socket with SoftHSM
//! behind it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use access_token_client::{blocking, Client, Error, Retry};
use integration_tests::daemon::{audit_lines, exported_cert, ttd_token, Daemon};
use integration_tests::{sha1_thumbprint, verify_jwt, TestToken};

/// No retries: each answer as the agent gives it.
const ONCE: Retry = Retry {
    attempts: 1,
    first_delay: Duration::from_millis(50),
    max_delay: Duration::from_secs(2),
};

fn blocking_client(client: Client) -> blocking::Client {
    blocking::Client::wrap(client).expect("a client runtime")
}

/// The exported certificate as a PEM file in the token's directory.
fn cert_pem_file(token: &TestToken) -> std::path::PathBuf {
    token.write_file("ttd.pem", exported_cert(token, "pem"))
}

/// The socket inodes the process `pid` holds open (`socket:[N]` links in
/// /proc/PID/fd): its listener, and one per connection it has accepted.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the agent's /proc/PID/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?.to_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Issued tokens according to the agent's audit file.
fn issued_count(token: &TestToken) -> usize {
    audit_lines(token)
        .iter()
        .filter(|line| line["outcome"] == "issued")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_client_gets_a_token_that_verifies() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let client = Client::new(&daemon.socket);
    let issued = client
        .token(Some("ttd"), Some("my-app"))
        .await
        .expect("a token");

    let pem = exported_cert(&token, "pem");
    let claims = verify_jwt(&issued.token, &pem, "ttd");
    assert_eq!(claims["urn:altinn:app"], "my-app");
    assert_eq!(issued.expires_at, claims["exp"].as_i64().unwrap());
    assert_eq!(issued.kid, sha1_thumbprint(&cert_pem_file(&token)));
    assert_eq!(
        (issued.issuer.as_str(), issued.app.as_str()),
        ("ttd", "my-app")
    );
}

#[test]
fn blocking_client_gets_a_token_that_verifies() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let client = blocking_client(Client::new(&daemon.socket));
    let issued = client.token(Some("ttd"), Some("b")).expect("a token");
    let claims = verify_jwt(&issued.token, &exported_cert(&token, "pem"), "ttd");
    assert_eq!(claims["urn:altinn:app"], "b");
    assert_eq!(issued.kid, sha1_thumbprint(&cert_pem_file(&token)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_client_keeps_its_connection_alive() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let before = socket_inodes(daemon.pid());
    let client = Client::new(&daemon.socket).with_retry(ONCE);
    client.token(Some("ttd"), Some("a")).await.unwrap();
    let first = socket_inodes(daemon.pid());
    assert_eq!(first.difference(&before).count(), 1, "one connection");
    for app in ["a", "b", "c", "d", "e", "f"] {
        client.token(Some("ttd"), Some(app)).await.unwrap();
        client.grants().await.unwrap();
    }
    assert_eq!(
        socket_inodes(daemon.pid()),
        first,
        "the same one connection"
    );
    assert_eq!(issued_count(&token), 7);
}

#[test]
fn the_blocking_client_keeps_its_connection_alive() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let before = socket_inodes(daemon.pid());
    let client = blocking_client(Client::new(&daemon.socket).with_retry(ONCE));
    client.token(Some("ttd"), Some("a")).unwrap();
    let first = socket_inodes(daemon.pid());
    assert_eq!(first.difference(&before).count(), 1, "one connection");
    for app in ["a", "b", "c", "d", "e", "f"] {
        client.token(Some("ttd"), Some(app)).unwrap();
        client.ready().unwrap();
    }
    assert_eq!(
        socket_inodes(daemon.pid()),
        first,
        "the same one connection"
    );
}

#[allow(dead_code)]
fn unused(_: Error, _: Instant) {}
