//! Who may have which token: grants matched on the peer's kernel credentials.
//!
//! A `[[grant]]` names who (any of `uid`/`user`, `gid`/`group`, `unit`,
//! `exe`, `k8s_namespace`, `k8s_service_account`; every one it sets must
//! match) and what (one `issuer`, and `apps`:
//! app names, `""` for a token without the app claim, or `["*"]` for any
//! app name). The config checks and resolves grants ([`crate::config::Grant`]);
//! this module matches them against peers.
//!
//! The peer's groups, unit and executable are read once, when its
//! connection is accepted ([`super::peer`]), not when it connected. `exe`
//! therefore names the program the peer runs at the accept, and no more: a
//! process may connect, fork a child that keeps the connection, and exec
//! the granted program before the accept; or exec another program after
//! it, and its requests still count as the program read at accept. Any
//! user can run a given program and do that, so an `exe` grant must also
//! name the user (`uid` or `user`): it narrows which of that user's
//! programs may have the token, and never lets another user in. The
//! groups, unit and executable count only while the process has the ids
//! it connected with (SO_PEERCRED), so exec'ing a setuid program lends
//! that program's identity to nobody.
//!
//! A grant naming a Kubernetes identity matches only a request whose
//! projected service-account token verified ([`super::kubernetes`]) and
//! names that namespace (and service account); its uid and gid, if it
//! names them too, must match the kernel's word as well. A request
//! without a token matches only grants that name no Kubernetes identity:
//! a pod's uid is whatever its spec sets, so a grant meant for a pod must
//! never be reached by uid alone. A token takes nothing away: a grant that
//! names no Kubernetes identity matches as it would without one.
//!
//! A program whose file was replaced since it started (a package upgrade)
//! links as `/usr/bin/x (deleted)`; it still matches `exe = "/usr/bin/x"`
//! while a file is at that path again, so that upgrading a service does not
//! cut it off until it restarts. Such a grant trusts whoever can write the
//! path, as it does anyway for the next start: root, for a program a
//! package installed. A path the granted user can write narrows nothing,
//! since that user can put any program there.

use super::kubernetes::PodIdentity;
use super::peer::Peer;
use crate::config::grant::{K8sIdentity, OverflowIds};
use crate::config::{grant, Apps, Grant, GrantConfig};

/// The grants, ready to match peers against.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<Grant>,
}

/// The issuer and app a request resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub issuer: &'a str,
    /// Empty: a token without the app claim.
    pub app: &'a str,
}

/// Why a request resolved to no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No grant of this peer covers the issuer and app.
    NotGranted,
    /// The issuer was omitted and the peer's grants name more than one.
    IssuerRequired,
    /// The app was omitted and the peer's grants allow more than one, or any.
    AppRequired,
}

/// What one grant offers when a parameter is omitted: an app, or any app.
type Candidate<'a> = (&'a str, Option<&'a str>);

impl Policy {
    /// Builds the policy; the error names the grant key that is wrong.
    pub fn from_config(grants: &[GrantConfig]) -> Result<Policy, String> {
        Policy::for_namespace(grants, OverflowIds::default())
    }

    /// Builds the policy for an agent whose user namespace shows unmapped
    /// peers as `overflow` ([`super::peer::userns`]): a grant of one of
    /// those ids would match every unmapped peer, and is refused.
    pub fn for_namespace(grants: &[GrantConfig], overflow: OverflowIds) -> Result<Policy, String> {
        Ok(Policy {
            grants: grant::resolve_for(grants, overflow)?,
        })
    }

    /// Number of grants.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grants `peer` matches, as (issuer, apps) with `["*"]` for any
    /// app; `pod`: the pod a verified token of the request names.
    pub fn granted<'a>(
        &'a self,
        peer: &Peer,
        pod: Option<&PodIdentity>,
    ) -> Vec<(&'a str, Vec<&'a str>)> {
        self.grants
            .iter()
            .filter(|g| g.matches(peer, pod))
            .map(|g| {
                let apps = match &g.apps {
                    Apps::Any => vec!["*"],
                    Apps::Listed(apps) => apps.iter().map(String::as_str).collect(),
                };
                (g.issuer.as_str(), apps)
            })
            .collect()
    }

    /// Decides what `peer` (with `pod`, the pod a verified token of the
    /// request names) gets for the requested issuer and app; an omitted
    /// one is filled in when the peer's grants allow exactly one choice.
    pub fn resolve<'a>(
        &'a self,
        peer: &Peer,
        pod: Option<&PodIdentity>,
        issuer: Option<&'a str>,
        app: Option<&'a str>,
    ) -> Result<Target<'a>, Refusal> {
        if let (Some(issuer), Some(app)) = (issuer, app) {
            let granted = self
                .grants
                .iter()
                .any(|g| g.issuer == issuer && g.allows(app) && g.matches(peer, pod));
            return match granted {
                true => Ok(Target { issuer, app }),
                false => Err(Refusal::NotGranted),
            };
        }
        let mut choice = Choice::default();
        let grants = self
            .grants
            .iter()
            .filter(|g| issuer.is_none_or(|issuer| g.issuer == issuer))
            .filter(|g| g.matches(peer, pod));
        for grant in grants {
            grant.offer(app, |candidate| choice.add(candidate));
        }
        choice.decide()
    }
}

/// The choices a peer's grants offer for a request with an omitted parameter.
#[derive(Default)]
struct Choice<'a> {
    first: Option<Candidate<'a>>,
    issuers_differ: bool,
    apps_differ: bool,
}

impl<'a> Choice<'a> {
    fn add(&mut self, candidate: Candidate<'a>) {
        match self.first {
            None => self.first = Some(candidate),
            Some(first) => {
                self.issuers_differ |= first.0 != candidate.0;
                self.apps_differ |= first.1 != candidate.1;
            }
        }
    }

    fn decide(self) -> Result<Target<'a>, Refusal> {
        match self.first {
            None => Err(Refusal::NotGranted),
            Some(_) if self.issuers_differ => Err(Refusal::IssuerRequired),
            Some(_) if self.apps_differ => Err(Refusal::AppRequired),
            Some((issuer, Some(app))) => Ok(Target { issuer, app }),
            Some((_, None)) => Err(Refusal::AppRequired),
        }
    }
}

impl Grant {
    /// Every identity field the grant sets must match the peer; a
    /// Kubernetes identity, the one the request's token proved.
    fn matches(&self, peer: &Peer, pod: Option<&PodIdentity>) -> bool {
        let kubernetes = match (&self.kubernetes, pod) {
            (None, _) => true,
            (Some(granted), Some(pod)) => granted.admits(pod),
            (Some(_), None) => false,
        };
        kubernetes
            && self.uid.is_none_or(|uid| peer.uid == uid)
            && self
                .gid
                .is_none_or(|gid| peer.gid == gid || peer.process().groups.contains(&gid))
            && self
                .unit
                .as_ref()
                .is_none_or(|unit| peer.process().unit.as_ref() == Some(unit))
            && self
                .exe
                .as_ref()
                .is_none_or(|exe| peer.process().exe.as_ref() == Some(exe))
    }

    /// Whether the grant covers `app` (any name for `*`; empty only if listed).
    fn allows(&self, app: &str) -> bool {
        match &self.apps {
            Apps::Any => !app.is_empty(),
            Apps::Listed(apps) => apps.iter().any(|a| a == app),
        }
    }

    /// Hands `offer` what this grant gives for the requested app, or for an
    /// omitted one: each listed app, or "any app" for `*`.
    fn offer<'a>(&'a self, app: Option<&'a str>, mut offer: impl FnMut(Candidate<'a>)) {
        let issuer = self.issuer.as_str();
        match (app, &self.apps) {
            (Some(app), _) if self.allows(app) => offer((issuer, Some(app))),
            (Some(_), _) => {}
            (None, Apps::Any) => offer((issuer, None)),
            (None, Apps::Listed(apps)) => apps.iter().for_each(|a| offer((issuer, Some(a)))),
        }
    }
}

impl K8sIdentity {
    fn admits(&self, pod: &PodIdentity) -> bool {
        self.namespace == pod.namespace
            && self
                .service_account
                .as_ref()
                .is_none_or(|account| *account == pod.service_account)
    }
}

#[cfg(test)]
mod tests;
