//! The hostile payloads: every truncation of a valid request, random and
//! mutated ones from a seeded PRNG, and a list of specials aimed at the
//! parser (huge lines and headers, bad encodings, absurd lengths and
//! chunking, other protocols).

const VALID: &[u8] =
    b"GET /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\nAccept: application/jwt\r\n\r\n";

/// One payload and whether a token may be its answer (it may be, or may
/// have become, a valid request).
pub(crate) struct Payload {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) may_succeed: bool,
}

fn payload(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Payload {
    Payload {
        name: name.into(),
        bytes: bytes.into(),
        may_succeed: false,
    }
}

/// xorshift64*: small, and the same sequence on every machine.
pub(crate) struct Random(pub(crate) u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub(crate) fn truncations() -> Vec<Payload> {
    (1..VALID.len())
        .map(|n| payload(format!("the first {n} bytes of a request"), &VALID[..n]))
        .collect()
}

pub(crate) fn random(rng: &mut Random, count: usize) -> Vec<Payload> {
    (0..count)
        .map(|i| {
            let len = 1 + rng.below(2048);
            payload(format!("random #{i} ({len} bytes)"), rng.bytes(len))
        })
        .collect()
}

/// A valid request with a few bytes flipped, inserted or removed.
pub(crate) fn mutated(rng: &mut Random, count: usize) -> Vec<Payload> {
    (0..count)
        .map(|i| {
            let mut bytes = VALID.to_vec();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = rng.next() as u8,
                    1 => bytes.insert(at, rng.next() as u8),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            Payload {
                name: format!("mutated #{i}"),
                bytes,
                may_succeed: true,
            }
        })
        .collect()
}

fn request_with(head: &str, rest: &[u8]) -> Vec<u8> {
    [head.as_bytes(), rest].concat()
}

pub(crate) fn specials() -> Vec<Payload> {
    let get = "GET /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\n";
    let big = "a".repeat(100_000);
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut list = vec![
        payload(
            "a 100 kB request line",
            format!("GET /v1/token?issuer={big} HTTP/1.1\r\nHost: agent\r\n\r\n"),
        ),
        payload("a 100 kB header", format!("{get}X-Big: {big}\r\n\r\n")),
        payload("10,000 headers", format!("{get}{many_headers}\r\n")),
        payload(
            "a 100 kB method",
            format!("{big} /v1/token HTTP/1.1\r\n\r\n"),
        ),
        payload("10,000 empty lines", "\r\n".repeat(10_000)),
        payload(
            "a header without a colon",
            format!("{get}NoColonHere\r\n\r\n"),
        ),
        payload(
            "a header folded onto the next line",
            format!("{get}X-Fold: a\r\n  b\r\n\r\n"),
        ),
        payload(
            "invalid UTF-8 in the path",
            request_with("GET /v1/tok", b"\xff\xfeen HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        payload(
            "invalid UTF-8 in the query",
            request_with(
                "GET /v1/token?issuer=",
                b"\xc3\x28 HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
        ),
        payload(
            "percent-encoded invalid UTF-8",
            "GET /v1/token?issuer=%ff%fe&app=%c3%28 HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        payload(
            "a NUL in the path",
            request_with("GET /v1/to", b"\0ken HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
        payload(
            "a NUL in a header",
            request_with(get, b"X-Nul: a\0b\r\n\r\n"),
        ),
        payload(
            "an absurd Content-Length",
            format!("{get}Content-Length: 99999999999999999999999999\r\n\r\n"),
        ),
        payload(
            "a negative Content-Length",
            format!("{get}Content-Length: -1\r\n\r\n"),
        ),
        payload(
            "a list as Content-Length",
            format!("{get}Content-Length: 1, 2\r\n\r\nab"),
        ),
        payload(
            "two different Content-Lengths",
            format!("{get}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ),
        payload(
            "a Content-Length of 1 GB and 3 bytes",
            format!("{get}Content-Length: 1000000000\r\n\r\nabc"),
        ),
        payload(
            "a chunked body on GET",
            format!("{get}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ),
        payload(
            "a chunk size past 64 bits",
            format!("{get}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nx\r\n"),
        ),
        payload(
            "a 100 kB chunk extension",
            format!("{get}Transfer-Encoding: chunked\r\n\r\n1;{big}\r\nx\r\n0\r\n\r\n"),
        ),
        payload(
            "chunked and Content-Length together",
            format!("{get}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        ),
        payload(
            "gzip, chunked",
            format!("{get}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ),
        payload(
            "an unknown transfer coding",
            format!("{get}Transfer-Encoding: bogus\r\n\r\n"),
        ),
        payload(
            "chunked without a body",
            format!("{get}Transfer-Encoding: chunked\r\n\r\n"),
        ),
        payload(
            "Expect: 100-continue",
            format!("{get}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
        ),
        payload("the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        payload(
            "HTTP/2 prior knowledge frames",
            request_with(
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                &[0, 0, 0x12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x64],
            ),
        ),
        payload(
            "an HTTP/9.9 request",
            "GET /healthz HTTP/9.9\r\nHost: a\r\n\r\n",
        ),
        payload("an HTTP/0.9 request", "GET /healthz\r\n\r\n"),
        payload(
            "CONNECT",
            "CONNECT agent:443 HTTP/1.1\r\nHost: agent:443\r\n\r\n",
        ),
        payload("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        payload(
            "HEAD on the token route",
            "HEAD /v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        payload(
            "POST with a body",
            "POST /v1/token HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        ),
        payload(
            "a path of 5,000 slashes",
            format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", "/".repeat(5000)),
        ),
        payload(
            "dot segments",
            "GET /v1/../v1/./token?issuer=ttd&app=a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        payload(
            "a query of 1,000 parameters",
            format!(
                "GET /v1/token?{} HTTP/1.1\r\nHost: a\r\n\r\n",
                "x=1&".repeat(1000)
            ),
        ),
        payload(
            "a parameter given twice",
            "GET /v1/token?issuer=ttd&issuer=ttd&app=a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ];
    for (name, bytes) in [
        ("invalid UTF-8 in Accept", request_with(get, b"Accept: \xff\xfe application/jwt\r\n\r\n")),
        ("bare LF line ends", b"GET /v1/token?issuer=ttd&app=a HTTP/1.1\nHost: agent\n\n".to_vec()),
        ("an absolute-form target", b"GET http://agent/v1/token?issuer=ttd&app=a HTTP/1.1\r\nHost: agent\r\n\r\n".to_vec()),
        ("HTTP/1.0 without Host", b"GET /v1/token?issuer=ttd&app=a HTTP/1.0\r\n\r\n".to_vec()),
        ("a fragment", b"GET /v1/token?issuer=ttd&app=a#frag HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("an upgrade to h2c", format!("{get}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n").into_bytes()),
        ("an upgrade to websocket", format!("{get}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").into_bytes()),
        ("1,000 pipelined requests", VALID.repeat(1000)),
    ] {
        list.push(Payload {
            name: name.into(),
            bytes,
            may_succeed: true,
        });
    }
    list
}
