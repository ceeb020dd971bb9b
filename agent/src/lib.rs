//! # access-token-agent
//!
//! Keeps an organisation's Altinn access-token signing keys inside a PKCS#11
//! HSM and hands out signed tokens to local processes. Applications ask for a
//! token; they never hold the private key.
//!
//! ## The rooms
//!
//! A token request goes one way, and the token route reads in this order
//! (`front::routes`):
//!
//! ```text
//! front/listener ─ accept ─▶ front/limits (a place for the connection)
//!   ─▶ front/connection (keep-alive, deadlines) ─▶ front/peer (who is it)
//!   ─▶ front/routes: query (parse) ─▶ kubernetes (a pod's token) ─▶ policy (judge)
//!        ─▶ issue.rs: TokenSource::find ── the cached token? ──▶ back/cache
//!        ─▶ front/limits (the uid's turn: its rate, a place to sign)
//!        ─▶ issue.rs: TokenSource::sign ─▶ back/pool (a signing thread) ─▶ hsm/
//!        ─▶ front/audit (one line) ─▶ the answer
//! ```
//!
//! | module | its one job |
//! |---|---|
//! | [`front`] | the socket front, which never touches the HSM: listener, limits, connections, routes; [`front::query`] (parsed), [`front::peer`] (identified), [`front::kubernetes`] (a pod's service-account token verified and bound to the caller's pod), [`front::policy`] (judged), [`front::audit`] (recorded) |
//! | [`issue`] | the seam: what the front asks of the back, in the order it asks |
//! | [`back`] | the signing back, which never sees a request: [`back::cache`], the signing pool, the HSM supervisor and recovery |
//! | [`daemon`] | `serve`: wires front and back; start-up, signals, sd_notify, watchdog, reload, shutdown |
//! | [`cli`] | the operators' side: `keys …`, `mint`, and how failures become exit codes |
//! | [`hsm`] | PKCS#11, shared by the back and the operators: module and its environment, login, PIN, key pairs, the certificates that share a key and the rules that say which may sign, signing, enrolment and renewal |
//! | [`token`] | the Altinn token bytes (the JWT), and the [`token::name`] rule for issuer and app names |
//! | [`cert`] | certificate facts: thumbprint (kid/x5t), validity, key type, PEM/Key Vault forms |
//! | [`key_type`] | the key types (RSA with its size, P-256): JWS `alg`, `--key-type` names, PKCS#11 mechanisms and templates, rcgen algorithm, DER/JOSE signatures |
//! | [`config`] | the TOML file, every section in a file of its own; messages name the key |
//! | [`metrics`] | counters and histograms for `/metrics`, written by front and back |
//! | [`accounts`] | user and group names to ids |
//! | [`clock`], [`sync`], [`exit`], [`hardening`] | the wall clock; locks that survive a panic; exit codes; process limits (no core dumps, no ptrace, room for a descriptor per connection) |
//! | [`private_dir`] | the rule for a directory the agent makes files in (socket, audit file): nobody else may write it |
//!
//! The running agent has three kinds of threads besides tokio's: the HSM
//! supervisor (`hsm-supervisor`), the signing threads (`signer-N`, one
//! PKCS#11 session each), and the audit file's writer (`audit-writer`).
//! Signals are read on the runtime.
//!
//! Words: "token" is the JWT the agent hands out; the HSM's token is "the
//! HSM" or its slot, and its PKCS#11 sessions are "sessions".
//!
//! Dependencies point one way: `front` and `back` meet only in [`issue`] (and
//! the [`daemon`] that wires them); `cli`, `hsm`, `config`, `token` and
//! `cert` never import `front`; `config` imports nothing above `token`;
//! `key_type` imports nothing of the crate.
//!
//! Unit tests live inline (`mod tests`) while their file stays under 400
//! lines of code, and beyond that in a sibling `tests.rs` (or a `tests/`
//! folder, one file per surface); a test that sets environment variables
//! runs alone in a process of its own (`own_process`), and keys made fresh
//! for a test come from `test_keys` (both built for tests only).
//! Black-box tests
//! (a real agent process, a real SoftHSM token) live in the workspace's
//! `tests/` crate, which also owns the fixture every test, benchmark and
//! fuzz target uses.

pub mod accounts;
pub mod back;
pub mod cert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod front;
pub mod hardening;
pub mod hsm;
pub mod issue;
pub mod key_type;
pub mod metrics;
#[cfg(test)]
mod own_process;
pub mod private_dir;
pub mod sync;
#[cfg(test)]
mod test_keys;
pub mod token;
