//! One accepted connection: served with HTTP/1.1 keep-alive under its
//! deadlines, with a graceful end when the agent stops; or, past a
//! connection cap, answered 503 and closed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::deadlines::Activity;
use super::limits::{Full, Held};
use super::peer::Peer;
use super::problem::{Problem, ProblemKind};
use super::stream::Watched;
use super::Front;
use crate::issue::TokenSource;

/// Connections past a cap whose request heads are read before their 503;
/// beyond these, the 503 is written at once, without reading.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a connection refused at a cap has to send its request head.
const REFUSAL_READ_TIME: Duration = Duration::from_secs(1);
/// How much of a refused connection's request is read before answering.
const REFUSAL_READ_BYTES: usize = 8192;
/// Reaching a cap is logged at most this often.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Serves `stream` until the client leaves, a deadline passes, or the
/// agent stops (`stop` turns true): then a connection that has sent nothing
/// is closed at once, an idle one too, and one with a request under way
/// gets its answer first. `accepted_at` is when it was accepted
/// ([`super::peer::since_boot`]); `_place` is its place under the caps.
pub(super) async fn serve<S: TokenSource>(
    front: Arc<Front<S>>,
    stream: UnixStream,
    accepted_at: Duration,
    mut stop: watch::Receiver<bool>,
    _place: Held,
) {
    let peer = match Peer::of(&stream, accepted_at) {
        Ok(peer) => Arc::new(peer),
        Err(e) => {
            tracing::debug!("dropping a connection without peer credentials: {e}");
            return;
        }
    };
    let uid = peer.uid;
    let activity = Activity::new();
    let io = Watched::new(stream, activity.clone(), front.config.max_header_bytes);
    // One handle of the connection's own per request: cloning `front`
    // itself would write to a count every connection's requests share.
    let shared = Arc::new((Arc::clone(&front), peer, Arc::clone(&activity)));
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move {
            let (front, peer, activity) = &*shared;
            activity.request_started();
            let response = front.respond(request, peer).await;
            activity.request_finished();
            Ok::<_, Infallible>(response)
        }
    });
    let connection = front.http.serve_connection(TokioIo::new(io), service);
    let overdue = activity.overdue(front.timeouts);
    tokio::pin!(connection, overdue);
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                if activity.is_fresh() {
                    // Nothing asked yet: nothing in flight to finish.
                    return;
                }
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                }
                break;
            }
            () = &mut overdue => {
                tracing::debug!("closing a connection that overstayed its deadline");
                return;
            }
        }
    }
    // A request hyper could not read ends the connection; its place under
    // the caps is held until the uid's turn, as every other refusal waits
    // for it, so that such requests in a loop soon meet the uid's
    // connection cap instead of costing /proc reads for each.
    if activity.was_refused_unreadable() && front.limits.refusal_turn(uid).await {
        front.metrics.request_paced("unreadable");
    }
}

/// Answers connections refused at a cap: 503 with Retry-After, then a close.
pub(super) struct Refusals {
    reading: Arc<Semaphore>,
    warned: [Option<Instant>; 2],
}

impl Refusals {
    pub fn new() -> Refusals {
        Refusals {
            reading: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            warned: [None; 2],
        }
    }

    /// Refuses `stream` because `full`. The request head is read first
    /// (briefly, bounded) so that the client's unread request does not turn
    /// the close into a reset; past [`MAX_REFUSALS_IN_FLIGHT`] the 503 goes
    /// out at once.
    pub fn refuse(&mut self, stream: UnixStream, full: Full) {
        self.warn(full);
        let answer = problem(full).closing_response_bytes();
        match Arc::clone(&self.reading).try_acquire_owned() {
            Ok(turn) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REFUSAL_READ_TIME, after_reading(stream, answer))
                        .await;
                    drop(turn);
                });
            }
            // A fresh socket's buffer takes the answer whole; MSG_NOSIGNAL:
            // a client that already left is no reason for SIGPIPE.
            Err(_) => {
                let _ =
                    socket2::SockRef::from(&stream).send_with_flags(&answer, libc::MSG_NOSIGNAL);
            }
        }
    }

    fn warn(&mut self, full: Full) {
        let (cap, message) = match full {
            Full::All(max) => (0, format!("{max} connections open (`server.max_connections`); refusing more with 503")),
            Full::Uid(uid, max) => (1, format!("uid {uid} has {max} connections open (`server.max_connections_per_uid`); refusing more of its connections with 503")),
        };
        let warned = &mut self.warned[cap];
        if warned.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
            tracing::warn!("{message}");
            *warned = Some(Instant::now());
        }
    }
}

/// Reads the request head (up to [`REFUSAL_READ_BYTES`]), then answers.
async fn after_reading(mut stream: UnixStream, answer: Vec<u8>) -> std::io::Result<()> {
    let mut buf = vec![0u8; REFUSAL_READ_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        let n = stream.read(&mut buf[filled..]).await?;
        filled += n;
        if n == 0 || buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    stream.write_all(&answer).await?;
    stream.shutdown().await
}

/// The 503 for a connection past a cap, saying which and what to do.
fn problem(full: Full) -> Problem {
    let detail = match full {
        Full::All(max) => format!(
            "the agent already serves {max} connections (`server.max_connections`); retry after the Retry-After delay, and reuse one keep-alive connection per process"
        ),
        Full::Uid(uid, max) => format!(
            "uid {uid} already has {max} connections open (`server.max_connections_per_uid`); close idle ones, reuse one keep-alive connection per process, and retry after the Retry-After delay"
        ),
    };
    Problem::new(ProblemKind::TooManyConnections, detail)
}
