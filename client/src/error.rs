//! What can go wrong asking the agent, typed so callers can react.

use std::io::ErrorKind;
use std::time::Duration;

use serde::Deserialize;

/// Prefix of every problem `type` the agent sends; a short name follows it.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:access-token-agent:problem:";

/// An RFC 9457 problem document returned by the agent.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// Stable identifier of the failure, e.g. `urn:access-token-agent:problem:not-granted`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    /// The HTTP status the problem came with.
    #[serde(default)]
    pub status: u16,
    /// What went wrong and what to do about it.
    #[serde(default)]
    pub detail: String,
}

impl Problem {
    /// The `type` without [`PROBLEM_TYPE_PREFIX`], e.g. `not-granted`,
    /// `unknown-issuer`, `hsm-unavailable`: the part to match on.
    pub fn short_name(&self) -> &str {
        self.kind
            .strip_prefix(PROBLEM_TYPE_PREFIX)
            .unwrap_or(&self.kind)
    }
}

/// A failed request to the agent.
///
/// ```no_run
/// use access_token_client::{Client, Error};
/// # async fn example(client: Client) {
/// match client.token(Some("ttd"), Some("my-app")).await {
///     Ok(token) => println!("expires at {}", token.expires_at),
///     Err(Error::NotGranted(problem)) => eprintln!("ask the operator: {}", problem.detail),
///     Err(error) => match error.problem() {
///         Some(problem) => eprintln!("{} ({})", problem.detail, problem.short_name()),
///         None => eprintln!("{error}"),
///     },
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent refused: this caller's grants do not cover the issuer and app (403).
    #[error("not granted: {}", .0.detail)]
    NotGranted(Problem),
    /// The agent does not sign for this issuer (404 `unknown-issuer`).
    #[error("unknown issuer: {}", .0.detail)]
    UnknownIssuer(Problem),
    /// The request was malformed, or `issuer`/`app` was left out where the
    /// grants do not decide it (400).
    #[error("bad request: {}", .0.detail)]
    BadRequest(Problem),
    /// The agent is up but cannot sign now: HSM unavailable, not ready, or
    /// overloaded (503). Retried before it is returned.
    #[error("agent unavailable: {}", .problem.detail)]
    Unavailable {
        problem: Problem,
        /// The agent's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Any other problem status.
    #[error("agent answered {}: {}", .0.status, .0.detail)]
    Other(Problem),
    /// The socket could not be reached: the agent is not running or is
    /// restarting, or the path or its permissions are wrong. Retried while
    /// it may be a restart.
    #[error("cannot reach the agent at {socket}: {source}; {}", unreachable_hint(.source.kind()))]
    Unreachable {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent took the request but did not answer in time.
    #[error("the agent at {socket} did not answer within {} s", .after.as_secs_f64())]
    Timeout { socket: String, after: Duration },
    /// The agent's answer was not what the protocol says.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    /// The pod's projected service-account token could not be read, or is
    /// not a token ([`crate::Client::with_kubernetes_token_file`]). The
    /// message names the file, never its content.
    #[error("cannot use the Kubernetes service-account token {path}: {source}")]
    KubernetesToken {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Builds the error for a problem answer.
    pub fn from_problem(problem: Problem, retry_after: Option<Duration>) -> Error {
        match problem.status {
            400 => Error::BadRequest(problem),
            403 => Error::NotGranted(problem),
            // Only this type: a 404 for a path the agent does not serve is
            // a client or version mismatch, not an issuer the agent lacks.
            404 if problem.short_name() == "unknown-issuer" => Error::UnknownIssuer(problem),
            503 => Error::Unavailable {
                problem,
                retry_after,
            },
            _ => Error::Other(problem),
        }
    }

    /// The agent's problem document, when the agent answered with one:
    /// its `type` ([`Problem::short_name`]) and `detail`.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::NotGranted(p)
            | Error::UnknownIssuer(p)
            | Error::BadRequest(p)
            | Error::Other(p) => Some(p),
            Error::Unavailable { problem, .. } => Some(problem),
            Error::Unreachable { .. }
            | Error::Timeout { .. }
            | Error::Protocol(_)
            | Error::KubernetesToken { .. } => None,
        }
    }

    /// Whether trying again shortly may succeed: a 503, or a socket that is
    /// missing, refusing or closing while the agent restarts.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Unreachable { source, .. } => matches!(
                source.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::NotFound
                    | ErrorKind::ConnectionReset
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
                    // A full listen backlog: the agent is busy or starting.
                    | ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

/// What an unreachable socket most likely means, and what to check.
fn unreachable_hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => {
            "no socket there: is the agent running, and is this the path it serves? \
             (set ACCESS_TOKEN_AGENT_SOCKET)"
        }
        ErrorKind::ConnectionRefused => "nothing accepts on it: the agent is not running",
        ErrorKind::PermissionDenied => {
            "this user may not open it: the socket's group (server.socket_group) must include you"
        }
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
            "the agent closed the connection: it is stopping or restarting"
        }
        _ => "check that the agent runs and serves this path",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, kind: &str) -> Problem {
        Problem {
            kind: format!("{PROBLEM_TYPE_PREFIX}{kind}"),
            title: String::new(),
            status,
            detail: "d".into(),
        }
    }

    #[test]
    fn a_404_is_an_unknown_issuer_only_when_the_type_says_so() {
        let unknown = Error::from_problem(problem(404, "unknown-issuer"), None);
        assert!(matches!(unknown, Error::UnknownIssuer(_)), "{unknown:?}");
        let route = Error::from_problem(problem(404, "not-found"), None);
        assert!(matches!(route, Error::Other(_)), "{route:?}");
        assert_eq!(route.problem().unwrap().short_name(), "not-found");
    }

    #[test]
    fn only_503_and_restart_symptoms_are_transient() {
        let unreachable = |kind: ErrorKind| Error::Unreachable {
            socket: "s".into(),
            source: kind.into(),
        };
        assert!(Error::from_problem(problem(503, "overloaded"), None).is_transient());
        assert!(!Error::from_problem(problem(403, "not-granted"), None).is_transient());
        assert!(unreachable(ErrorKind::ConnectionRefused).is_transient());
        assert!(unreachable(ErrorKind::NotFound).is_transient());
        assert!(!unreachable(ErrorKind::PermissionDenied).is_transient());
    }
}
