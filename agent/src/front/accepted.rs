//! One accepted connection: who the peer is, HTTP/1.1 keep-alive with
//! hyper, parked between requests, its deadlines, and a graceful end when
//! the agent stops.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1::{Connection, Parts};
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::admission::Places;
use super::deadlines::Activity;
use super::hyper_answers::Watched;
use super::parked;
use super::peer::Peer;
use super::Front;
use crate::issue::TokenSource;

/// The connection's stream as hyper sees it.
type Io = TokioIo<Watched<UnixStream>>;

/// Serves `stream` until the client leaves, a deadline passes, or the
/// agent stops (`stop` turns true): then a connection that has sent nothing
/// is closed at once, an idle one too, and one with a request under way
/// gets its answer first. Between requests it is parked ([`parked`]).
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
    let mut service = service(front.clone(), peer, activity.clone());
    let mut io = Watched::new(stream, activity.clone(), front.config.max_header_bytes);
    let overdue = activity.overdue(front.timeouts);
    // Once for the connection's life, not once per request: a stop, or the
    // server gone.
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(overdue, stopped);
    loop {
        // Boxed, so that a parked connection's task is small.
        let connection = Box::new(front.http.serve_connection(TokioIo::new(io), service));
        let parts = answer(connection, &activity, stopped.as_mut(), overdue.as_mut()).await;
        let Some(parts) = parts else {
            return;
        };
        (io, service) = take_apart(parts);
        let stream = io.get_ref();
        if !parked::until_bytes(stream, stopped.as_mut(), overdue.as_mut()).await {
            return;
        }
    }
}

/// The connection's routes, for `peer`, telling `activity` when a request
/// is being answered.
fn service<S: TokenSource>(
    front: Arc<Front<S>>,
    peer: Arc<Peer>,
    activity: Arc<Activity>,
) -> impl HttpService<Incoming, ResBody = Full<Bytes>, Error = Infallible, Future: Send> + Unpin + Send
{
    // One handle of the connection's own per request: cloning `front`
    // itself would write to a count every connection's requests share.
    let connection = Arc::new((front, peer, activity));
    service_fn(move |request| {
        let connection = Arc::clone(&connection);
        async move {
            let (front, peer, activity) = &*connection;
            activity.request_started();
            let response = front.respond(request, peer).await;
            activity.request_finished();
            Ok::<_, Infallible>(response)
        }
    })
}

/// The stream and service of a connection hyper let go of, with the bytes
/// it had read but not parsed put back; hyper's buffers are freed.
fn take_apart<S>(parts: Parts<Io, S>) -> (Watched<UnixStream>, S) {
    let mut io = parts.io.into_inner();
    io.replay(&parts.read_buf);
    (io, parts.service)
}

/// Serves requests on `connection` until it ends (`None`) or is to be
/// parked, when it is taken apart.
async fn answer<S>(
    mut connection: Box<Connection<Io, S>>,
    activity: &Activity,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
    mut overdue: Pin<&mut impl Future<Output = ()>>,
) -> Option<Parts<Io, S>>
where
    S: HttpService<Incoming, ResBody = Full<Bytes>, Error = Infallible> + Unpin,
{
    let mut stopping = false;
    let park = tokio::time::sleep(parked::PARK_AFTER);
    tokio::pin!(park);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped, if !stopping => {
                if activity.is_fresh() {
                    // Nothing asked yet: nothing in flight to finish.
                    return None;
                }
                stopping = true;
                Pin::new(&mut *connection).graceful_shutdown();
            }
            ended = &mut *connection => {
                if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                }
                return None;
            }
            // Polled after the connection, so only while hyper waits.
            () = &mut park, if !stopping => {
                if parked::is_due(activity, park.as_mut()) {
                    return Some(connection.into_parts());
                }
            }
            () = &mut overdue => {
                tracing::debug!("closing a connection that overstayed its deadline");
                return None;
            }
        }
    }
}
