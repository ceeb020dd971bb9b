//! Hostile bytes on the agent's socket: random and mutated requests, every
//! truncation of a valid one, huge request lines and headers, invalid UTF-8,
//! absurd Content-Length and chunking, HTTP/2 and TLS. Every connection must
//! end with well-formed answers (or none) within the header deadline, and
//! afterwards the same agent still serves a normal client.

mod payloads;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::daemon::{
    add_server_settings, exported_cert, log_tail, open_fds, ttd_token, wait_open_fds_at_most,
    Daemon, UNPACED,
};
use integration_tests::http::parse_replies;
use integration_tests::{verify_jwt, OutputExt};

use payloads::{mutated, random, specials, truncations, Payload, Random};

/// The agent's header deadline in this test, seconds.
const HEADER_TIMEOUT: f64 = 1.0;
/// How long past the deadline a connection may take to be closed on a busy machine.
const SLACK: Duration = Duration::from_secs(4);
/// Seeds the random and mutated payloads, so that a failure can be replayed.
const SEED: u64 = 0x05ee_d0fa_6e47;

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
    // Unpaced: every payload is refused, and what is judged here is each
    // answer and close, not the refusal rate (`limits::rates` is).
    add_server_settings(
        &token,
        &format!(
            "header_read_timeout_seconds = {HEADER_TIMEOUT}\nidle_timeout_seconds = 2\n{UNPACED}"
        ),
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
