//! The one test fixture: what every test, benchmark and fuzz target of the
//! workspace stands on. A private token (SoftHSM's, or Kryoptic's) with a
//! config pointing at it, the real `access-token-agent` binary started the way systemd starts
//! it, a strict reader of raw HTTP answers, the signing back in process, and
//! the openssl CLI for keys and certificates made outside the project's code.
//!
//! | module | what it owns |
//! |---|---|
//! | [`token`] | [`TestToken`]: a token in a temporary directory, its PIN file and `agent.toml`, and the agent's commands run on it |
//! | [`store`] | the implementations a token can be of (SoftHSM, Kryoptic) and [`on_every_store!`], which runs a test on each |
//! | [`kryoptic`] | Kryoptic's module, built once from crates.io into `target/kryoptic/` |
//! | [`process`] | the built binaries, a child killed on drop, reading a finished command's output |
//! | [`daemon`] | a `serve` process with `NOTIFY_SOCKET`, ready exactly when it says READY=1; serve configs, logs, audit lines, socket activation |
//! | [`http`] | raw HTTP/1.1 on the socket, every answer read strictly |
//! | [`signer`] | the library's signing back in process, on a real token |
//! | [`slow_hsm`] | the slow module (`tests/slow-hsm`) in front of a token: delays, a session limit, hangs |
//! | [`hanging`] | an agent whose HSM calls hang on demand, and the hang-and-resume story `hsm_faults::hangs` tells for each key type |
//! | [`openssl`] | keys, certificates, PKCS#12 files and a tiny CA made by the openssl CLI; the shared test data |
//! | [`jwt`] | tokens decoded and verified as a relying party would |
//! | [`kubernetes`] | a cluster's parts without a cluster: the service-account issuer's keys, JWKS and projected tokens; the kubelet's pod cgroups |
//! | [`limits`] | descriptors and resource limits of a process |
//! | [`pids`] | processes of other users with chosen credentials and pids: a peer that connects and exits, and another process given its pid |
//! | [`users`] | other users as clients: `nobody`'s uid, and `request-loop` run as any uid |
//! | [`p11kit`] | a token served by a real `p11-kit server`, and the agent's config that reaches it through p11-kit's client module |
//!
//! Tests run in parallel threads, so nothing here is process-global: each
//! [`TestToken`] owns a temporary directory holding its own store
//! (`softhsm2.conf` and a token directory, or Kryoptic's `token.sql`), PIN
//! file and `agent.toml`, and every child process gets `SOFTHSM2_CONF` or
//! `KRYOPTIC_CONF` pointing into that directory. The temporary directory
//! (and with it the token) disappears when the [`TestToken`] is dropped.
//! A test that touches the token is written once inside
//! [`on_every_store!`] and runs on each store as a test of its own.
//!
//! ```no_run
//! use integration_tests::{OutputExt, TestToken};
//!
//! let token = TestToken::new();
//! token.write_config("[[issuer]]\nname = \"ttd\"\n");
//! let out = token.agent(&["keys", "list", "--json"]).success();
//! assert_eq!(out.stdout_text().trim(), "[]");
//! ```
//!
//! ## Where tests live
//!
//! - **Unit tests** sit beside the code: inline (`mod tests`) while their
//!   file stays under 400 lines of code, in a sibling `tests.rs` beyond that,
//!   and in a `tests/` folder with one module per surface when that file
//!   grows past 400 too (`agent/src/front/tests/`). They may read answers
//!   with [`http`] (the agent crate has this crate as a dev-dependency) but
//!   start no agent and touch no token.
//! - **Black-box tests** (a real agent process, a real token, the
//!   library's signing back on a real token) live here, in `tests/tests/`,
//!   one target per behaviour, each a folder `tests/tests/<target>/main.rs`
//!   whose doc comment lists its modules and what each asserts; a module
//!   that would pass 400 lines of code becomes a folder of its own
//!   (`enrolment/kill/`). Run one with `cargo test -p integration-tests
//!   --test <target>`, one module of it with `-- <module>`.
//!
//!   | target | what it asserts |
//!   |---|---|
//!   | `http_api` | what the socket answers: tokens, bad and hostile requests, health, readiness, metrics; the token format |
//!   | `grants` | who gets which token: grants judged by the kernel's word on the caller, refusals and their audit lines |
//!   | `limits` | one user cannot crowd out the others: connections, rates, signatures in flight; load; the signing pool |
//!   | `hsm_faults` | the HSM going away, coming back, or not answering, in every form the agent meets it |
//!   | `enrolment` | `keys import`, `generate`, `list`, `export-cert`, `delete`, interrupted or failing; only the agent's own keys sign |
//!   | `lifecycle` | a key's life: renewal, requests for a CA, switching at a chosen instant, warnings, expiry |
//!   | `client` | the client library, the `access-token` command, the examples |
//!   | `packaging` | the agent as installed and run: config refusals, systemd's signals and sockets, restarts, hardening, Kubernetes, p11-kit |
//!   | `fixture` | this crate's own promises: private tokens, the slow module |
//! - **Benchmarks** (`bench/`) and **fuzz targets** (`fuzz/`, a workspace of
//!   its own) depend on this crate by path and start their tokens and
//!   agents, and read their answers, with it.
//!
//! `cargo test --workspace` (`make test`) runs them all; it needs the
//! binaries built first (`cargo build --workspace --bins`, which `make test`
//! does).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod daemon;
pub mod hanging;
pub mod http;
pub mod jwt;
pub mod kryoptic;
pub mod kubernetes;
pub mod limits;
pub mod openssl;
pub mod p11kit;
pub mod pids;
pub mod process;
pub mod signer;
pub mod slow_hsm;
pub mod store;
pub mod token;
pub mod users;

pub use jwt::{jws_part, unix_now, verify_all, verify_jwt};
pub use openssl::{
    cert_der, data_dir, der_with_month_13, der_with_unreadable_key, openssl, openssl_sign_sha256,
    p256_self_signed, pkcs12, rsa_self_signed, sha1_thumbprint, ttd_pem, ttd_pfx, utc_date,
    utc_time, write_ca_files, KeyFiles, Pkcs12Kind, TinyCa,
};
pub use process::{agent_binary, AgentProcess, OutputExt};
pub use store::{Store, MODULE};
pub use token::{write_private, TestToken, LABEL, PIN, SO_PIN};

/// How long an agent, or the signing back in process, may take to become
/// ready, to notice a fault or recover from it, or to exit: the probe
/// interval plus a few backoff steps, on a busy machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until `done` says so, asking every 20 ms; panics after
/// [`PATIENCE`], naming `what` was awaited. What a test waits for (a
/// process to stop, a metric to move, a line to appear) is polled this way,
/// never slept for.
pub fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `counter` (bumped by client threads) reaches `target`;
/// panics after [`PATIENCE`], naming `what` was awaited.
pub fn wait_count(counter: &AtomicUsize, target: usize, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while counter.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {target}",
            counter.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_owned()
}
