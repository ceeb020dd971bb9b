//! Grants: who gets which token, judged by the kernel's word on the caller,
//! against a real agent and real SoftHSM, with clients that are real
//! processes of other users; and the audit line every decision leaves.
//!
//! | module | what it asserts |
//! |---|---|
//! | [`callers`] | another uid is refused and audited while the granted uid is served; grants by group and executable; a single grant lets the caller leave the parameters out |
//! | [`peer`] | a peer's pid reused by another user's process lends it neither groups nor executable, whichever way the agent pins the peer (SO_PEERPIDFD, `pidfd_open`, none); nor does a peer that changed its ids between its connect and the accept |
//! | [`exe`] | an `exe` grant trusts neither a traced process nor another file mounted over the granted path |
//! | [`units`] | a `unit` grant trusts the unit systemd runs the peer in, never a cgroup someone named like a unit |
//! | [`kubernetes`] | pods as callers: a grant by namespace and service account serves the pod whose projected token verifies and whose kubelet-made cgroup (systemd or cgroupfs driver) names the token's pod, from a pid namespace of its own; a token that fails any check (audience, expiry, not-before, kid, `alg: none`, HMAC keyed with the JWKS, tampering, issuer, claims), comes from another pod, from no pod or from a path naming two pods is refused with its reason in the audit line; the JWKS is read again when swapped like a ConfigMap and on SIGHUP; `bind_to_pod = false` trusts the token alone; an agent in a pid namespace of its own (no `hostPID`) refuses a pod's token and says why |
//! | [`reload`] | revoking a grant never waits for keys: a reload that cannot bring every issuer into service still puts its grants in force, and says what it left out |
//! | [`isolation`] | thousands of refusals beside granted requests give no token, and the audit file and metrics account for every one |
//! | [`userns`] | an agent in a user namespace whose maps are not the identity refuses, at start and on reload, a grant of its overflow uid or gid, which every unmapped peer shows as |
//! | [`audit`] | a client repeating a refused request cannot flood the audit log: five lines, then one line counting the rest |
//!
//! [`isolation`] and [`audit`] load the agent as `limits` does; they are here
//! because what they assert is who was refused and what the audit says.

mod audit;
mod callers;
mod exe;
mod isolation;
mod kubernetes;
mod peer;
mod reload;
mod units;
mod userns;
