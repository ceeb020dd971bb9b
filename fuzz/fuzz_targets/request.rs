//! The socket front's handling of untrusted bytes, two ways, chosen by the
//! input's first byte:
//!
//! - even: the rest, if UTF-8, is a `/v1/token` query for `query::parse`.
//!   What it accepts are valid names that survive being encoded and parsed
//!   again; what it refuses gets a short, non-empty reason.
//! - odd: the rest is written raw to a real agent front on a Unix socket
//!   (hyper's parser, the limits, the routes, the policy) with a stand-in
//!   token source, and the writing side is then closed. The agent must close
//!   the connection within seconds, and everything it sent must be whole,
//!   well-formed HTTP/1.x answers: no 5xx but the stand-in's 503s, problem
//!   documents that agree with their status, tokens only for the granted
//!   issuer and exactly the app asked for.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use access_token_agent::front::audit::{Audit, Log};
use access_token_agent::issue::{Found, IssueError, Issued, TokenSource};
use access_token_agent::metrics::Metrics;
use access_token_agent::front::policy::Policy;
use access_token_agent::token::name::check_name;
use access_token_agent::front::query::{self, TokenQuery};
use access_token_agent::config::{AuditConfig, GrantConfig, PerUidRate, ServerConfig};
use access_token_agent::front::{Front, Listener, TYPE_PREFIX};
use integration_tests::http::{parse_replies, Reply};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest reason a refused query may give (the caller's text is cut short in it).
const MAX_DETAIL: usize = 400;
/// How long the agent may keep a connection after the client stopped writing.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Signs nothing: `token-for.ISSUER.APP` for `ttd`, the HSM's failures for
/// `down` and `busy`, and no other issuer.
struct StandIn;

impl TokenSource for StandIn {
    type Miss = (String, String);

    fn find(&self, issuer: &str, app: &str) -> Result<Found<Self::Miss>, IssueError> {
        match issuer {
            "ttd" | "busy" => Ok(Found::Missing((issuer.into(), app.into()))),
            "down" => Err(IssueError::Unavailable("the token is not present".into())),
            other => Err(IssueError::UnknownIssuer(other.into())),
        }
    }

    async fn sign(&self, (issuer, app): Self::Miss) -> Result<Issued, IssueError> {
        if issuer == "busy" {
            return Err(IssueError::Overloaded);
        }
        Ok(Issued {
            token: format!("token-for.{issuer}.{app}").into(),
            kid: "KID".into(),
            expires_at: 2_000_000_000,
            cache_hit: false,
        })
    }

    fn signing_places(&self) -> usize {
        8
    }

    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }
}

/// One front, served for the whole run on a runtime that moves only while
/// an input is being exchanged.
struct Agent {
    runtime: tokio::runtime::Runtime,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("agent.sock");
        let config = ServerConfig {
            socket: socket.clone(),
            header_read_timeout_seconds: 1.0,
            idle_timeout_seconds: 1.0,
            // Every input is refused in some way: none should wait its turn.
            refusals_per_uid: PerUidRate {
                per_second: 1e6,
                burst: 1_000_000,
            },
            ..ServerConfig::default()
        };
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let grants: Vec<GrantConfig> = ["ttd", "down", "busy", "elsewhere"]
            .into_iter()
            .map(|issuer| GrantConfig {
                uid: Some(uid),
                issuer: issuer.into(),
                apps: vec!["*".into()],
                ..GrantConfig::default()
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let listener = Listener::open(&config).expect("bind the socket");
            let front = Arc::new(Front::new(
                Arc::new(StandIn),
                Policy::from_config(&grants).expect("grants"),
                Audit::open(&AuditConfig { file: None, ..AuditConfig::default() }, Log::Tracing).expect("audit to the log only"),
                Arc::new(Metrics::default()),
                &config,
            ));
            tokio::spawn(front.serve(listener, std::future::pending()));
        });
        Agent {
            runtime,
            socket,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                check_query(text);
            }
        }
        Some((_, rest)) => check_exchange(rest),
        None => {}
    }
});

fn check_query(text: &str) {
    match query::parse(Some(text)) {
        Ok(parsed) => {
            if let Some(issuer) = &parsed.issuer {
                assert!(check_name(issuer).is_ok(), "issuer {issuer:?} accepted");
            }
            if let Some(app) = parsed.app.as_deref().filter(|a| !a.is_empty()) {
                assert!(check_name(app).is_ok(), "app {app:?} accepted");
            }
            let again = encode(&parsed);
            let reparsed = query::parse(Some(&again)).expect("an encoded query parses");
            assert_eq!(parsed, reparsed, "{text:?} → {again:?}");
        }
        Err(detail) => {
            assert!(!detail.is_empty());
            assert!(detail.len() <= MAX_DETAIL, "a {} byte reason", detail.len());
        }
    }
}

/// The parameters percent-encoded byte by byte, as a client would send them.
fn encode(parsed: &TokenQuery<'_>) -> String {
    let mut out = Vec::new();
    for (key, value) in [("issuer", &parsed.issuer), ("app", &parsed.app)] {
        if let Some(value) = value {
            let encoded: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
            out.push(format!("{key}={encoded}"));
        }
    }
    out.join("&")
}

fn check_exchange(request: &[u8]) {
    let agent = agent();
    let answer = agent.runtime.block_on(async {
        let mut stream = tokio::net::UnixStream::connect(&agent.socket)
            .await
            .expect("connect to the front");
        // The front may close before taking it all in; that is an answer too.
        let _ = stream.write_all(request).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(CLOSE_WITHIN, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the front kept the connection open");
        answer
    });
    // Every answer whole and well-formed, one after another to the end; a
    // HEAD answer announces a length but has no body.
    let head_sent = request.windows(4).any(|w| w == b"HEAD");
    let replies = parse_replies(&answer, head_sent).unwrap_or_else(|e| panic!("{e}"));
    for reply in &replies {
        check_answer(reply);
    }
}

/// No 5xx but the stand-in's 503s; problem documents agree with their
/// status; tokens only for the granted issuer and the app asked for.
fn check_answer(answer: &Reply) {
    let (status, body) = (answer.status, &answer.body);
    assert!(
        status < 500 || status == 503,
        "answered {status}: {}",
        String::from_utf8_lossy(body)
    );
    if body.is_empty() {
        return;
    }
    match answer.header("content-type").unwrap_or_default().as_str() {
        "application/problem+json" => {
            let problem: serde_json::Value = serde_json::from_slice(body).expect("problem JSON");
            assert_eq!(problem["status"], status, "{problem}");
            let kind = problem["type"].as_str().expect("a problem type");
            assert!(kind.starts_with(TYPE_PREFIX), "{kind}");
            if status == 503 && !kind.ends_with(":hsm-unavailable") {
                assert!(
                    answer.header("retry-after").is_some(),
                    "{kind} without Retry-After"
                );
            }
        }
        "application/json" if status == 200 => {
            let token: serde_json::Value = serde_json::from_slice(body).expect("token JSON");
            if let Some(issued) = token["token"].as_str() {
                assert_eq!(token["issuer"], "ttd", "{token}");
                let app = token["app"].as_str().expect("an app");
                assert_eq!(issued, format!("token-for.ttd.{app}"), "{token}");
            }
        }
        "application/jwt" if status == 200 => {
            let issued = std::str::from_utf8(body).expect("a UTF-8 token");
            assert!(issued.starts_with("token-for.ttd."), "{issued}");
        }
        _ => {}
    }
}
