//! Raw HTTP/1.1 on the agent's socket, byte for byte, read strictly: what
//! the front's unit tests, the hostile-input and load tests and the fuzz
//! target send, and every answer checked to be a whole, well-formed
//! response.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Where every problem `type` the agent writes begins.
pub const PROBLEM_PREFIX: &str = "urn:access-token-agent:problem:";

/// One response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header called `name` (any case), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The problem `type`'s short name, e.g. `not-granted`, when the body is
    /// a problem document.
    pub fn problem_type(&self) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let uri = json["type"].as_str()?;
        Some(uri.rsplit(':').next().unwrap_or(uri).to_owned())
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {}", self.text()))
    }

    /// The problem `type`'s short name, after checking that this is a whole
    /// problem document: `application/problem+json`, the answer's status,
    /// a `detail`, and a `type` of the agent's.
    pub fn problem(&self) -> String {
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{}",
            self.text()
        );
        let json = self.json();
        assert_eq!(json["status"], self.status, "{json}");
        let detail = json["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "a detail: {json}");
        let kind = json["type"].as_str().unwrap_or_default();
        kind.strip_prefix(PROBLEM_PREFIX)
            .unwrap_or_else(|| panic!("a type of the agent's: {json}"))
            .to_owned()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The token in a 200 answer: the `token` field of a JSON body, or a
    /// bare `application/jwt` body.
    pub fn token(&self) -> Option<String> {
        if self.status != 200 {
            return None;
        }
        let json: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        match json {
            Some(json) => json["token"].as_str().map(str::to_owned),
            None => Some(self.text()).filter(|t| t.split('.').count() == 3),
        }
    }
}

/// What [`parse_reply`] found at the start of a buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A whole response and how many bytes it took.
    Reply(Reply, usize),
    /// The bytes so far are the start of a response.
    Incomplete,
}

/// Parses the response at the start of `buf`. `bodyless` says the request
/// was HEAD, whose answer declares a length but carries no body.
pub fn parse_reply(buf: &[u8], bodyless: bool) -> Result<Parsed, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Incomplete),
        Err(e) => return Err(format!("not an HTTP response ({e}): {:?}", preview(buf))),
    };
    if !matches!(response.version, Some(0 | 1)) {
        return Err(format!("not HTTP/1.x: {:?}", preview(buf)));
    }
    let status = response.code.expect("a complete head has a status");
    let headers: Vec<(String, Vec<u8>)> = response
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let lengths: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_slice())
        .collect();
    if headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Err(format!("a chunked answer: {:?}", preview(buf)));
    }
    let length = match lengths.as_slice() {
        [] if (100..200).contains(&status) || status == 204 || status == 304 => 0,
        [one] => std::str::from_utf8(one)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| format!("a bad content-length: {:?}", preview(buf)))?,
        _ => return Err(format!("no single content-length: {:?}", preview(buf))),
    };
    let length = if bodyless { 0 } else { length };
    if buf.len() < head_len + length {
        return Ok(Parsed::Incomplete);
    }
    let body = buf[head_len..head_len + length].to_vec();
    Ok(Parsed::Reply(
        Reply {
            status,
            headers,
            body,
        },
        head_len + length,
    ))
}

/// Every response in `bytes` (all a connection received); an error if
/// anything in it is not a whole, well-formed response. With `head_sent`,
/// a response may lack the body its length announces (a HEAD answer).
pub fn parse_replies(bytes: &[u8], head_sent: bool) -> Result<Vec<Reply>, String> {
    let readings: &[bool] = if head_sent { &[false, true] } else { &[false] };
    let mut replies = Vec::new();
    let mut rest = bytes;
    'next: while !rest.is_empty() {
        for &bodyless in readings {
            // A reading is right when the next answer or the end follows it.
            if let Parsed::Reply(reply, used) = parse_reply(rest, bodyless)? {
                if rest[used..].is_empty() || rest[used..].starts_with(b"HTTP/") {
                    replies.push(reply);
                    rest = &rest[used..];
                    continue 'next;
                }
            }
        }
        return Err(format!(
            "a cut-off or overlong response: {:?}",
            preview(rest)
        ));
    }
    Ok(replies)
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

/// `GET target` with `Host` and `extra` header lines, kept alive.
pub fn get(target: &str, extra: &[&str]) -> Vec<u8> {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: agent\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// One kept-alive connection that reads answers strictly.
pub struct Connection {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Connection {
    pub async fn connect(socket: &Path) -> std::io::Result<Connection> {
        Ok(Connection::new(UnixStream::connect(socket).await?))
    }

    /// A connection over a stream connected already.
    pub fn new(stream: UnixStream) -> Connection {
        Connection {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends `request` as it is; panics if it cannot be written.
    pub async fn send(&mut self, request: impl AsRef<[u8]>) {
        self.stream
            .write_all(request.as_ref())
            .await
            .expect("write a request");
    }

    /// The next answer, or `None` if the agent closes first; panics on
    /// anything that is not a whole, well-formed answer.
    pub async fn reply(&mut self) -> Option<Reply> {
        self.read_reply().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET target` with `extra` header lines on this connection, and its
    /// answer; panics without one.
    pub async fn get(&mut self, target: &str, extra: &[&str]) -> Reply {
        self.send(get(target, extra)).await;
        self.reply()
            .await
            .unwrap_or_else(|| panic!("closed without answering GET {target}"))
    }

    /// Whether the agent closes the connection within `limit`; what it
    /// sends meanwhile is dropped.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let closed = async {
            let mut chunk = [0u8; 4096];
            while let Ok(1..) = self.stream.read(&mut chunk).await {}
        };
        tokio::time::timeout(limit, closed).await.is_ok()
    }

    /// Sends `request` and reads one answer. `Ok(None)`: the agent closed
    /// the connection without answering. An answer sent before the agent
    /// closed is read even if the request could no longer be written.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Option<Reply>, String> {
        if let Err(e) = self.stream.write_all(request).await {
            match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {}
                _ => return Err(format!("write: {e}")),
            }
        }
        self.read_reply().await
    }

    /// Reads the next answer; `Ok(None)` if the connection closes first.
    pub async fn read_reply(&mut self) -> Result<Option<Reply>, String> {
        loop {
            if let Parsed::Reply(reply, used) = parse_reply(&self.buf, false)? {
                self.buf.drain(..used);
                return Ok(Some(reply));
            }
            let mut chunk = [0u8; 8192];
            let n = match self.stream.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(format!("read: {e}")),
            };
            if n == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(format!("closed mid-answer: {:?}", preview(&self.buf))),
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The status code of a raw HTTP answer read as text.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// The body of a raw HTTP answer read as text.
pub fn body_of(answer: &str) -> &str {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("")
}

/// Writes `request` to a new connection on `socket` and reads until the
/// agent closes it or `timeout` passes.
pub fn raw_exchange(socket: &Path, request: &[u8], timeout: Duration) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to the agent");
    stream
        .set_read_timeout(Some(timeout))
        .expect("set a read timeout");
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// How many bytes written on `stream` its peer has not read yet. On a Unix
/// stream socket what is written waits in the peer's queue, charged to the
/// writer until read (SIOCOUTQ); 0 means the agent has taken in every byte
/// sent so far.
pub fn unread_by_peer(stream: &std::os::unix::net::UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ's number) writes one int through a valid pointer.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    queued as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";

    #[test]
    fn whole_responses_in_a_row() {
        let bytes = [OK, BAD, OK].concat();
        let replies = parse_replies(&bytes, false).unwrap();
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 400, 200]);
        assert_eq!(replies[2].body, b"hello");
    }

    #[test]
    fn cut_off_and_garbage_are_errors() {
        assert!(parse_replies(&OK[..OK.len() - 1], false).is_err());
        assert!(parse_replies(b"garbage\r\n\r\n", false).is_err());
        assert!(parse_replies(&[OK, b"x"].concat(), false).is_err());
        assert!(parse_replies(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            false
        )
        .is_err());
    }

    #[test]
    fn head_answers_may_lack_their_body() {
        let head = b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 9\r\n\r\n";
        let bytes = [&head[..], BAD].concat();
        assert!(parse_replies(&bytes, false).is_err());
        let replies = parse_replies(&bytes, true).unwrap();
        assert_eq!(replies.len(), 2);
        assert!(replies[0].body.is_empty());
        assert_eq!(parse_replies(head, true).unwrap().len(), 1);
    }
}
