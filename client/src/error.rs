//! What can go wrong asking the agent, typed so callers can react.

use std::time::Duration;

use serde::Deserialize;

/// An RFC 9457 problem document returned by the agent.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// Stable identifier of the failure, e.g. `urn:access-token-agent:problem:not-granted`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    /// What went wrong and what to do about it.
    #[serde(default)]
    pub detail: String,
}

/// A failed token request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent refused: this caller's grants do not cover the issuer and app (403).
    #[error("not granted: {}", .0.detail)]
    NotGranted(Problem),
    /// The agent does not sign for this issuer (404).
    #[error("unknown issuer: {}", .0.detail)]
    UnknownIssuer(Problem),
    /// The request was malformed (400).
    #[error("bad request: {}", .0.detail)]
    BadRequest(Problem),
    /// The agent is up but cannot sign now: HSM unavailable or overloaded (503).
    #[error("agent unavailable: {}", .problem.detail)]
    Unavailable {
        problem: Problem,
        retry_after: Option<Duration>,
    },
    /// Any other problem status.
    #[error("agent answered {}: {}", .0.status, .0.detail)]
    Other(Problem),
    /// The socket could not be reached: the agent is not running, or the
    /// path or its permissions are wrong.
    #[error("cannot reach the agent at {socket}: {source}")]
    Unreachable {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent's answer was not what the protocol says.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
}

impl Error {
    /// Builds the error for a problem answer.
    pub fn from_problem(problem: Problem, retry_after: Option<Duration>) -> Error {
        match problem.status {
            400 => Error::BadRequest(problem),
            403 => Error::NotGranted(problem),
            404 => Error::UnknownIssuer(problem),
            503 => Error::Unavailable {
                problem,
                retry_after,
            },
            _ => Error::Other(problem),
        }
    }

    /// The agent's problem document, when the agent answered with one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::NotGranted(p)
            | Error::UnknownIssuer(p)
            | Error::BadRequest(p)
            | Error::Other(p) => Some(p),
            Error::Unavailable { problem, .. } => Some(problem),
            Error::Unreachable { .. } | Error::Protocol(_) => None,
        }
    }

    /// Whether trying again later may succeed (503, or the agent restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Unreachable { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}
