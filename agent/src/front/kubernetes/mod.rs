//! Pods as callers: who a request comes from when a pod sends it, proven
//! by the pod's projected service-account token and bound to the pod the
//! caller's process runs in.
//!
//! In Kubernetes the kernel's word on a caller says little: the uid and gid
//! are whatever the pod spec sets, and an agent outside the pod's pid
//! namespace gets pid 0 from SO_PEERCRED unless it shares the host's
//! (`hostPID: true`). So a pod proves who it is with the token the kubelet
//! projects into it (audience `kubernetes.audience`), sent as
//! `Authorization: Bearer <token>` on `GET /v1/token`, and the agent checks:
//!
//! 1. the token ([`verify`]): signed by the cluster's service-account
//!    issuer ([`jwks`]), for this audience, in its validity, naming a
//!    namespace, a service account and a pod;
//! 2. the caller ([`cgroup`]): with `kubernetes.bind_to_pod` (the
//!    default), the pod UID in the caller's /proc/PID/cgroup, read when its
//!    connection was accepted, must be the token's pod UID. A token copied
//!    out of one pod is then of no use from any other process.
//!
//! Without host pids no pod UID can be read; with `bind_to_pod = false`
//! the token alone is trusted, from whoever sends it.
//!
//! What a verified token yields is a [`PodIdentity`], which grants match
//! by `k8s_namespace` and `k8s_service_account` ([`super::policy`]); a
//! failure is a [`Rejection`] with a short reason for the audit line and a
//! detail for the caller. The token itself is never logged nor echoed.
//!
//! | module | its one job |
//! |---|---|
//! | [`jwks`] | the issuer keys and their reload |
//! | [`verify`] | the projected token: signature, times, audience, claims |
//! | [`cgroup`] | the pod UID of /proc/PID/cgroup, by the kubelet's layouts |

pub mod cgroup;
pub mod jwks;
pub mod verify;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::KubernetesConfig;
pub use cgroup::{pod_of_cgroup, PodCgroup};
use jwks::Jwks;
use verify::Expected;

/// The calling pod, as its verified token names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Why a request's Kubernetes identity is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short name for the audit line and metrics, e.g. `expired`.
    pub reason: &'static str,
    /// What is wrong, for the caller; never the token.
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// The `[kubernetes]` section at work: its settings and the issuer keys.
pub struct Kubernetes {
    config: KubernetesConfig,
    jwks: Jwks,
    /// Whether the log has said that callers come without host pids: once
    /// is enough to tell the operator, and every refusal's line has it too.
    told_no_pids: AtomicBool,
}

impl Kubernetes {
    /// Reads the issuer keys; the error names `kubernetes.jwks_file`.
    pub fn new(config: &KubernetesConfig) -> Result<Kubernetes, String> {
        Ok(Kubernetes {
            config: config.clone(),
            jwks: Jwks::load(&config.jwks_file)?,
            told_no_pids: AtomicBool::new(false),
        })
    }

    /// The settings it was made with, to tell whether a reload changed them.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    /// Reads the issuer keys again (SIGHUP); on failure the old ones stay.
    pub fn reload_keys(&self) {
        self.jwks.reload();
    }

    /// The JWKS file's path.
    pub fn jwks_file(&self) -> &Path {
        &self.config.jwks_file
    }

    /// Judges a request's `Authorization` header values, sent by a caller
    /// whose pid is `pid` and whose cgroups say `pod`: no header, no
    /// Kubernetes identity; a header, the pod it proves, or why not.
    pub fn judge<'h>(
        &self,
        mut authorization: impl Iterator<Item = &'h [u8]>,
        pid: Option<i32>,
        pod: &PodCgroup,
    ) -> Result<Option<PodIdentity>, Rejection> {
        let Some(value) = authorization.next() else {
            return Ok(None);
        };
        if authorization.next().is_some() {
            return Err(Rejection::new(
                "malformed",
                "the request has more than one Authorization header; send one, `Bearer <projected token>`",
            ));
        }
        let token = bearer(value)?;
        let keys = self.jwks.current();
        let expected = Expected {
            issuer: &self.config.issuer,
            audience: &self.config.audience,
        };
        let identity = verify::verify(token, &keys, &expected)?;
        if self.config.bind_to_pod {
            bind(&identity, pid, pod).inspect_err(|rejection| {
                if pid.is_none() && !self.told_no_pids.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        detail = %rejection.detail,
                        "a pod's token was refused because the agent sees no host pids; every such request is refused"
                    );
                }
            })?;
        }
        Ok(Some(identity))
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: &[u8]) -> Result<&str, Rejection> {
    let text = std::str::from_utf8(value).unwrap_or_default();
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Rejection::new(
            "malformed",
            "the Authorization header is not `Bearer <projected service-account token>`",
        )),
    }
}

/// Requires the caller's pod, read from its cgroups, to be the token's.
fn bind(identity: &PodIdentity, pid: Option<i32>, pod: &PodCgroup) -> Result<(), Rejection> {
    const UNBOUND: &str = "or set `kubernetes.bind_to_pod = false` to trust the token alone";
    match pod {
        PodCgroup::Pod(uid) if *uid == identity.pod_uid => Ok(()),
        PodCgroup::Pod(uid) => Err(Rejection::new(
            "other-pod",
            format!(
                "the token is pod {}'s (uid {}), but the caller runs in pod {uid}; send your own pod's token",
                identity.pod_name, identity.pod_uid
            ),
        )),
        PodCgroup::Several(first, second) => Err(Rejection::new(
            "several-pods",
            format!("the caller's cgroups name two pods ({first} and {second}); the agent cannot tell which pod it is"),
        )),
        PodCgroup::NoPod => Err(Rejection::new(
            "no-pod",
            format!("the caller runs in no pod's cgroup (as the kubelet lays them out), so the token's pod cannot be checked; call from the pod the token belongs to, {UNBOUND}"),
        )),
        PodCgroup::Unread if pid.is_none() => Err(Rejection::new(
            "no-pod",
            format!("the agent sees no pid for the caller (it runs in another pid namespace), so it cannot read the caller's pod to check the token's; run the agent's DaemonSet with `hostPID: true`, {UNBOUND}"),
        )),
        PodCgroup::Unread => Err(Rejection::new(
            "no-pod",
            format!("the caller's /proc entries could not be read, or its ids changed since it connected, so its pod cannot be checked against the token's; connect again, {UNBOUND}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> PodIdentity {
        PodIdentity {
            namespace: "apps".into(),
            service_account: "my-app".into(),
            service_account_uid: "s".into(),
            pod_name: "my-app-1".into(),
            pod_uid: "aaaa-1".into(),
        }
    }

    #[test]
    fn the_bearer_scheme_only() {
        assert_eq!(bearer(b"Bearer abc").unwrap(), "abc");
        assert_eq!(bearer(b"bearer  abc ").unwrap(), "abc");
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"\xff\xfe",
        ] {
            assert_eq!(bearer(bad).unwrap_err().reason, "malformed");
        }
    }

    #[test]
    fn the_callers_pod_must_be_the_tokens() {
        let me = identity();
        assert!(bind(&me, Some(7), &PodCgroup::Pod("aaaa-1".into())).is_ok());
        let cases = [
            (
                Some(7),
                PodCgroup::Pod("bbbb-2".into()),
                "other-pod",
                "bbbb-2",
            ),
            (
                Some(7),
                PodCgroup::Several("a".into(), "b".into()),
                "several-pods",
                "two pods",
            ),
            (Some(7), PodCgroup::NoPod, "no-pod", "bind_to_pod = false"),
            (None, PodCgroup::Unread, "no-pod", "hostPID: true"),
            (Some(7), PodCgroup::Unread, "no-pod", "bind_to_pod = false"),
        ];
        for (pid, pod, reason, says) in cases {
            let refused = bind(&me, pid, &pod).unwrap_err();
            assert_eq!(refused.reason, reason, "{pod:?}");
            assert!(refused.detail.contains(says), "{}", refused.detail);
        }
    }
}
