//! One uid cannot hold every connection: with `max_connections = 200`, uid
//! 65534 opens 300 and keeps them (idle keep-alives cost it nothing), and
//! another user is still served.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use integration_tests::daemon::{
    add_server_settings, client_as, log_tail, open_directory_to_others, raise_open_files_limit,
    ttd_token, Daemon, UNPACED,
};
use integration_tests::http::{parse_reply, Parsed, Reply};
use integration_tests::users::NOBODY;

use integration_tests::pids::connect_many_from_a_child;

const HELD: usize = 300;
/// `server.max_connections_per_uid`'s default.
const PER_UID: usize = 128;

/// Sends `request` and reads one whole answer; `None` if the agent closed
/// the connection without one.
pub fn exchange(stream: &mut UnixStream, request: &[u8]) -> Option<Reply> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Parsed::Reply(reply, _) = parse_reply(&buf, false).expect("a well-formed answer") {
            return Some(reply);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn one_uid_holding_idle_connections_leaves_room_for_others() {
    raise_open_files_limit();
    let token = ttd_token("p256", "");
    // Each held connection's one request is refused (the connections cap
    // alone here; `rates` paces refusals).
    add_server_settings(
        &token,
        &format!("socket_group = \"nogroup\"\nmax_connections = 200\n{UNPACED}"),
    );
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);

    let (mut held, _) = connect_many_from_a_child(&daemon.socket, NOBODY, NOBODY, HELD);
    let request = b"GET /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\n\r\n";
    let replies: Vec<Reply> = (held.iter_mut())
        .map(|stream| exchange(stream, request).expect("every connection is answered"))
        .collect();
    // While uid 65534 holds its places, another user is served.
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("another uid gets a token beside the held connections");

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for reply in &replies {
        if reply.status == 503 {
            assert_eq!(
                reply.problem_type().as_deref(),
                Some("too-many-connections")
            );
            assert!(reply.header("retry-after").is_some(), "{}", reply.text());
            assert!(
                reply.text().contains("`server.max_connections_per_uid`"),
                "{}",
                reply.text()
            );
        }
        *statuses.entry(reply.status).or_default() += 1;
    }
    // The first 128 are served (uid 65534 has no grant: 403), the rest refused.
    assert_eq!(
        statuses,
        BTreeMap::from([(403, PER_UID), (503, HELD - PER_UID)]),
        "{}",
        log_tail(&token)
    );

    // Closed, they give their places back: uid 65534 is answered again.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = client_as(NOBODY, NOBODY, &daemon.socket, &["token", "--app", "a"]);
        match again.status.code() {
            Some(3) => break,
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => panic!(
                "uid 65534 is not answered again: {}",
                String::from_utf8_lossy(&again.stderr)
            ),
        }
    }
}
