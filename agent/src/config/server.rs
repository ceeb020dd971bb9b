//! `[server]`: where and how the socket listens, and its limits.

use std::path::PathBuf;

use serde::Deserialize;

/// The largest `max_connections` accepted.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// The largest `max_signing_per_uid` accepted (tokio's semaphore limit is far above).
const MAX_SIGNING_PER_UID: usize = 1_000_000;

/// `[server]`: where and how the socket listens, and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub socket: PathBuf,
    /// Octal permission bits of a socket the agent binds; never world-writable.
    pub socket_mode: String,
    /// Group that owns a socket the agent binds.
    pub socket_group: Option<String>,
    /// Connections served at once; more get 503 with Retry-After.
    pub max_connections: usize,
    /// Connections one uid may have open at once (at most
    /// `max_connections`); more of its connections get 503, so that one
    /// user's idle keep-alives cannot shut the others out.
    pub max_connections_per_uid: usize,
    /// Fresh signatures one uid may have queued or under way at once; its
    /// further requests that need one wait their turn, so that one user
    /// asking for new app names cannot fill the signing queue.
    pub max_signing_per_uid: usize,
    /// Cache misses (fresh signatures) one uid may cause: past the burst,
    /// spaced at the rate. Not applied with `token.cache = false`, where
    /// every request signs by the operator's choice.
    pub cache_misses_per_uid: PerUidRate,
    /// Requests that get no token one uid may make: refused token requests
    /// (4xx), every other route (`/metrics`, `/readyz`, `/healthz`,
    /// `/v1/grants`, unknown paths) and requests hyper cannot read. Past
    /// the burst, each further one is answered at the rate.
    pub refusals_per_uid: PerUidRate,
    /// The uids that may read `/metrics`; every uid when left out.
    pub metrics_uids: Option<Vec<u32>>,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Time a request head may take to arrive, from its first byte (or
    /// from the connection's start).
    pub header_read_timeout_seconds: f64,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout_seconds: f64,
    /// Time requests in flight get to finish when the agent stops.
    pub shutdown_timeout_seconds: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: PathBuf::from("/run/access-token-agent/agent.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
            max_connections: 1024,
            max_connections_per_uid: 128,
            max_signing_per_uid: 8,
            cache_misses_per_uid: PerUidRate {
                per_second: 50.0,
                burst: 1000,
            },
            refusals_per_uid: PerUidRate {
                per_second: 10.0,
                burst: 100,
            },
            metrics_uids: None,
            max_header_bytes: 8192,
            header_read_timeout_seconds: 10.0,
            idle_timeout_seconds: 60.0,
            shutdown_timeout_seconds: 10.0,
        }
    }
}

impl ServerConfig {
    /// Checks the values; the error names the key and what to write instead.
    pub fn validate(&self) -> Result<(), String> {
        parse_mode(&self.socket_mode)?;
        if self.socket.as_os_str().is_empty() {
            return Err("`server.socket` is empty; set the socket's path".into());
        }
        self.socket_gid()?;
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(format!(
                "`server.max_connections` = {} must be between 1 and {MAX_CONNECTIONS_LIMIT}",
                self.max_connections
            ));
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections_per_uid) {
            return Err(format!(
                "`server.max_connections_per_uid` = {} must be between 1 and {MAX_CONNECTIONS_LIMIT} (above `server.max_connections` it has no effect)",
                self.max_connections_per_uid
            ));
        }
        if !(1..=MAX_SIGNING_PER_UID).contains(&self.max_signing_per_uid) {
            return Err(format!(
                "`server.max_signing_per_uid` = {} must be between 1 and {MAX_SIGNING_PER_UID}",
                self.max_signing_per_uid
            ));
        }
        self.cache_misses_per_uid.validate("cache_misses_per_uid")?;
        self.refusals_per_uid.validate("refusals_per_uid")?;
        if !(1024..=1 << 20).contains(&self.max_header_bytes) {
            return Err(format!(
                "`server.max_header_bytes` = {} must be between 1024 and 1048576",
                self.max_header_bytes
            ));
        }
        for (key, value) in [
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("shutdown_timeout_seconds", self.shutdown_timeout_seconds),
        ] {
            if !(value > 0.0 && value <= 86_400.0) {
                return Err(format!(
                    "`server.{key}` = {value} must be more than 0 and at most 86400 seconds"
                ));
            }
        }
        Ok(())
    }

    /// The gid of `socket_group`, if one is set; the error names the key.
    /// Resolved when the config is checked, so that a group missing on
    /// this host is a config error, not a failure to listen.
    pub fn socket_gid(&self) -> Result<Option<u32>, String> {
        match self.socket_group.as_deref() {
            None => Ok(None),
            Some("") => Err("`server.socket_group` is empty; name a group or leave it out".into()),
            Some(name) => crate::accounts::group_id(name).map(Some).map_err(|why| {
                format!("`server.socket_group` = {name:?}: {why}; create the group or fix the name")
            }),
        }
    }
}

/// A rate per uid with a burst: `{ per_second = 50, burst = 1000 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerUidRate {
    /// The steady rate once the burst is spent.
    pub per_second: f64,
    /// How many may go at once, and again after a quiet time.
    pub burst: u32,
}

impl PerUidRate {
    fn validate(&self, key: &str) -> Result<(), String> {
        if !(self.per_second >= 0.01 && self.per_second <= 1e6) {
            return Err(format!(
                "`server.{key}.per_second` = {} must be between 0.01 and 1000000",
                self.per_second
            ));
        }
        if !(1..=1_000_000).contains(&self.burst) {
            return Err(format!(
                "`server.{key}.burst` = {} must be between 1 and 1000000",
                self.burst
            ));
        }
        Ok(())
    }
}

/// Parses `socket_mode` (octal, e.g. "0660"); world-writable modes are
/// refused because write permission on a socket is what lets a process connect.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => mode,
        _ => {
            return Err(format!(
                "`server.socket_mode` = {text:?} is not an octal permission mode; write it like \"0660\""
            ))
        }
    };
    if mode & 0o002 != 0 {
        return Err(format!(
            "`server.socket_mode` = {text:?} lets every local user connect; use \"0660\" with `server.socket_group`"
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0666").unwrap_err().contains("every local user"));
        assert!(parse_mode("0777").unwrap_err().contains("every local user"));
        for bad in ["", "rw-rw----", "0680", "01660", "-1"] {
            let err = parse_mode(bad).unwrap_err();
            assert!(err.starts_with("`server.socket_mode`"), "{bad}: {err}");
        }
    }

    fn parse(text: &str) -> Result<ServerConfig, String> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse("").unwrap();
        assert_eq!(config.socket_mode, "0660");
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.max_connections_per_uid, 128);
        assert_eq!(config.max_signing_per_uid, 8);
        assert_eq!(config.cache_misses_per_uid.burst, 1000);
        assert_eq!(config.refusals_per_uid.per_second, 10.0);
        assert_eq!(config.header_read_timeout_seconds, 10.0);
    }

    #[test]
    fn whole_and_fractional_seconds() {
        let config =
            parse("idle_timeout_seconds = 5\nheader_read_timeout_seconds = 0.25\n").unwrap();
        assert_eq!(config.idle_timeout_seconds, 5.0);
        assert_eq!(config.header_read_timeout_seconds, 0.25);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("socket_mode = \"0666\"", "`server.socket_mode`"),
            ("max_connections = 0", "`server.max_connections` = 0"),
            (
                "max_connections_per_uid = 0",
                "`server.max_connections_per_uid` = 0",
            ),
            (
                "max_signing_per_uid = 0",
                "`server.max_signing_per_uid` = 0",
            ),
            (
                "cache_misses_per_uid = { per_second = 0, burst = 5 }",
                "`server.cache_misses_per_uid.per_second` = 0",
            ),
            (
                "refusals_per_uid = { per_second = 1, burst = 0 }",
                "`server.refusals_per_uid.burst` = 0",
            ),
            (
                "refusals_per_uid = { per_second = 1 }",
                "missing field `burst`",
            ),
            ("max_header_bytes = 100", "`server.max_header_bytes` = 100"),
            (
                "idle_timeout_seconds = 0",
                "`server.idle_timeout_seconds` = 0",
            ),
            (
                "shutdown_timeout_seconds = -1",
                "`server.shutdown_timeout_seconds` = -1",
            ),
            (
                "header_read_timeout_seconds = nan",
                "`server.header_read_timeout_seconds` = NaN",
            ),
            ("socket_group = \"\"", "`server.socket_group` is empty"),
            (
                "socket_group = \"no-such-group-xq\"",
                "`server.socket_group` = \"no-such-group-xq\": no such name on this host",
            ),
            ("max_conections = 5", "unknown field `max_conections`"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
