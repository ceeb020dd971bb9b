//! The load generator: N kept-alive HTTP/1.1 connections over the agent's
//! Unix socket, each sending the next request as soon as the last answer is
//! read, or at a steady pace ([`Pattern`]). Only a 200 answer whose body is
//! a well-formed JWS counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What one load step measured.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Well-formed tokens received.
    pub ok: u64,
    /// Answers that were not a 200 with a token, and connection failures.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Errors by kind: the status and problem type of a refusal (`503
    /// hsm-unavailable`), or what failed (`read`, `connect`).
    pub kinds: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// Per-request latency in microseconds, sorted.
    pub latencies: Vec<u32>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies[index]) / 1000.0
    }
}

/// A token request for `issuer` and `app`.
fn request(issuer: &str, app: &str) -> Vec<u8> {
    format!("GET /v1/token?issuer={issuer}&app={app} HTTP/1.1\r\nHost: agent\r\nAccept: application/jwt\r\n\r\n")
        .into_bytes()
}

/// What each connection sends, how fast, and for how long it keeps its
/// connection.
#[derive(Clone)]
pub struct Pattern {
    /// Sent in turn.
    requests: Arc<[Vec<u8>]>,
    /// Time between requests; `None`: the next as soon as the answer is in.
    pub interval: Option<Duration>,
    /// Requests sent on one connection before it is replaced; `None`: kept.
    pub reuse: Option<u64>,
    /// Requests each connection sends in all before it stops; `None`: until
    /// the step's time is up.
    pub limit: Option<u64>,
    /// Whether an answer counts only with a token in it (else any 200).
    tokens: bool,
}

impl Pattern {
    /// Every connection cycles through these (issuer, app) pairs; an answer
    /// counts only with a token in it.
    pub fn cycling(targets: &[(&str, &str)]) -> Pattern {
        Pattern {
            requests: targets.iter().map(|(i, a)| request(i, a)).collect(),
            interval: None,
            reuse: None,
            limit: None,
            tokens: true,
        }
    }

    /// Every connection cycles through these paths; any 200 is an answer.
    pub fn paths(paths: &[&str]) -> Pattern {
        Pattern {
            requests: paths
                .iter()
                .map(|path| format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").into_bytes())
                .collect(),
            tokens: false,
            ..Pattern::cycling(&[])
        }
    }
}

/// `per_connection` requests on each of `connections` kept-alive
/// connections, each sent as soon as the last is answered: a fixed amount
/// of work, for counts that are divided by it (instructions per token).
pub async fn run_count(
    socket: &Path,
    connections: usize,
    per_connection: u64,
    issuer: &str,
    app: &str,
) -> LoadResult {
    let pattern = Pattern {
        limit: Some(per_connection),
        ..Pattern::cycling(&[(issuer, app)])
    };
    // The count ends the step; the time only bounds a stalled server.
    run_pattern(socket, connections, Duration::from_secs(3600), &pattern).await
}

/// Runs `connections` connections against `socket` for `duration`, each
/// asking for a token for `issuer` and `app` as fast as it is answered.
pub async fn run(
    socket: &Path,
    connections: usize,
    duration: Duration,
    issuer: &str,
    app: &str,
) -> LoadResult {
    let pattern = Pattern::cycling(&[(issuer, app)]);
    run_pattern(socket, connections, duration, &pattern).await
}

/// Runs `connections` connections against `socket` for `duration`, each
/// sending as `pattern` says.
pub async fn run_pattern(
    socket: &Path,
    connections: usize,
    duration: Duration,
    pattern: &Pattern,
) -> LoadResult {
    let socket: Arc<PathBuf> = Arc::new(socket.to_path_buf());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let socket = socket.clone();
        let pattern = pattern.clone();
        tasks.push(tokio::spawn(async move {
            connection(&socket, &pattern, deadline).await
        }));
    }
    let mut total = LoadResult::default();
    for task in tasks {
        total.merge(task.await.expect("a load task"));
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total
}

async fn connection(socket: &Path, pattern: &Pattern, deadline: Instant) -> LoadResult {
    let mut result = LoadResult::default();
    let mut stream = None;
    let mut buffer = Vec::with_capacity(4096);
    let mut ticks = pattern.interval.map(|interval| {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticks
    });
    let (mut sent, mut on_this_connection) = (0usize, 0u64);
    while Instant::now() < deadline && pattern.limit.is_none_or(|limit| (sent as u64) < limit) {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        if pattern
            .reuse
            .is_some_and(|reuse| on_this_connection >= reuse)
        {
            stream = None;
        }
        if stream.is_none() {
            match UnixStream::connect(socket).await {
                Ok(s) => {
                    stream = Some(s);
                    on_this_connection = 0;
                }
                Err(e) => {
                    result.fail(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let request = &pattern.requests[sent % pattern.requests.len()];
        sent += 1;
        on_this_connection += 1;
        let started = Instant::now();
        let stream_now = stream.as_mut().expect("connected");
        let answer = exchange(stream_now, request, pattern.tokens, &mut buffer).await;
        match answer {
            Ok(()) => {
                result.ok += 1;
                result
                    .latencies
                    .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Err(error) => {
                result.fail(error);
                stream = None;
            }
        }
    }
    result
}

impl LoadResult {
    fn fail(&mut self, error: String) {
        self.errors += 1;
        *self.kinds.entry(kind(&error)).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }

    /// Adds `part`'s counts to these (latencies left unsorted).
    fn merge(&mut self, part: LoadResult) {
        self.ok += part.ok;
        self.errors += part.errors;
        self.first_error = self.first_error.take().or(part.first_error);
        self.latencies.extend(part.latencies);
        for (kind, count) in part.kinds {
            *self.kinds.entry(kind).or_default() += count;
        }
    }
}

/// An error's kind: `503 hsm-unavailable` for a refusal, else what failed.
fn kind(error: &str) -> String {
    let Some(rest) = error.strip_prefix("status ") else {
        return error.split(':').next().unwrap_or(error).to_owned();
    };
    let status = rest.get(..3).unwrap_or(rest);
    let problem = rest
        .split("problem:")
        .nth(1)
        .and_then(|tail| tail.split('"').next())
        .unwrap_or("");
    format!("{status} {problem}").trim_end().to_owned()
}

/// One request each on `count` connections opened at once, for apps
/// `{prefix}0`, `{prefix}1`, …: a host starting a crowd of apps. Latencies
/// are those of every answer, from the moment all the connections began.
pub async fn burst(socket: &Path, count: usize, issuer: &str, prefix: &str) -> LoadResult {
    let start = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|index| {
            let socket = socket.to_path_buf();
            let request = request(issuer, &format!("{prefix}{index}"));
            tokio::spawn(async move {
                let mut result = LoadResult::default();
                let answer = match UnixStream::connect(&socket).await {
                    Ok(mut stream) => exchange(&mut stream, &request, true, &mut Vec::new()).await,
                    Err(e) => Err(format!("connect: {e}")),
                };
                let elapsed = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match answer {
                    Ok(()) => result.ok += 1,
                    Err(error) => result.fail(error),
                }
                if result
                    .kinds
                    .keys()
                    .all(|kind| kind.starts_with(char::is_numeric))
                {
                    result.latencies.push(elapsed);
                }
                result
            })
        })
        .collect();
    let mut total = LoadResult::default();
    for task in tasks {
        total.merge(task.await.expect("a burst task"));
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total
}

/// One request and its answer on a kept-alive connection.
async fn exchange(
    stream: &mut UnixStream,
    request: &[u8],
    token: bool,
    buffer: &mut Vec<u8>,
) -> Result<(), String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buffer.clear();
    let (head_end, content_length) = loop {
        read_more(stream, buffer).await?;
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break (end + 4, content_length(&buffer[..end])?);
        }
    };
    while buffer.len() < head_end + content_length {
        read_more(stream, buffer).await?;
    }
    let status = buffer.get(9..12).unwrap_or_default();
    let body = &buffer[head_end..head_end + content_length];
    if status != b"200" {
        return Err(format!(
            "status {}: {}",
            String::from_utf8_lossy(status),
            String::from_utf8_lossy(body)
        ));
    }
    if token && !is_jws(body) {
        return Err(format!("not a token: {}", String::from_utf8_lossy(body)));
    }
    Ok(())
}

/// Appends what the socket has to `buffer`; a closed connection is an error.
async fn read_more(stream: &mut UnixStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed by the agent".into());
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn content_length(head: &[u8]) -> Result<usize, String> {
    let head = std::str::from_utf8(head).map_err(|_| "a non-UTF-8 head".to_string())?;
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no content-length in {head:?}"))
}

/// Three non-empty base64url parts, the first a JSON object's encoding.
pub fn is_jws(body: &[u8]) -> bool {
    let parts: Vec<&[u8]> = body.split(|b| *b == b'.').collect();
    parts.len() == 3
        && body.starts_with(b"eyJ")
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Opens `count` connections, asks for a token of `issuer` on each, and
/// keeps those answered open until the returned streams are dropped (for
/// memory at many connections).
pub async fn hold_connections(socket: &Path, count: usize, issuer: &str) -> Vec<UnixStream> {
    let request = request(issuer, "hold");
    let mut held = Vec::with_capacity(count);
    let mut buffer = Vec::new();
    for _ in 0..count {
        let Ok(mut stream) = UnixStream::connect(socket).await else {
            break;
        };
        if exchange(&mut stream, &request, true, &mut buffer)
            .await
            .is_ok()
        {
            held.push(stream);
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jws_shape_is_checked() {
        assert!(is_jws(b"eyJhbGciOi.eyJ1cm4.c2ln_-"));
        assert!(!is_jws(b"eyJhbGciOi.eyJ1cm4"));
        assert!(!is_jws(b"{\"type\":\"x\"}"));
        assert!(!is_jws(b"eyJh..sig"));
    }

    #[test]
    fn errors_are_counted_by_status_and_problem_type() {
        let refusal =
            r#"status 503: {"type":"urn:access-token-agent:problem:hsm-unavailable","title":"x"}"#;
        assert_eq!(kind(refusal), "503 hsm-unavailable");
        assert_eq!(kind("read: connection reset"), "read");
        assert_eq!(kind("status 500: oops"), "500");
    }

    #[test]
    fn content_length_is_read_case_insensitively() {
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ncontent-length: 12"),
            Ok(12)
        );
        assert!(content_length(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
