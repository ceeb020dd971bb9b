//! The async client: token requests with bounded retries and an optional
//! in-process cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::connection::{Connections, Response};
use crate::kubernetes::TokenFile;
use crate::{Error, Problem, DEFAULT_SOCKET, SOCKET_ENV};

/// How long one attempt may wait for the agent's answer, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A token from the agent. Its `Debug` form leaves the token out, so that
/// `?token` in a log line does not leak a bearer credential.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct Token {
    /// The compact JWS: the value of the `PlatformAccessToken` header.
    pub token: String,
    /// Thumbprint of the certificate that signed it.
    pub kid: String,
    /// The issuer the token is for (the `iss` claim).
    pub issuer: String,
    /// Empty when the token carries no app claim.
    #[serde(default)]
    pub app: String,
    /// The token's `exp`, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("app", &self.app)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What the agent grants this caller (`GET /v1/grants`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Grants {
    pub uid: u32,
    pub gid: u32,
    pub grants: Vec<Grant>,
}

/// One issuer and the apps this caller may have tokens for (`*` = any).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub issuer: String,
    pub apps: Vec<String>,
}

/// Bounded retry with exponential backoff, for 503 answers and for a socket
/// that is missing or refuses connections while the agent restarts. Other
/// failures (not granted, unknown issuer, bad request) are returned at once.
///
/// The default makes 7 attempts, waiting 50 ms, 100 ms, 200 ms … 1.6 s in
/// between: about 3 s in all, enough for `systemctl restart`. A `Retry-After`
/// from the agent replaces the computed wait, up to `max_delay`.
///
/// ```
/// use std::time::Duration;
/// use access_token_client::{Client, Retry};
///
/// // Give up after one second or so, e.g. in a health check.
/// let client = Client::new("/run/access-token-agent/agent.sock").with_retry(Retry {
///     attempts: 4,
///     first_delay: Duration::from_millis(100),
///     max_delay: Duration::from_millis(500),
/// });
/// # let _ = client;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included; 1 disables retrying.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub first_delay: Duration,
    /// No single wait is longer, whatever Retry-After says.
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 7,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt + 1` (the first retry follows
    /// attempt 1), unless the agent's `retry_after` says otherwise.
    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .first_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        retry_after.unwrap_or(doubled).min(self.max_delay)
    }
}

/// Client for the agent's socket. Cheap to clone; clones share connections
/// and the cache. Needs a Tokio runtime; code without one uses
/// [`crate::blocking::Client`].
///
/// Connections are kept alive and reused, so a long-lived client costs one
/// connection however many tokens it asks for; create it once and share it.
#[derive(Clone)]
pub struct Client {
    connections: Arc<Connections>,
    retry: Retry,
    timeout: Duration,
    cache: Option<Arc<Cache>>,
    /// The pod's projected service-account token, sent with token and
    /// grant requests; `None` sends none.
    kubernetes_token: Option<TokenFile>,
}

/// Tokens kept in process until `expires_at - margin`.
struct Cache {
    margin: Duration,
    tokens: Mutex<HashMap<(String, String), Token>>,
}

impl Client {
    /// A client for the agent listening on `socket`. It sends the pod's
    /// projected service-account token from
    /// [`DEFAULT_KUBERNETES_TOKEN_FILE`](crate::DEFAULT_KUBERNETES_TOKEN_FILE)
    /// whenever that file exists ([`Client::with_kubernetes_token_file`]).
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            connections: Arc::new(Connections::new(socket.into())),
            retry: Retry::default(),
            timeout: DEFAULT_TIMEOUT,
            cache: None,
            kubernetes_token: Some(TokenFile::default_path()),
        }
    }

    /// A client for `$ACCESS_TOKEN_AGENT_SOCKET`, else `/run/access-token-agent/agent.sock`.
    pub fn from_env() -> Client {
        let socket = std::env::var_os(SOCKET_ENV).unwrap_or_else(|| DEFAULT_SOCKET.into());
        Client::new(socket)
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: Retry) -> Client {
        self.retry = retry;
        self
    }

    /// Replaces how long one attempt waits for the agent's answer
    /// ([`DEFAULT_TIMEOUT`]); an attempt that runs out gives [`Error::Timeout`]
    /// and is not retried.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends the Kubernetes service-account token in `path` as
    /// `Authorization: Bearer …` with each token and grants request, in
    /// place of the default file: the agent then knows the pod's namespace
    /// and service account, which uid and gid do not tell in a cluster. The
    /// file is read again for each request, so the kubelet's renewals are
    /// sent as they come; a missing or empty file is
    /// [`Error::KubernetesToken`], which names the file but never shows
    /// its content. `None` sends no token, even where the default file exists.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), access_token_client::Error> {
    /// let client = access_token_client::Client::from_env()
    ///     .with_kubernetes_token_file(Some("/var/run/secrets/agent/token".into()));
    /// let token = client.token(Some("ttd"), Some("my-app")).await?;
    /// # let _ = token;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_kubernetes_token_file(mut self, path: Option<PathBuf>) -> Client {
        self.kubernetes_token = path.map(TokenFile::required);
        self
    }

    /// The service-account token file this client sends from (when it
    /// exists, for the default), if any.
    pub fn kubernetes_token_file(&self) -> Option<&std::path::Path> {
        self.kubernetes_token.as_ref().map(TokenFile::path)
    }

    /// Keeps tokens in process and hands them out again until `margin`
    /// before their `expires_at`; after that the next call asks the agent.
    /// The agent caches too; this saves the round trip. Choose a margin
    /// that covers the time a token spends on its way to Platform and the
    /// clock skew (Platform allows 10 s); 30 s suits the usual 300 s tokens.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn example() -> Result<(), access_token_client::Error> {
    /// let client = access_token_client::Client::from_env().with_cache(Duration::from_secs(30));
    /// let first = client.token(Some("ttd"), Some("my-app")).await?;
    /// let again = client.token(Some("ttd"), Some("my-app")).await?; // no request
    /// assert_eq!(first, again);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_cache(mut self, margin: Duration) -> Client {
        self.cache = Some(Arc::new(Cache {
            margin,
            tokens: Mutex::new(HashMap::new()),
        }));
        self
    }

    /// A token for `issuer` and `app`. Either may be `None` when this
    /// caller's grants allow exactly one issuer and app. Retried as
    /// [`Retry`] says; failures carry the agent's problem ([`Error::problem`]).
    pub async fn token(&self, issuer: Option<&str>, app: Option<&str>) -> Result<Token, Error> {
        let key = (
            issuer.unwrap_or("").to_owned(),
            app.unwrap_or("").to_owned(),
        );
        if let Some(token) = self.cache.as_ref().and_then(|cache| cache.get(&key)) {
            return Ok(token);
        }
        let token: Token = self.get_json(&token_path(issuer, app)).await?;
        if let Some(cache) = &self.cache {
            cache.put(key, token.clone());
        }
        Ok(token)
    }

    /// Whether the agent is ready to sign (`GET /readyz`): `Ok(())`, or
    /// [`Error::Unavailable`] with the reason. Asked once, without retries:
    /// it reports the state as it is now. No service-account token is sent:
    /// readiness is the same for everyone.
    pub async fn ready(&self) -> Result<(), Error> {
        self.attempt("/readyz", None).await.map(|_| ())
    }

    /// What the agent grants this caller.
    pub async fn grants(&self) -> Result<Grants, Error> {
        self.get_json("/v1/grants").await
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &std::path::Path {
        self.connections.socket()
    }

    /// `GET path` as JSON, with the caller's service-account token, retried
    /// while the failure is transient; each attempt reads the token file
    /// again, so one renewed meanwhile is the one sent.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let mut attempt = 1;
        let body = loop {
            let authorization = match &self.kubernetes_token {
                Some(file) => file.authorization()?,
                None => None,
            };
            match self.attempt(path, authorization.as_ref()).await {
                Ok(body) => break body,
                Err(error) if error.is_transient() && attempt < self.retry.attempts => {
                    tokio::time::sleep(self.retry.wait(attempt, retry_after(&error))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        serde_json::from_slice(&body).map_err(|e| Error::Protocol(format!("{path}: {e}")))
    }

    /// One `GET path` within the timeout: the body of a 2xx answer.
    async fn attempt(
        &self,
        path: &str,
        authorization: Option<&hyper::header::HeaderValue>,
    ) -> Result<bytes::Bytes, Error> {
        let request = self.connections.get(path, authorization);
        match tokio::time::timeout(self.timeout, request).await {
            Ok(response) => check_status(response?),
            Err(_) => Err(Error::Timeout {
                socket: self.socket().display().to_string(),
                after: self.timeout,
            }),
        }
    }
}

impl Cache {
    fn get(&self, key: &(String, String)) -> Option<Token> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let token = tokens.get(key)?;
        let fresh_until = token.expires_at - self.margin.as_secs() as i64;
        (unix_now() < fresh_until).then(|| token.clone())
    }

    fn put(&self, key: (String, String), token: Token) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        // Expired entries go, so apps asked for once do not pile up.
        let now = unix_now();
        tokens.retain(|_, kept| kept.expires_at > now);
        tokens.insert(key, token);
    }
}

fn retry_after(error: &Error) -> Option<Duration> {
    match error {
        Error::Unavailable { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// The body of a 2xx answer, or the problem as an [`Error`].
fn check_status(response: Response) -> Result<bytes::Bytes, Error> {
    if response.status.is_success() {
        return Ok(response.body);
    }
    let retry_after = response
        .headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let problem = serde_json::from_slice::<Problem>(&response.body).unwrap_or_else(|_| Problem {
        kind: String::new(),
        title: response.status.to_string(),
        status: response.status.as_u16(),
        detail: String::from_utf8_lossy(&response.body).into_owned(),
    });
    let problem = Problem {
        status: response.status.as_u16(),
        ..problem
    };
    Err(Error::from_problem(problem, retry_after))
}

/// `/v1/token` with the given parameters, percent-encoded.
fn token_path(issuer: Option<&str>, app: Option<&str>) -> String {
    let mut path = String::from("/v1/token");
    let mut separator = '?';
    for (name, value) in [("issuer", issuer), ("app", app)] {
        if let Some(value) = value {
            path.push(separator);
            path.push_str(name);
            path.push('=');
            percent_encode(value, &mut path);
            separator = '&';
        }
    }
    path
}

fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_path_encodes_parameters() {
        assert_eq!(token_path(None, None), "/v1/token");
        assert_eq!(token_path(Some("ttd"), None), "/v1/token?issuer=ttd");
        assert_eq!(
            token_path(Some("ttd"), Some("my app/ø")),
            "/v1/token?issuer=ttd&app=my%20app%2F%C3%B8"
        );
        assert_eq!(token_path(None, Some("x")), "/v1/token?app=x");
    }

    #[test]
    fn retry_waits_double_up_to_the_cap_and_follow_retry_after() {
        let retry = Retry {
            attempts: 5,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(300),
        };
        let waits: Vec<_> = (1..5).map(|a| retry.wait(a, None).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300]);
        assert_eq!(
            retry.wait(1, Some(Duration::from_millis(120))).as_millis(),
            120
        );
        assert_eq!(retry.wait(1, Some(Duration::from_secs(5))).as_millis(), 300);
        let total: Duration = (1..7).map(|a| Retry::default().wait(a, None)).sum();
        assert!((3..4).contains(&total.as_secs()), "{total:?}");
    }

    #[test]
    fn debug_leaves_the_token_out() {
        let token = Token {
            token: "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0dGQifQ.c2lnbmF0dXJl".into(),
            kid: "C5726728C38CFE6C16988454206B99CA29AE025E".into(),
            issuer: "ttd".into(),
            app: "my-app".into(),
            expires_at: 1_767_225_900,
        };
        let debug = format!("{token:?}");
        assert!(!debug.contains("eyJ"), "{debug}");
        assert!(debug.contains("token: \"<redacted>\""), "{debug}");
        for field in [
            "C5726728C38CFE6C16988454206B99CA29AE025E",
            "\"ttd\"",
            "\"my-app\"",
            "1767225900",
        ] {
            assert!(debug.contains(field), "{field} in {debug}");
        }
    }

    #[test]
    fn cache_serves_until_the_margin() {
        let cache = Cache {
            margin: Duration::from_secs(30),
            tokens: Mutex::new(HashMap::new()),
        };
        let key = ("ttd".to_owned(), "a".to_owned());
        let token = |expires_at| Token {
            token: "t".into(),
            kid: "k".into(),
            issuer: "ttd".into(),
            app: "a".into(),
            expires_at,
        };
        cache.put(key.clone(), token(unix_now() + 300));
        assert!(cache.get(&key).is_some());
        cache.put(key.clone(), token(unix_now() + 20));
        assert!(cache.get(&key).is_none());
    }
}
