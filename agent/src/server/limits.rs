//! Limits that keep slow, idle or too many connections from tying the
//! agent up: per-connection deadlines, the answer given past the cap, and
//! problem+json answers to requests hyper refuses before the agent sees them.
//!
//! A connection is in one of four phases. A fresh connection must deliver
//! its first request head within `header_read_timeout` of connecting.
//! Waiting for a further request it may stay idle for `idle_timeout`; once
//! the first byte of that request arrives the whole head must arrive within
//! `header_read_timeout`. While a request is being answered no deadline
//! applies (the signing side bounds its own waits).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::problem::{Problem, ProblemKind};

/// How long a connection refused over the cap has to send its request head.
const REFUSAL_READ_TIME: Duration = Duration::from_secs(1);
/// How much of a refused connection's request is read before answering.
const REFUSAL_READ_BYTES: usize = 8192;

/// The per-connection deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Connected, nothing read yet.
const FRESH: u8 = 0;
/// Part of a request head read.
const HEAD: u8 = 1;
/// A request is being answered.
const BUSY: u8 = 2;
/// Waiting for the next request on a kept-alive connection.
const IDLE: u8 = 3;

/// Which phase a connection is in and since when.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    phase: AtomicU8,
    /// Milliseconds from `start` to the start of the phase.
    since: AtomicU64,
}

impl Activity {
    /// A fresh connection: its first request head is due within the header timeout.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            phase: AtomicU8::new(FRESH),
            since: AtomicU64::new(0),
        })
    }

    /// A request head was read and is being answered.
    pub fn request_started(&self) {
        self.phase.store(BUSY, Ordering::Relaxed);
    }

    /// The answer is ready; the connection waits for the next request.
    pub fn request_finished(&self) {
        self.enter(IDLE);
    }

    /// Bytes arrived; on an idle connection they start a request head.
    fn bytes_read(&self) {
        match self.phase.load(Ordering::Relaxed) {
            // The head's deadline still counts from the connection's start.
            FRESH => self.phase.store(HEAD, Ordering::Relaxed),
            IDLE => self.enter(HEAD),
            _ => {}
        }
    }

    /// Whether nothing at all has arrived on the connection yet.
    pub fn is_fresh(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == FRESH
    }

    fn enter(&self, phase: u8) {
        let since = self.start.elapsed().as_millis() as u64;
        self.since.store(since, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Resolves when the connection overstays its phase's deadline.
    pub async fn overdue(&self, timeouts: Timeouts) {
        loop {
            let phase = self.phase.load(Ordering::Relaxed);
            let since = Duration::from_millis(self.since.load(Ordering::Relaxed));
            let deadline = match phase {
                FRESH | HEAD => self.start + since + timeouts.header_read,
                IDLE => self.start + since + timeouts.idle,
                _ => Instant::now() + timeouts.header_read,
            };
            if phase != BUSY && Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that tells its connection's [`Activity`] when bytes arrive,
/// and that writes a problem+json answer in place of hyper's own.
///
/// hyper answers a request it cannot read (a head over the size limit, not
/// HTTP/1.1) by itself, with an empty body, and closes the connection. Its
/// answer is recognised as a 4xx or 5xx without a content type, which every
/// answer of the agent's has.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    /// `server.max_header_bytes`, for the detail of a 431.
    max_header_bytes: usize,
    /// The answer written in place of hyper's, and how much of it is out;
    /// once set, nothing else is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>, max_header_bytes: usize) -> Watched<S> {
        Watched {
            inner,
            activity,
            max_header_bytes,
            replacement: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    /// One write of hyper's: `first` is its first non-empty buffer, `taken`
    /// all its bytes, `write` the write itself. If hyper is refusing a
    /// request, the replacement goes out instead and hyper is told its
    /// bytes did.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        taken: usize,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.replacement.is_none() {
            self.replacement = hyper_refusal(first, self.max_header_bytes)
                .map(|problem| (problem.closing_response_bytes(), 0));
        }
        let Some((answer, written)) = self.replacement.as_mut() else {
            return write(Pin::new(&mut self.inner), cx);
        };
        while *written < answer.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(taken))
    }
}

/// The problem for hyper's own answer starting `chunk`, if it is one.
fn hyper_refusal(chunk: &[u8], max_header_bytes: usize) -> Option<Problem> {
    let rest = chunk
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| chunk.strip_prefix(b"HTTP/1.0 "))?;
    let status = rest.get(..3)?;
    if !matches!(status[0], b'4' | b'5') {
        return None;
    }
    let head_end = chunk
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(chunk.len());
    const CONTENT_TYPE: &[u8] = b"\r\ncontent-type:";
    let typed = chunk[..head_end]
        .windows(CONTENT_TYPE.len())
        .any(|w| w.eq_ignore_ascii_case(CONTENT_TYPE));
    if typed {
        return None;
    }
    Some(match status {
        // hyper's limits: the head's size, 100 headers, a 65,534-byte target.
        b"431" | b"414" => Problem::new(
            ProblemKind::HeadTooLarge,
            format!("the request head is too large: over {max_header_bytes} bytes (`server.max_header_bytes`), over 100 headers, or a request target over 65,534 bytes; send fewer or shorter headers"),
        ),
        _ => Problem::new(
            ProblemKind::BadRequest,
            "the request is not HTTP/1.1 that the agent can read; send `GET /v1/token?issuer=<org>&app=<app> HTTP/1.1` with a Host header",
        ),
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, buf, buf.len(), |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |buf| &buf[..]);
        let taken = bufs.iter().map(|buf| buf.len()).sum();
        self.get_mut()
            .poll_write_with(cx, first, taken, |inner, cx| {
                inner.poll_write_vectored(cx, bufs)
            })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Answers a connection over the cap with 503 and Retry-After, then closes
/// it. The request head is read first (briefly, bounded) so that the
/// client's unread request does not turn the close into a reset.
pub async fn refuse_over_cap(mut stream: UnixStream, max_connections: usize) {
    let problem = over_cap(max_connections);
    let answer = async {
        let mut buf = vec![0u8; REFUSAL_READ_BYTES];
        let mut filled = 0;
        while filled < buf.len() {
            let n = stream.read(&mut buf[filled..]).await?;
            filled += n;
            if n == 0 || buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        stream.write_all(&problem.closing_response_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_READ_TIME, answer).await;
}

/// Answers a connection over the cap without reading its request, when
/// too many refusals are already reading theirs: the 503 is written without
/// waiting (a fresh socket's buffer takes it whole) and the connection
/// closed when `stream` is dropped. A Unix socket still delivers the answer:
/// an unread request only turns the client's end-of-stream into a reset, and
/// a client that had not written its request yet sees that write fail but
/// can still read the answer.
pub fn refuse_at_once(stream: &UnixStream, max_connections: usize) {
    let answer = over_cap(max_connections).closing_response_bytes();
    // MSG_NOSIGNAL: a client that already left is no reason for SIGPIPE.
    let _ = socket2::SockRef::from(stream).send_with_flags(&answer, libc::MSG_NOSIGNAL);
}

fn over_cap(max_connections: usize) -> Problem {
    Problem::new(
        ProblemKind::TooManyConnections,
        format!(
            "the agent already serves {max_connections} connections (`server.max_connections`); retry after the Retry-After delay, and reuse one keep-alive connection per process"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(5),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn fresh_connection_is_due_after_the_header_timeout() {
        let activity = Activity::new();
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn first_bytes_keep_the_deadline_of_a_fresh_connection() {
        let activity = Activity::new();
        tokio::time::sleep(Duration::from_secs(3)).await;
        activity.bytes_read();
        assert!(!activity.is_fresh());
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_gets_the_idle_timeout() {
        let activity = Activity::new();
        activity.request_started();
        activity.request_finished();
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_on_an_idle_connection_start_the_header_clock() {
        let activity = Activity::new();
        activity.request_started();
        activity.request_finished();
        tokio::time::sleep(Duration::from_secs(30)).await;
        activity.bytes_read();
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_answered_has_no_deadline() {
        let activity = Activity::new();
        activity.request_started();
        let overdue = tokio::time::timeout(Duration::from_secs(600), activity.overdue(TIMEOUTS));
        assert!(overdue.await.is_err());
    }
}
