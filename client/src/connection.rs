//! Kept-alive HTTP/1.1 connections to the agent over its Unix socket.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::Error;

/// How many idle connections are kept for reuse.
const MAX_IDLE: usize = 8;

/// A response, fully read.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A small pool of open connections to one socket.
pub struct Connections {
    socket: PathBuf,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
}

impl Connections {
    pub fn new(socket: PathBuf) -> Connections {
        Connections {
            socket,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `GET path`, with `authorization` as its `Authorization`
    /// header when given, and reads the whole answer. A reused connection
    /// that the agent has closed meanwhile is replaced by a new one, once.
    pub async fn get(
        &self,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, Error> {
        if let Some(sender) = self.ready_idle().await {
            if let Ok(response) = self.send(sender, path, authorization).await {
                return Ok(response);
            }
        }
        let sender = self.connect().await?;
        self.send(sender, path, authorization).await
    }

    /// An idle connection that can take a request now. Waiting for
    /// readiness matters: right after an answer the connection task may not
    /// yet have marked the connection idle, and `send_request` refuses a
    /// connection that is not ready, which would open a new one every time.
    async fn ready_idle(&self) -> Option<SendRequest<Empty<Bytes>>> {
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
        None
    }

    async fn send(
        &self,
        mut sender: SendRequest<Empty<Bytes>>,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, Error> {
        let mut request = Request::get(path)
            .header(HOST, "access-token-agent")
            .header(ACCEPT, "application/json");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.broken(e))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| self.broken(e))?.to_bytes();
        self.put_idle(sender);
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, Error> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.unreachable(source))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.broken(e))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn take_idle(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Empty<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }

    fn unreachable(&self, source: std::io::Error) -> Error {
        Error::Unreachable {
            socket: self.socket.display().to_string(),
            source,
        }
    }

    /// A connection that broke mid-request counts as unreachable: the agent
    /// went away (restart) or closed an idle connection. An answer that is
    /// not HTTP is a protocol error, not worth retrying.
    fn broken(&self, error: hyper::Error) -> Error {
        if error.is_parse() || error.is_parse_status() {
            return Error::Protocol(format!(
                "{} does not speak HTTP/1.1: {error}",
                self.socket.display()
            ));
        }
        self.unreachable(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            error,
        ))
    }
}
