//! The answer past a connection cap (`server.max_connections`, or
//! `server.max_connections_per_uid`): 503 with Retry-After, then the
//! connection closed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::problem::{Problem, ProblemKind};

/// How long a connection refused over the cap has to send its request head.
const REFUSAL_READ_TIME: Duration = Duration::from_secs(1);
/// How much of a refused connection's request is read before answering.
const REFUSAL_READ_BYTES: usize = 8192;

/// The 503 for a connection over a cap.
pub struct Refusal(Problem);

/// Past `server.max_connections`.
pub fn total(max_connections: usize) -> Refusal {
    Refusal(Problem::new(
        ProblemKind::TooManyConnections,
        format!(
            "the agent already serves {max_connections} connections (`server.max_connections`); retry after the Retry-After delay, and reuse one keep-alive connection per process"
        ),
    ))
}

/// Past `server.max_connections_per_uid` for `uid`.
pub fn per_uid(uid: u32, max: usize) -> Refusal {
    Refusal(Problem::new(
        ProblemKind::TooManyConnections,
        format!(
            "uid {uid} already has {max} connections open (`server.max_connections_per_uid`); close idle ones, reuse one keep-alive connection per process, and retry after the Retry-After delay"
        ),
    ))
}

impl Refusal {
    /// Answers with 503 and Retry-After, then closes. The request head is
    /// read first (briefly, bounded) so that the client's unread request
    /// does not turn the close into a reset.
    pub async fn after_reading(self, mut stream: UnixStream) {
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
            stream.write_all(&self.0.closing_response_bytes()).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(REFUSAL_READ_TIME, answer).await;
    }

    /// Answers without reading the request, when too many refusals are
    /// already reading theirs: the 503 is written without waiting (a fresh
    /// socket's buffer takes it whole) and the connection closed when
    /// `stream` is dropped. A Unix socket still delivers the answer: an
    /// unread request only turns the client's end-of-stream into a reset,
    /// and a client that had not written its request yet sees that write
    /// fail but can still read the answer.
    pub fn at_once(self, stream: &UnixStream) {
        let answer = self.0.closing_response_bytes();
        // MSG_NOSIGNAL: a client that already left is no reason for SIGPIPE.
        let _ = socket2::SockRef::from(stream).send_with_flags(&answer, libc::MSG_NOSIGNAL);
    }
}
