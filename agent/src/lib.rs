//! # access-token-agent
//!
//! Keeps an organisation's Altinn access-token signing keys inside a PKCS#11
//! HSM and hands out signed tokens to local processes. Applications ask for a
//! token; they never hold the private key.
//!
//! ## Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`cli`] | the command line: `serve`, `mint`, `keys …`; exit codes |
//! | [`clock`] | the wall clock: Unix seconds and milliseconds now, RFC 3339 times |
//! | [`config`] | the TOML config file: parsing, validation, messages naming the key |
//! | [`pin`] | reading the user PIN from a file or systemd credential, zeroized |
//! | [`token`] | the Altinn token bytes: header, claims, escaping, signing input |
//! | [`cert`] | certificate facts: thumbprint (kid/x5t), validity, key type, PEM/Key Vault forms |
//! | [`hsm`] | the PKCS#11 token: module, login, sessions, errors |
//! | [`hsm::keys`] | key pairs on the token and which one is active per issuer |
//! | [`hsm::sign`] | RS256/ES256 signatures through the HSM |
//! | [`hsm::enrol`] | PKCS#12 import, in-HSM generation, deletion |
//! | [`issue`] | the contract between the socket front and the signing back |
//! | [`signer`] | the signing back: signing threads, HSM supervision and recovery |
//! | [`cache`] | signed tokens kept per issuer, app and kid until their refresh point |
//! | [`daemon`] | `serve`: start-up, sd_notify, watchdog, reload, shutdown |
//! | [`metrics`] | counters and histograms, rendered as Prometheus text |
//! | [`server`] | the socket front: listener, HTTP routes, limits, problem+json |
//! | [`peer`] | who is on the other end of a connection: credentials, unit, executable |
//! | [`policy`] | grants: which peer may have which issuer and app |
//! | [`accounts`] | names of users and groups to ids |
//! | [`audit`] | one JSON line per issued or refused request |
//! | [`sync`] | locks that survive a panic elsewhere |
//! | [`exit`] | process exit codes and the failure that carries one |
//! | [`hardening`] | no core dumps, not dumpable, open-files limit raised |

pub mod accounts;
pub mod audit;
pub mod cache;
pub mod cert;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod hardening;
pub mod hsm;
pub mod issue;
pub mod metrics;
pub mod peer;
pub mod pin;
pub mod policy;
pub mod server;
pub mod signer;
pub mod sync;
pub mod token;
