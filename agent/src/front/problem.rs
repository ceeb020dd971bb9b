//! RFC 9457 problem details: every failure the socket answers with, each
//! with a stable `type` URI that callers may match on.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// Prefix of every problem `type`; the short name follows it.
pub const TYPE_PREFIX: &str = "urn:access-token-agent:problem:";

/// Seconds a caller is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The kinds of failure, one `type` URI each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The query is malformed, has an unknown parameter or an invalid value;
    /// or the request is not HTTP/1.1 the agent can read.
    BadRequest,
    /// The request line and headers are over `server.max_header_bytes`.
    HeadTooLarge,
    /// A GET came with a body.
    BodyNotAllowed,
    /// `issuer` or `app` was omitted but the caller's grants do not determine it.
    ParameterRequired,
    /// No grant lets this peer have the token asked for.
    NotGranted,
    /// The request's Kubernetes service-account token was refused: not
    /// verified, or not the calling pod's.
    KubernetesTokenRefused,
    /// The issuer is not configured on this agent.
    UnknownIssuer,
    /// The HSM or the issuer's key cannot be used right now.
    HsmUnavailable,
    /// `[audit] required` is set and the audit file cannot take lines.
    AuditUnavailable,
    /// Too many signatures are waiting.
    Overloaded,
    /// The agent is not ready (`/readyz`).
    NotReady,
    /// The connection cap is reached.
    TooManyConnections,
    /// No such route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
}

impl ProblemKind {
    /// The last part of the `type` URI; also the metrics and audit reason.
    pub fn short_name(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "bad-request",
            ProblemKind::HeadTooLarge => "head-too-large",
            ProblemKind::BodyNotAllowed => "body-not-allowed",
            ProblemKind::ParameterRequired => "parameter-required",
            ProblemKind::NotGranted => "not-granted",
            ProblemKind::KubernetesTokenRefused => "kubernetes-token-refused",
            ProblemKind::UnknownIssuer => "unknown-issuer",
            ProblemKind::HsmUnavailable => "hsm-unavailable",
            ProblemKind::AuditUnavailable => "audit-unavailable",
            ProblemKind::Overloaded => "overloaded",
            ProblemKind::NotReady => "not-ready",
            ProblemKind::TooManyConnections => "too-many-connections",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::BadRequest
            | ProblemKind::BodyNotAllowed
            | ProblemKind::ParameterRequired => StatusCode::BAD_REQUEST,
            ProblemKind::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProblemKind::NotGranted | ProblemKind::KubernetesTokenRefused => StatusCode::FORBIDDEN,
            ProblemKind::UnknownIssuer | ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::HsmUnavailable
            | ProblemKind::AuditUnavailable
            | ProblemKind::Overloaded
            | ProblemKind::NotReady
            | ProblemKind::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "Bad request",
            ProblemKind::HeadTooLarge => "Request head too large",
            ProblemKind::BodyNotAllowed => "Request body not allowed",
            ProblemKind::ParameterRequired => "Issuer or app required",
            ProblemKind::NotGranted => "Not granted",
            ProblemKind::KubernetesTokenRefused => "Kubernetes token refused",
            ProblemKind::UnknownIssuer => "Unknown issuer",
            ProblemKind::HsmUnavailable => "HSM unavailable",
            ProblemKind::AuditUnavailable => "Audit file unavailable",
            ProblemKind::Overloaded => "Overloaded",
            ProblemKind::NotReady => "Not ready",
            ProblemKind::TooManyConnections => "Too many connections",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
        }
    }

    /// Whether the caller is told to come back after [`RETRY_AFTER_SECONDS`].
    fn retry_after(self) -> bool {
        matches!(
            self,
            ProblemKind::Overloaded | ProblemKind::TooManyConnections
        )
    }
}

/// One failure: its kind and a detail telling the caller what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
        }
    }

    /// The `application/problem+json` body.
    pub fn body(&self) -> Vec<u8> {
        let body = Body {
            type_uri: format!("{TYPE_PREFIX}{}", self.kind.short_name()),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
        };
        serde_json::to_vec(&body).expect("a problem body always serialises")
    }

    /// The HTTP response, with `Retry-After` or `Allow` where the kind needs it.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body())));
        *response.status_mut() = self.kind.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.kind.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if self.kind == ProblemKind::MethodNotAllowed {
            headers.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        if self.kind == ProblemKind::BodyNotAllowed {
            // The unread body would otherwise be taken for the next request.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// The whole HTTP/1.1 response as bytes, for answering a connection
    /// that is closed without being served (over the connection cap, or a
    /// request hyper could not read).
    pub fn closing_response_bytes(&self) -> Vec<u8> {
        let body = self.body();
        let status = self.kind.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if self.kind.retry_after() {
            out.push_str(&format!("retry-after: {RETRY_AFTER_SECONDS}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(problem: &Problem) -> serde_json::Value {
        serde_json::from_slice(&problem.body()).unwrap()
    }

    #[test]
    fn body_has_the_rfc_9457_members() {
        let problem = Problem::new(ProblemKind::NotGranted, "ask for a grant");
        let body = parsed(&problem);
        assert_eq!(
            body["type"], "urn:access-token-agent:problem:not-granted",
            "{body}"
        );
        assert_eq!(body["title"], "Not granted");
        assert_eq!(body["status"], 403);
        assert_eq!(body["detail"], "ask for a grant");
        assert_eq!(body.as_object().unwrap().len(), 4);
    }

    #[test]
    fn detail_is_escaped_as_json() {
        let problem = Problem::new(ProblemKind::BadRequest, "value \"a\\b\" is bad\n");
        assert_eq!(parsed(&problem)["detail"], "value \"a\\b\" is bad\n");
    }

    #[test]
    fn every_kind_has_a_distinct_type_and_an_error_status() {
        let kinds = [
            ProblemKind::BadRequest,
            ProblemKind::HeadTooLarge,
            ProblemKind::BodyNotAllowed,
            ProblemKind::ParameterRequired,
            ProblemKind::NotGranted,
            ProblemKind::KubernetesTokenRefused,
            ProblemKind::UnknownIssuer,
            ProblemKind::HsmUnavailable,
            ProblemKind::Overloaded,
            ProblemKind::NotReady,
            ProblemKind::TooManyConnections,
            ProblemKind::NotFound,
            ProblemKind::MethodNotAllowed,
        ];
        let mut names: Vec<_> = kinds.iter().map(|k| k.short_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len());
        for kind in kinds {
            let status = kind.status().as_u16();
            assert!((400..600).contains(&status), "{kind:?} has {status}");
        }
    }

    #[test]
    fn response_carries_content_type_and_retry_after() {
        let response = Problem::new(ProblemKind::Overloaded, "wait").response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let not_found = Problem::new(ProblemKind::NotFound, "no").response();
        assert!(not_found.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn method_not_allowed_names_the_allowed_method() {
        let response = Problem::new(ProblemKind::MethodNotAllowed, "use GET").response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[ALLOW], "GET");
    }

    #[test]
    fn closing_response_is_complete_http() {
        let problem = Problem::new(ProblemKind::TooManyConnections, "later");
        let bytes = problem.closing_response_bytes();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], 503);
    }
}
