//! Packaging: the agent as it is installed, configured and run, by systemd
//! or in a cluster, against a real token.
//!
//! | module | what it asserts |
//! |---|---|
//! | [`config`] | configurations, PINs and tokens that cannot work are refused with their own exit code and a message naming what is wrong, before `serve` listens |
//! | [`signals`] | SIGHUP reloads (grants, a new key) and reopens the audit file; a broken config on reload is refused; SIGTERM finishes the request in flight and writes every audit line; socket activation serves on the inherited listener |
//! | [`faults`] | SIGKILL under load and a restart on the socket systemd holds lose no request; a wrong PIN exits 77 after one login; a PIN file others may read is refused before any login |
//! | [`hardening`] | from outside: no core dumps, not dumpable, no PIN in `/proc`, the open-files limit raised, the socket's mode |
//! | [`files`] | the audit file keeps mode 0640 under `UMask=0077`; the socket is bound only in a directory nobody else can write |
//! | [`full_disk`] | audit lines that meet a full disk are counted, kept, and written whole once there is room; with `[audit] required` no token goes out meanwhile |
//! | [`deploy`] | the Kubernetes manifests parse and carry what README.md's "Kubernetes" section promises; the agent started with the DaemonSet's ids, config and socket directory serves the example app's pod |
//! | [`p11_kit`] | enrolment, listing and serving through a real `p11-kit server`, the way a network HSM is reached |
//!
//! [`faults`]' wrong PIN is also an HSM matter; it is here because it is the
//! exit code systemd acts on. The p11-kit server going away is
//! `hsm_faults::p11_kit`.

mod config;
mod deploy;
mod faults;
mod files;
mod full_disk;
mod hardening;
mod p11_kit;
mod signals;
