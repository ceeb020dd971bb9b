//! The routes: `GET /v1/token`, `/v1/grants`, `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::audit::Record;
use super::kubernetes::{PodIdentity, Rejection};
use super::peer::Peer;
use super::policy::{Refusal, Target};
use super::problem::{Problem, ProblemKind};
use super::query;
use super::Front;
use crate::issue::{Found, IssueError, Issued, TokenSource};

/// Media type of a bare compact JWS (RFC 7519).
const JWT: &str = "application/jwt";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Token,
    Grants,
    Health,
    Ready,
    Metrics,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/v1/token" => Some(Route::Token),
            "/v1/grants" => Some(Route::Grants),
            "/healthz" => Some(Route::Health),
            "/readyz" => Some(Route::Ready),
            "/metrics" => Some(Route::Metrics),
            _ => None,
        }
    }
}

/// The 200 body of `GET /v1/grants`: what the caller itself may have.
#[derive(Serialize)]
struct GrantsBody<'a> {
    uid: u32,
    gid: u32,
    grants: Vec<GrantBody<'a>>,
}

#[derive(Serialize)]
struct GrantBody<'a> {
    issuer: &'a str,
    /// `["*"]` for any app.
    apps: Vec<&'a str>,
}

/// The 200 body of `GET /v1/token`.
#[derive(Serialize)]
struct TokenBody<'a> {
    token: &'a str,
    kid: &'a str,
    issuer: &'a str,
    app: &'a str,
    /// The token's `exp`, Unix seconds.
    expires_at: i64,
}

impl<S: TokenSource> Front<S> {
    /// Answers one request from `peer`. Every answer but a token
    /// request's counts against the uid's `server.refusals_per_uid`.
    pub(super) async fn respond(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let route = Route::of(parts.uri.path());
        let problem = match route {
            None => Some(not_found(parts.uri.path())),
            Some(_) if parts.method != Method::GET => Some(Problem::new(
                ProblemKind::MethodNotAllowed,
                format!("{} takes GET only", parts.uri.path()),
            )),
            Some(_) if !body.is_end_stream() => Some(Problem::new(
                ProblemKind::BodyNotAllowed,
                "GET requests take no body; put the parameters in the query",
            )),
            Some(_) => None,
        };
        drop(body);
        let body_on_token = problem
            .as_ref()
            .is_some_and(|p| p.kind == ProblemKind::BodyNotAllowed);
        match (route, problem) {
            (Some(Route::Token), None) => self.token(&parts, peer).await,
            // A token request, refused and audited as one.
            (Some(Route::Token), Some(problem)) if body_on_token => {
                self.refuse(peer, None, None, None, problem).await
            }
            (route, problem) => self.other(&parts, route, problem, peer).await,
        }
    }

    /// Any answer but a token request's, once the uid's turn has come.
    async fn other(
        &self,
        parts: &Parts,
        route: Option<Route>,
        problem: Option<Problem>,
        peer: &Peer,
    ) -> Response<Full<Bytes>> {
        if self.limits.refusal_turn(peer.uid).await {
            self.metrics.request_paced("other-route");
        }
        match (route, problem) {
            (_, Some(problem)) => problem.response(),
            (Some(Route::Grants), None) => self.grants(parts, peer),
            (Some(Route::Health), None) => {
                plain(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
            }
            (Some(Route::Ready), None) => self.ready(),
            (Some(Route::Metrics), None) => self.metrics_page(peer),
            (Some(Route::Token) | None, None) => unreachable!("answered above"),
        }
    }

    /// `/metrics`, to the uids `server.metrics_uids` names (all without it).
    fn metrics_page(&self, peer: &Peer) -> Response<Full<Bytes>> {
        if let Some(allowed) = &self.config.metrics_uids {
            if !allowed.contains(&peer.uid) {
                return Problem::new(
                    ProblemKind::NotGranted,
                    format!("uid {} may not read /metrics; `server.metrics_uids` names the uids that may", peer.uid),
                )
                .response();
            }
        }
        plain(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            self.metrics.render(),
        )
    }

    /// `GET /v1/token`: parse, judge (the pod's token, then the grants),
    /// the cached token or else the uid's turn and a fresh signature,
    /// audit, answer.
    async fn token(&self, parts: &Parts, peer: &Peer) -> Response<Full<Bytes>> {
        // With `[audit] required`, no token while its line cannot be written.
        if let Some(problem) = self.audit.refusal() {
            return self.refuse(peer, None, None, None, problem).await;
        }
        let query = match query::parse(parts.uri.query()) {
            Ok(query) => query,
            Err(detail) => {
                let detail = format!("{detail} (GET /v1/token?issuer=ISS&app=APP)");
                let problem = Problem::new(ProblemKind::BadRequest, detail);
                return self.refuse(peer, None, None, None, problem).await;
            }
        };
        let (issuer, app) = (query.issuer.as_deref(), query.app.as_deref());
        let pod = match self.pod_of(parts, peer) {
            Ok(pod) => pod,
            Err(rejection) => return self.refuse_token(peer, issuer, app, rejection).await,
        };
        let policy = self.policy();
        let Target { issuer, app } = match policy.resolve(peer, pod.as_ref(), issuer, app) {
            Ok(target) => target,
            Err(refusal) => {
                let problem = refused(refusal, peer, pod.as_ref(), issuer, app);
                return self.refuse(peer, pod.as_ref(), issuer, app, problem).await;
            }
        };
        let issued = match self.source.find(issuer, app) {
            Ok(Found::Cached(issued)) => Ok(issued),
            Ok(Found::Missing(miss)) => {
                if self.limits.miss_turn(peer.uid).await {
                    self.metrics.request_paced("cache-miss");
                }
                self.sign(peer, miss).await
            }
            Ok(Found::Uncached(miss)) => self.sign(peer, miss).await,
            Err(error) => Err(error),
        };
        match issued {
            Ok(issued) => {
                self.metrics.token_issued();
                let record = Record::issued(peer, issuer, app, &issued);
                self.audit.record(&record.for_pod(pod.as_ref()));
                token_response(&issued, issuer, app, wants_jwt(&parts.headers))
            }
            Err(error) => {
                let problem = not_issued(error);
                self.refuse(peer, pod.as_ref(), Some(issuer), Some(app), problem)
                    .await
            }
        }
    }

    /// The pod the request's `Authorization: Bearer` token proves, with
    /// `[kubernetes]`; none without a token, or without the section.
    fn pod_of(&self, parts: &Parts, peer: &Peer) -> Result<Option<PodIdentity>, Rejection> {
        let Some(kubernetes) = self.kubernetes() else {
            return Ok(None);
        };
        let values = parts
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes);
        kubernetes.judge(values, peer.pid, &peer.process().pod)
    }

    /// A token request whose Kubernetes token was refused: 403, with the
    /// reason in the detail and the audit line, never the token.
    async fn refuse_token(
        &self,
        peer: &Peer,
        issuer: Option<&str>,
        app: Option<&str>,
        rejection: Rejection,
    ) -> Response<Full<Bytes>> {
        let problem = Problem::new(
            ProblemKind::KubernetesTokenRefused,
            format!(
                "the Kubernetes service-account token is refused ({}): {}",
                rejection.reason, rejection.detail
            ),
        );
        let record = Record::refused(peer, issuer, app, problem.kind.short_name());
        self.refuse_recorded(peer, record.kubernetes_refused(rejection.reason), problem)
            .await
    }

    /// A fresh signature, once `peer`'s uid may start one.
    async fn sign(&self, peer: &Peer, miss: S::Miss) -> Result<Issued, IssueError> {
        let places = self.source.signing_places();
        let _place = match self.limits.try_signature(peer.uid, places) {
            Some(place) => place,
            None => {
                self.metrics.request_paced("signing");
                self.limits.signature(peer.uid, places).await
            }
        };
        self.source.sign(miss).await
    }

    /// `GET /v1/grants`: what the caller may have; with a pod's token
    /// that verifies, what its pod may have too.
    fn grants(&self, parts: &Parts, peer: &Peer) -> Response<Full<Bytes>> {
        let policy = self.policy();
        let pod = self.pod_of(parts, peer).ok().flatten();
        let grants = policy
            .granted(peer, pod.as_ref())
            .into_iter()
            .map(|(issuer, apps)| GrantBody { issuer, apps })
            .collect();
        let body = GrantsBody {
            uid: peer.uid,
            gid: peer.gid,
            grants,
        };
        let json = serde_json::to_string(&body).expect("a grants body always serialises");
        plain(StatusCode::OK, "application/json", json)
    }

    fn ready(&self) -> Response<Full<Bytes>> {
        let readiness = self.source.readiness().and_then(|()| self.audit.health());
        match (readiness, self.reload_note()) {
            (Ok(()), None) => {
                // Still ready: a warning is for the operator, not the balancer.
                let mut body = String::from("ready\n");
                for warning in self.source.warnings() {
                    body.push_str(&format!("warning: {warning}\n"));
                }
                plain(StatusCode::OK, "text/plain; charset=utf-8", body)
            }
            (signing, note) => {
                let reasons: Vec<String> = [signing.err(), note.map(|n| n.to_string())]
                    .into_iter()
                    .flatten()
                    .collect();
                Problem::new(ProblemKind::NotReady, reasons.join("; ")).response()
            }
        }
    }

    /// A token request that gets no token: counted, audited (with the pod
    /// its token proved, if any), answered; a refusal the client caused
    /// (4xx) once its uid's turn has come.
    async fn refuse(
        &self,
        peer: &Peer,
        pod: Option<&PodIdentity>,
        issuer: Option<&str>,
        app: Option<&str>,
        problem: Problem,
    ) -> Response<Full<Bytes>> {
        let record = Record::refused(peer, issuer, app, problem.kind.short_name());
        self.refuse_recorded(peer, record.for_pod(pod), problem)
            .await
    }

    /// [`Self::refuse`] with the audit line's record made by the caller.
    async fn refuse_recorded(
        &self,
        peer: &Peer,
        record: Record<'_>,
        problem: Problem,
    ) -> Response<Full<Bytes>> {
        self.metrics.token_refused(problem.kind.short_name());
        self.audit.record(&record);
        if problem.kind.status().is_client_error() && self.limits.refusal_turn(peer.uid).await {
            self.metrics.request_paced("refusal");
        }
        problem.response()
    }
}

fn token_response(issued: &Issued, issuer: &str, app: &str, jwt: bool) -> Response<Full<Bytes>> {
    let (content_type, body) = if jwt {
        (
            JWT,
            Bytes::from_owner(SharedToken(Arc::clone(&issued.token))),
        )
    } else {
        let body = TokenBody {
            token: &issued.token,
            kid: &issued.kid,
            issuer,
            app,
            expires_at: issued.expires_at,
        };
        let json = serde_json::to_vec(&body).expect("a token body always serialises");
        ("application/json", Bytes::from(json))
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A bearer credential: no cache on the way may keep it.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A token's bytes as an answer's body: shared with the cache, not copied.
struct SharedToken(Arc<str>);

impl AsRef<[u8]> for SharedToken {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Whether `Accept` names `application/jwt` (parameters such as q ignored).
fn wants_jwt(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let media_type = range.split(';').next().unwrap_or("").trim();
            media_type.eq_ignore_ascii_case(JWT)
        })
}

/// The problem for a policy refusal, telling the caller what to do.
fn refused(
    refusal: Refusal,
    peer: &Peer,
    pod: Option<&PodIdentity>,
    issuer: Option<&str>,
    app: Option<&str>,
) -> Problem {
    let who = match pod {
        Some(pod) => format!(
            "uid {} gid {} in namespace {:?} with service account {:?}",
            peer.uid, peer.gid, pod.namespace, pod.service_account
        ),
        None => format!("uid {} gid {}", peer.uid, peer.gid),
    };
    match refusal {
        Refusal::NotGranted => Problem::new(
            ProblemKind::NotGranted,
            format!(
                "{who} has no grant for {}; ask the agent's operator for a [[grant]] covering it",
                asked_for(issuer, app)
            ),
        ),
        Refusal::IssuerRequired => Problem::new(
            ProblemKind::ParameterRequired,
            "your grants cover more than one issuer; name one: GET /v1/token?issuer=ISS&app=APP",
        ),
        Refusal::AppRequired => Problem::new(
            ProblemKind::ParameterRequired,
            "your grants allow more than one app, or any app, for this issuer; name one with app=APP (app= asks for a token without the app claim)",
        ),
    }
}

fn asked_for(issuer: Option<&str>, app: Option<&str>) -> String {
    match (issuer, app) {
        (Some(issuer), Some("")) => format!("issuer {issuer:?} without an app"),
        (Some(issuer), Some(app)) => format!("issuer {issuer:?} and app {app:?}"),
        (Some(issuer), None) => format!("issuer {issuer:?}"),
        (None, Some(app)) => format!("app {app:?}"),
        (None, None) => "any issuer".into(),
    }
}

/// The problem for a failure of the signing side.
fn not_issued(error: IssueError) -> Problem {
    match error {
        IssueError::UnknownIssuer(issuer) => Problem::new(
            ProblemKind::UnknownIssuer,
            format!("issuer {issuer:?} is not configured on this agent; ask for one of its [[issuer]] names"),
        ),
        IssueError::Unavailable(reason) => Problem::new(
            ProblemKind::HsmUnavailable,
            format!("the HSM cannot sign right now ({reason}); retry later, GET /readyz says when the agent is ready again"),
        ),
        IssueError::Overloaded => Problem::new(
            ProblemKind::Overloaded,
            "too many signing requests are waiting; retry after the Retry-After delay",
        ),
    }
}

/// The 404 for `path`, naming what the agent serves.
fn not_found(path: &str) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!(
            "there is no {:?}; the agent serves GET /v1/token?issuer=ISS&app=APP, /v1/grants, /healthz, /readyz and /metrics",
            short(path)
        ),
    )
}

/// A caller-supplied path, cut short for a message.
fn short(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn accept_application_jwt() {
        assert!(wants_jwt(&accept(&["application/jwt"])));
        assert!(wants_jwt(&accept(&["Application/JWT; q=0.9"])));
        assert!(wants_jwt(&accept(&["application/json, application/jwt"])));
        assert!(wants_jwt(&accept(&["text/html", "application/jwt"])));
        assert!(!wants_jwt(&accept(&[])));
        assert!(!wants_jwt(&accept(&["*/*"])));
        assert!(!wants_jwt(&accept(&["application/json"])));
    }

    #[test]
    fn routes() {
        assert_eq!(Route::of("/v1/token"), Some(Route::Token));
        assert_eq!(Route::of("/v1/token/"), None);
        assert_eq!(Route::of("/metrics"), Some(Route::Metrics));
        assert_eq!(Route::of("/"), None);
    }
}
