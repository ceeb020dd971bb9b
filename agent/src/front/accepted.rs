//! One accepted connection: who the peer is, HTTP/1.1 keep-alive with
//! hyper, its deadlines, and a graceful end when the agent stops.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::admission::Places;
use super::deadlines::Activity;
use super::hyper_answers::Watched;
use super::peer::Peer;
use super::Front;
use crate::issue::TokenSource;

/// Serves `stream` until the client leaves, a deadline passes, or the
/// agent stops (`stop` turns true): then a connection that has sent nothing
/// is closed at once, an idle one too, and one with a request under way
/// gets its answer first.
/// `accepted_at` is when it was accepted ([`super::peer::since_boot`]);
/// `_places` holds the connection's places under the caps until it ends.
pub(super) async fn serve<S: TokenSource>(
    front: Arc<Front<S>>,
    stream: UnixStream,
    accepted_at: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    _places: Places,
) {
    let peer = match Peer::of(&stream, accepted_at) {
        Ok(peer) => Arc::new(peer),
        Err(e) => {
            tracing::debug!("dropping a connection without peer credentials: {e}");
            return;
        }
    };
    let activity = Activity::new();
    let service = {
        let (front, activity) = (front.clone(), activity.clone());
        service_fn(move |request| {
            let (front, peer, activity) = (front.clone(), peer.clone(), activity.clone());
            async move {
                activity.request_started();
                let response = front.respond(request, &peer).await;
                activity.request_finished();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = TokioIo::new(Watched::new(
        stream,
        activity.clone(),
        front.config.max_header_bytes,
    ));
    let connection = front.http.serve_connection(io, service);
    let overdue = activity.overdue(front.timeouts);
    tokio::pin!(connection, overdue);
    let mut stopping = false;
    loop {
        if !stopping && *stop.borrow_and_update() {
            if activity.is_fresh() {
                // Nothing asked yet: nothing in flight to finish.
                return;
            }
            stopping = true;
            connection.as_mut().graceful_shutdown();
        }
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            () = &mut overdue => {
                tracing::debug!("closing a connection that overstayed its deadline");
                return;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() {
                    // The server is gone: stop as if told to.
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
