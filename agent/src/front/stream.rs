//! A connection's stream as hyper sees it ([`Watched`]): bytes arriving
//! tell the connection's deadlines, and problem+json answers go out in
//! place of the ones hyper writes itself.
//!
//! hyper answers a request it cannot read (a head over the size limit, not
//! HTTP/1.1) by itself, with an empty body, and closes the connection. The
//! stream recognises such an answer as a 4xx or 5xx without a content type,
//! which every answer of the agent's has, and writes a problem+json one
//! instead.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::deadlines::Activity;
use super::problem::{Problem, ProblemKind};

/// A stream that tells its connection's [`Activity`] when bytes arrive,
/// and writes a problem+json answer in place of hyper's own.
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
            if self.replacement.is_some() {
                self.activity.refused_unreadable();
            }
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
