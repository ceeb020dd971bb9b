//! Hostile bytes on the agent's socket: random and mutated requests, every
//! truncation of a valid one, huge request lines and headers, invalid UTF-8,
//! absurd Content-Length and chunking, HTTP/2 and TLS. Every connection must
//! end with well-formed answers (or none) within the header deadline, and
//! afterwards the same agent still serves a normal client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::daemon::{
    add_server_settings, exported_cert, log_tail, open_fds, ttd_token, wait_open_fds_at_most,
    Daemon,
};
use integration_tests::http::parse_replies;
use integration_tests::{verify_jwt, OutputExt};

/// The agent's header deadline in this test, seconds.
const HEADER_TIMEOUT: f64 = 1.0;
/// How long past the deadline a connection may take to be closed on a busy machine.
const SLACK: Duration = Duration::from_secs(4);
/// Seeds the random and mutated payloads, so that a failure can be replayed.
const SEED: u64 = 0x05ee_d0fa_6e47;

const VALID: &[u8] =
    b"GET /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\nAccept: application/jwt\r\n\r\n";

/// One payload and whether a token may be its answer (it may be, or may
/// have become, a valid request).
struct Payload {
    name: String,
    bytes: Vec<u8>,
    may_succeed: bool,
}

fn payload(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Payload {
    Payload {
        name: name.into(),
        bytes: bytes.into(),
        may_succeed: false,
    }
}

/// xorshift64*: small, and the same sequence on every machine.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn truncations() -> Vec<Payload> {
    (1..VALID.len())
        .map(|n| payload(format!("the first {n} bytes of a request"), &VALID[..n]))
        .collect()
}

fn random(rng: &mut Random, count: usize) -> Vec<Payload> {
    (0..count)
        .map(|i| {
            let len = 1 + rng.below(2048);
            payload(format!("random #{i} ({len} bytes)"), rng.bytes(len))
        })
        .collect()
}

/// A valid request with a few bytes flipped, inserted or removed.
fn mutated(rng: &mut Random, count: usize) -> Vec<Payload> {
    (0..count)
        .map(|i| {
            let mut bytes = VALID.to_vec();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = rng.next() as u8,
                    1 => bytes.insert(at, rng.next() as u8),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            Payload {
                name: format!("mutated #{i}"),
                bytes,
                may_succeed: true,
            }
        })
        .collect()
}

fn request_with(head: &str, rest: &[u8]) -> Vec<u8> {
    [head.as_bytes(), rest].concat()
}

fn specials() -> Vec<Payload> {
    let get = "GET /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\n";
    let big = "a".repeat(100_000);
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut list = vec![
        payload(
            "a 100 kB request line",
            format!("GET /v1/token?issuer={big} HTTP/1.1\r\nHost: agent\r\n\r\n"),
        ),
        payload("a 100 kB header", format!("{get}X-Big: {big}\r\n\r\n")),
        payload("10,000 headers", format!("{get}{many_headers}\r\n")),
        payload(
            "a 100 kB method",
            format!("{big} /v1/token HTTP/1.1\r\n\r\n"),
        ),
        payload("10,000 empty lines", "\r\n".repeat(10_000)),
        payload(
            "a header without a colon",
            format!("{get}NoColonHere\r\n\r\n"),
        ),
        payload(
            "a header folded onto the next line",
            format!("{get}X-Fold: a\r\n  b\r\n\r\n"),
        ),
        payload(
            "invalid UTF-8 in the path",
            request_with("GET /v1/tok", b"\xff\xfeen HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        payload(
            "invalid UTF-8 in the query",
            request_with(
                "GET /v1/token?issuer=",
                b"\xc3\x28 HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        ),
        payload(
            "percent-encoded invalid UTF-8",
            "GET /v1/token?issuer=%ff%fe&app=%c3%28 HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        payload(
            "a NUL in the path",
            request_with("GET /v1/to", b"\0ken HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        payload(
            "a NUL in a header",
            request_with(get, b"X-Nul: a\0b\r\n\r\n"),
        ),
        payload(
            "an absurd Content-Length",
            format!("{get}Content-Length: 99999999999999999999999999\r\n\r\n"),
        ),
        payload(
            "a negative Content-Length",
            format!("{get}Content-Length: -1\r\n\r\n"),
        ),
        payload(
            "a list as Content-Length",
            format!("{get}Content-Length: 1, 2\r\n\r\nab"),
        ),
        payload(
            "two different Content-Lengths",
            format!("{get}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ),
        payload(
            "a Content-Length of 1 GB and 3 bytes",
            format!("{get}Content-Length: 1000000000\r\n\r\nabc"),
        ),
        payload(
            "a chunked body on GET",
            format!("{get}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ),
        payload(
            "a chunk size past 64 bits",
            format!("{get}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nx\r\n"),
        ),
        payload(
            "a 100 kB chunk extension",
            format!("{get}Transfer-Encoding: chunked\r\n\r\n1;{big}\r\nx\r\n0\r\n\r\n"),
        ),
        payload(
            "chunked and Content-Length together",
            format!("{get}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        ),
        payload(
            "gzip, chunked",
            format!("{get}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ),
        payload(
            "an unknown transfer coding",
            format!("{get}Transfer-Encoding: bogus\r\n\r\n"),
        ),
        payload(
            "chunked without a body",
            format!("{get}Transfer-Encoding: chunked\r\n\r\n"),
        ),
        payload(
            "Expect: 100-continue",
            format!("{get}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
        ),
        payload("the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        payload(
            "HTTP/2 prior knowledge frames",
            request_with(
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                &[0, 0, 0x12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x64],
            ),
        ),
        payload(
            "an HTTP/9.9 request",
            "GET /healthz HTTP/9.9\r\nHost: a\r\n\r\n",
        ),
        payload("an HTTP/0.9 request", "GET /healthz\r\n\r\n"),
        payload(
            "CONNECT",
            "CONNECT agent:443 HTTP/1.1\r\nHost: agent:443\r\n\r\n",
        ),
        payload("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        payload(
            "HEAD on the token route",
            "HEAD /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        payload(
            "POST with a body",
            "POST /v1/token HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        ),
        payload(
            "a path of 5,000 slashes",
            format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", "/".repeat(5000)),
        ),
        payload(
            "dot segments",
            "GET /v1/../v1/./token?issuer=ttd&app=a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        payload(
            "a query of 1,000 parameters",
            format!(
                "GET /v1/token?{} HTTP/1.1\r\nHost: a\r\n\r\n",
                "x=1&".repeat(1000)
            ),
        ),
        payload(
            "a parameter given twice",
            "GET /v1/token?issuer=ttd&issuer=ttd&app=a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ];
    for (name, bytes) in [
        ("invalid UTF-8 in Accept", request_with(get, b"Accept: \xff\xfe application/jwt\r\n\r\n")),
        ("bare LF line ends", b"GET /v1/token?issuer=ttd&app=a HTTP/1.1\nHost: agent\n\n".to_vec()),
        ("an absolute-form target", b"GET http://agent/v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\n\r\n".to_vec()),
        ("HTTP/1.0 without Host", b"GET /v1/token?issuer=ttd&app=a HTTP/1.0\r\n\r\n".to_vec()),
        ("a fragment", b"GET /v1/token?issuer=ttd&app=a#frag HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("an upgrade to h2c", format!("{get}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n").into_bytes()),
        ("an upgrade to websocket", format!("{get}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").into_bytes()),
        ("1,000 pipelined requests", VALID.repeat(1000)),
    ] {
        list.push(Payload {
            name: name.into(),
            bytes,
            may_succeed: true,
        });
    }
    list
}

/// What one payload got: the answers' statuses and tokens, or what was wrong.
struct Outcome {
    statuses: Vec<u16>,
    /// Refusals that are not problem+json.
    bare_refusals: Vec<u16>,
    tokens: Vec<String>,
    elapsed: Duration,
}

/// Sends `payload`, half-closes, and reads until the agent closes.
fn send(socket: &Path, payload: &Payload) -> Result<Outcome, String> {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let deadline = Duration::from_secs_f64(HEADER_TIMEOUT) + SLACK;
    stream.set_read_timeout(Some(deadline)).unwrap();
    stream.set_write_timeout(Some(deadline)).unwrap();
    // The agent may close before taking it all in: that is an answer too.
    let _ = stream.write_all(&payload.bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(format!("still open after {deadline:?} ({e})")),
    }
    let elapsed = started.elapsed();
    let head_sent = payload.bytes.windows(4).any(|w| w == b"HEAD");
    let replies = parse_replies(&answer, head_sent)?;
    Ok(Outcome {
        statuses: replies.iter().map(|r| r.status).collect(),
        bare_refusals: replies
            .iter()
            .filter(|r| r.status >= 400)
            .filter(|r| r.header("content-type").as_deref() != Some("application/problem+json"))
            .map(|r| r.status)
            .collect(),
        tokens: replies.iter().filter_map(|r| r.token()).collect(),
        elapsed,
    })
}

/// What all payloads got.
#[derive(Default)]
struct Summary {
    failures: Vec<String>,
    slowest: Duration,
    /// Payloads that got no answer at all.
    unanswered: usize,
    /// Answers by status.
    statuses: std::collections::BTreeMap<u16, usize>,
}

impl Summary {
    fn add(&mut self, payload: &Payload, outcome: Result<Outcome, String>, pem: &str) {
        let outcome = outcome.and_then(|outcome| judge(payload, &outcome, pem).map(|()| outcome));
        match outcome {
            Ok(outcome) => {
                self.slowest = self.slowest.max(outcome.elapsed);
                self.unanswered += usize::from(outcome.statuses.is_empty());
                for status in outcome.statuses {
                    *self.statuses.entry(status).or_default() += 1;
                }
            }
            Err(why) => self.failures.push(format!("{}: {why}", payload.name)),
        }
    }
}

/// Sends every payload, 16 connections at a time.
fn send_all(socket: &Path, payloads: Vec<Payload>, pem: &str) -> Summary {
    let queue = Arc::new(Mutex::new(payloads));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (queue, summary) = (queue.clone(), summary.clone());
            let (socket, pem) = (socket.to_path_buf(), pem.to_owned());
            std::thread::spawn(move || loop {
                let Some(payload) = queue.lock().unwrap().pop() else {
                    return;
                };
                let outcome = send(&socket, &payload);
                summary.lock().unwrap().add(&payload, outcome, &pem);
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a sending thread");
    }
    let summary = std::mem::take(&mut *summary.lock().unwrap());
    summary
}

/// Client errors only, unless the payload may be a valid request; then
/// also tokens, each of which must verify.
fn judge(payload: &Payload, outcome: &Outcome, pem: &str) -> Result<(), String> {
    for &status in &outcome.statuses {
        let fine = (400..500).contains(&status) || (status == 200 && payload.may_succeed);
        if !fine {
            return Err(format!("answered {status} ({:?})", outcome.statuses));
        }
    }
    if !outcome.bare_refusals.is_empty() {
        return Err(format!(
            "refused without problem+json: {:?}",
            outcome.bare_refusals
        ));
    }
    for token in &outcome.tokens {
        let verified = std::panic::catch_unwind(|| verify_jwt(token, pem.as_bytes(), "ttd"));
        if verified.is_err() {
            return Err(format!("a token that does not verify: {token}"));
        }
    }
    Ok(())
}

#[test]
fn hostile_bytes_get_client_errors_or_a_close_and_the_agent_serves_on() {
    let token = ttd_token("p256", "");
    add_server_settings(
        &token,
        &format!("header_read_timeout_seconds = {HEADER_TIMEOUT}\nidle_timeout_seconds = 2"),
    );
    let mut daemon = Daemon::start(&token);
    let pem = String::from_utf8(exported_cert(&token, "pem")).unwrap();
    daemon.client().token(Some("ttd"), Some("a")).unwrap();
    let fds_before = open_fds(daemon.pid());

    let mut rng = Random(SEED);
    let mut payloads = truncations();
    payloads.extend(random(&mut rng, 300));
    payloads.extend(mutated(&mut rng, 300));
    payloads.extend(specials());
    let count = payloads.len();
    let started = Instant::now();
    let summary = send_all(&daemon.socket, payloads, &pem);
    eprintln!(
        "{count} hostile payloads in {:.1} s; the slowest connection closed after {:.2} s; {} got no answer; answers by status: {:?}",
        started.elapsed().as_secs_f64(),
        summary.slowest.as_secs_f64(),
        summary.unanswered,
        summary.statuses
    );
    let failures = summary.failures;
    assert!(
        failures.is_empty(),
        "{} of {count} payloads failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        log_tail(&token)
    );

    // TLS spoken to a plain-HTTP socket: the handshake fails, nothing hangs.
    for version in ["-tls1_2", "-tls1_3"] {
        let tls = Command::new("timeout")
            .args(["20", "openssl", "s_client", version, "-unix"])
            .arg(&daemon.socket)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl s_client");
        assert_ne!(tls.code(), 124, "s_client {version} hung");
        assert_ne!(tls.code(), 0, "a TLS handshake succeeded");
    }

    assert!(
        daemon.process.try_wait().unwrap().is_none(),
        "the agent exited:\n{}",
        log_tail(&token)
    );
    let issued = daemon
        .client()
        .token(Some("ttd"), Some("after"))
        .expect("a normal client is served after the hostile ones");
    verify_jwt(&issued.token, pem.as_bytes(), "ttd");
    let fds_after = wait_open_fds_at_most(daemon.pid(), fds_before + 2, Duration::from_secs(10));
    assert!(
        fds_after <= fds_before + 2,
        "descriptors: {fds_before} before, {fds_after} after"
    );
}
