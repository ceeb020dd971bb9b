//! The peer: who is on the other end is read when the connection is
//! accepted (uid, group, executable) and judged against the policy, which a
//! reload may replace under open connections.

use std::path::Path;

use super::super::policy::Policy;
use super::{grant, my_uid, status, Server};
use crate::config::GrantConfig;

#[tokio::test]
async fn another_uid_is_refused_until_the_policy_grants_it() {
    let server = Server::start(vec![grant(my_uid() + 1, "ttd", &["*"])], |_| {}).await;
    let mut client = server.client().await;
    let reply = client.get("/v1/token?issuer=ttd&app=my-app", &[]).await;
    assert_eq!(
        (reply.status, reply.problem().as_str()),
        (403, "not-granted")
    );
    let new = Policy::from_config(&[grant(my_uid(), "ttd", &["*"])]).unwrap();
    server.front.replace_policy(new);
    // The open connection is kept and now gets its token.
    let reply = client.get("/v1/token?issuer=ttd&app=my-app", &[]).await;
    assert_eq!(reply.status, 200);
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn audit_lines_name_the_peers_executable_when_a_uid_grant_matched() {
    let server = Server::start(vec![grant(my_uid(), "ttd", &["my-app"])], |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(
        status(&mut client, "/v1/token?issuer=ttd&app=my-app").await,
        200
    );
    assert_eq!(
        status(&mut client, "/v1/token?issuer=ttd&app=other").await,
        403
    );
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let lines = server.audit_lines();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        // SAFETY: getpid cannot fail.
        assert_eq!(line["pid"], unsafe { libc::getpid() });
        assert_eq!(line["exe"], exe.to_str().unwrap(), "{line}");
    }
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_grant_on_the_process_added_later_applies_to_an_open_connection() {
    let server = Server::start(vec![grant(my_uid(), "ttd", &["my-app"])], |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(
        status(&mut client, "/v1/token?issuer=ttd&app=my-app").await,
        200
    );
    // A reload adds a grant on the executable: the connection was pinned
    // when it was accepted, so its process can still be read safely.
    let by_exe = GrantConfig {
        exe: Some(std::fs::read_link("/proc/self/exe").unwrap()),
        ..grant(my_uid(), "ttd", &["by-exe"])
    };
    server
        .front
        .replace_policy(Policy::from_config(&[by_exe]).unwrap());
    assert_eq!(
        status(&mut client, "/v1/token?issuer=ttd&app=by-exe").await,
        200
    );
    server.shut_down().await.unwrap();
}

#[tokio::test]
async fn grants_by_executable_and_group_read_the_peer_process() {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    // SAFETY: getgid cannot fail.
    let gid = unsafe { libc::getgid() };
    let grants = vec![
        GrantConfig {
            exe: Some(exe.clone()),
            ..grant(my_uid(), "ttd", &["by-exe"])
        },
        GrantConfig {
            exe: Some("/usr/bin/somebody-else".into()),
            ..grant(my_uid(), "ttd", &["wrong-exe"])
        },
        GrantConfig {
            gid: Some(gid),
            uid: None,
            ..grant(0, "ttd", &["by-group"])
        },
    ];
    let server = Server::start(grants, |_| {}).await;
    let mut client = server.client().await;
    assert_eq!(
        status(&mut client, "/v1/token?issuer=ttd&app=by-exe").await,
        200
    );
    assert_eq!(
        status(&mut client, "/v1/token?issuer=ttd&app=by-group").await,
        200
    );
    assert_eq!(
        status(&mut client, "/v1/token?issuer=ttd&app=wrong-exe").await,
        403
    );
    let lines = server.audit_lines();
    assert_eq!(lines[0]["exe"], exe.to_str().unwrap());
    server.shut_down().await.unwrap();
}

/// `sockaddr_un` for `path`, built before a fork so the child need not allocate.
fn unix_address(path: &Path) -> (libc::sockaddr_un, libc::socklen_t) {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < address.sun_path.len(), "{path:?} is too long");
    for (to, from) in address.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    (address, length)
}

#[tokio::test]
async fn a_peer_that_execs_after_connecting_keeps_the_program_it_connected_as() {
    let test_binary = std::fs::read_link("/proc/self/exe").unwrap();
    let grants = vec![
        GrantConfig {
            exe: Some("/bin/sh".into()),
            ..grant(my_uid(), "ttd", &["as-sh"])
        },
        GrantConfig {
            exe: Some(test_binary.clone()),
            ..grant(my_uid(), "ttd", &["as-connected"])
        },
    ];
    let server = Server::start(grants, |_| {}).await;
    // The child connects as this test binary, waits until the agent has
    // accepted (the first byte of a /healthz answer), then execs sh, which
    // asks for both apps on that same connection.
    let (address, length) = unix_address(&server.socket);
    let mut command = std::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("printf 'GET /v1/token?issuer=ttd&app=as-sh HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /v1/token?issuer=ttd&app=as-connected HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3; exec cat <&3")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // calls on memory prepared before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
            let mut first = 0u8;
            let ok = fd >= 0
                && libc::connect(fd, (&address as *const libc::sockaddr_un).cast(), length) == 0
                && libc::write(fd, ask.as_ptr().cast(), ask.len()) == ask.len() as isize
                && libc::recv(fd, (&mut first as *mut u8).cast(), 1, libc::MSG_PEEK) == 1
                && (fd == 3 || libc::dup2(fd, 3) == 3);
            match ok {
                true => Ok(()),
                false => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let (pid, output) = tokio::task::spawn_blocking(move || {
        let child = command.spawn().unwrap();
        (child.id(), child.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let answers = String::from_utf8(output.stdout).unwrap();
    let statuses: Vec<&str> = answers
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| &answer[..3])
        .collect();
    assert_eq!(statuses, ["200", "403", "200"], "{answers}");
    let lines = server.audit_lines();
    let refused = lines.iter().find(|l| l["app"] == "as-sh").unwrap();
    assert_eq!(refused["pid"], pid, "{refused}");
    assert_eq!(refused["exe"], test_binary.to_str().unwrap(), "{refused}");
    server.shut_down().await.unwrap();
}
