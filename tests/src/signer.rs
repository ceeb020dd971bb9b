//! The library's signing back in process, against a real SoftHSM token.
//!
//! The PKCS#11 module is initialised once per process and reads
//! `SOFTHSM2_CONF` at that moment, so the tests that use it run one at a
//! time ([`serial`]), and every [`Running`] signer finalizes the module when
//! it is dropped, whatever the test's outcome.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use access_token_agent::back::{ConnectError, Signer};
use access_token_agent::config::Config;
use access_token_agent::issue::{Found, IssueError, Issued, TokenSource};
use access_token_agent::metrics::Metrics;

use crate::{OutputExt, TestToken, PATIENCE};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held for the whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A token with a key generated inside it for issuer `ttd`, and a config
/// with that issuer and `extra`.
pub fn token_with_key(key_type: &str, extra: &str) -> TestToken {
    let token = TestToken::with_ttd_key(key_type);
    token.write_config(&format!("[[issuer]]\nname = \"ttd\"\n{extra}"));
    token
}

/// The issuer's active certificate as the `keys export-cert` command prints it.
pub fn exported_pem(token: &TestToken, issuer: &str) -> String {
    token
        .agent(&["keys", "export-cert", "--issuer", issuer, "--format", "pem"])
        .success()
        .stdout_text()
}

/// A started [`Signer`] with its runtime; shut down on drop.
pub struct Running {
    pub signer: Arc<Signer>,
    pub metrics: Arc<Metrics>,
    pub runtime: tokio::runtime::Runtime,
}

impl Running {
    /// Starts the signing back on `token`'s current config.
    pub fn start(token: &TestToken) -> Result<Running, ConnectError> {
        std::env::set_var("SOFTHSM2_CONF", token.softhsm_conf());
        let config = load(token);
        let metrics = Arc::new(Metrics::default());
        let signer = Arc::new(Signer::start(&config, Arc::clone(&metrics))?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Ok(Running {
            signer,
            metrics,
            runtime,
        })
    }

    /// The cached token, or a fresh one: what the token route gets from
    /// the back, without the route's per-uid turn.
    pub fn issue(&self, issuer: &str, app: &str) -> Result<Issued, IssueError> {
        let miss = match self.signer.find(issuer, app)? {
            Found::Cached(issued) => return Ok(issued),
            Found::Missing(miss) | Found::Uncached(miss) => miss,
        };
        self.runtime.block_on(self.signer.sign(miss))
    }

    pub fn reload(&self, token: &TestToken) -> Result<(), String> {
        self.runtime.block_on(self.signer.reload(&load(token)))
    }

    /// Waits until readiness is `Ok` (`ready`) or an error; returns the
    /// error's text, or panics after [`PATIENCE`].
    pub fn wait_readiness(&self, ready: bool) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let readiness = self.signer.readiness();
            if readiness.is_ok() == ready {
                return readiness.err();
            }
            assert!(
                Instant::now() < deadline,
                "readiness stayed {readiness:?} for {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of the metric line that starts with `name` (labels included).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signer.shutdown();
    }
}

pub fn load(token: &TestToken) -> Config {
    Config::load(&token.config_path()).expect("the test config loads")
}

/// The token's objects move out of its directory, as if the HSM went away
/// ([`TestToken::move_away`], an empty token directory left behind); the
/// returned function puts them back.
pub fn move_token_away(token: &TestToken) -> impl FnOnce() + '_ {
    let tokens = token.path().join("tokens");
    token.move_away();
    std::fs::create_dir(&tokens).expect("an empty token directory");
    move || {
        std::fs::remove_dir(&tokens).expect("remove the empty token directory");
        token.bring_back();
    }
}
