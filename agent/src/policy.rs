//! Who may have which token: grants matched on the peer's kernel credentials.
//!
//! A `[[grant]]` names who (any of `uid`/`user`, `gid`/`group`, `unit`,
//! `exe`; every one it sets must match) and what (one `issuer`, and `apps`:
//! app names, `""` for a token without the app claim, or `["*"]` for any
//! app name). Users and groups are resolved to ids when the policy is built,
//! so a typo fails the config instead of silently granting nothing.
//!
//! The peer's groups, unit and executable are read once, when its
//! connection is accepted ([`crate::peer`]). `exe` therefore names the
//! program the peer ran when it connected: a process may connect, then exec
//! another program or hand the connection to one, and its requests still
//! count as the program it connected as. Any user can run a given program
//! and do that, so an `exe` grant must also name the user (`uid` or
//! `user`): it narrows which of that user's programs may have the token,
//! and never lets another user in.
//!
//! A program whose file was replaced since it started (a package upgrade)
//! links as `/usr/bin/x (deleted)`; it still matches `exe = "/usr/bin/x"`
//! while a file is at that path again, so that upgrading a service does not
//! cut it off until it restarts. Such a grant trusts whoever can write the
//! path, as it does anyway for the next start: root, for a program a
//! package installed. A path the granted user can write narrows nothing,
//! since that user can put any program there.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::accounts;
use crate::peer::Peer;

/// Longest issuer or app name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 100;

/// One `[[grant]]` entry as written in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub uid: Option<u32>,
    /// A user name, resolved to its uid when the policy is built.
    pub user: Option<String>,
    /// Matches the peer's primary or a supplementary group.
    pub gid: Option<u32>,
    /// A group name, resolved to its gid when the policy is built.
    pub group: Option<String>,
    /// The systemd unit the system manager (PID 1) runs the peer in, e.g.
    /// `my-app.service`: the first service or scope on the peer's cgroup
    /// path. Units a user's own systemd starts all run inside
    /// `user@UID.service` and match only that, whatever they are named.
    pub unit: Option<String>,
    /// The program the peer ran when it connected, an absolute path;
    /// symlinks in it are resolved when the policy is built. Only together
    /// with `uid` or `user`; a program replaced on disk since it started
    /// still counts (see the module docs).
    pub exe: Option<PathBuf>,
    pub issuer: String,
    pub apps: Vec<String>,
}

/// The grants, ready to match peers against.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<Grant>,
}

#[derive(Debug, Clone)]
struct Grant {
    uid: Option<u32>,
    gid: Option<u32>,
    unit: Option<String>,
    exe: Option<PathBuf>,
    issuer: String,
    apps: Apps,
}

#[derive(Debug, Clone)]
enum Apps {
    Any,
    Listed(Vec<String>),
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
        let grants = grants
            .iter()
            .enumerate()
            .map(|(index, grant)| Grant::from_config(index, grant))
            .collect::<Result<_, _>>()?;
        Ok(Policy { grants })
    }

    /// Number of grants.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grants `peer` matches, as (issuer, apps) with `["*"]` for any app.
    pub fn granted<'a>(&'a self, peer: &Peer) -> Vec<(&'a str, Vec<&'a str>)> {
        self.grants
            .iter()
            .filter(|g| g.matches(peer))
            .map(|g| {
                let apps = match &g.apps {
                    Apps::Any => vec!["*"],
                    Apps::Listed(apps) => apps.iter().map(String::as_str).collect(),
                };
                (g.issuer.as_str(), apps)
            })
            .collect()
    }

    /// Decides what `peer` gets for the requested issuer and app; an omitted
    /// one is filled in when the peer's grants allow exactly one choice.
    pub fn resolve<'a>(
        &'a self,
        peer: &Peer,
        issuer: Option<&'a str>,
        app: Option<&'a str>,
    ) -> Result<Target<'a>, Refusal> {
        if let (Some(issuer), Some(app)) = (issuer, app) {
            let granted = self
                .grants
                .iter()
                .any(|g| g.issuer == issuer && g.allows(app) && g.matches(peer));
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
            .filter(|g| g.matches(peer));
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
    fn from_config(index: usize, config: &GrantConfig) -> Result<Grant, String> {
        let key = |name: &str| format!("`grant[{index}].{name}`");
        let uid = resolve_id(
            config.uid,
            config.user.as_deref(),
            ("uid", "user"),
            &key,
            accounts::user_id,
        )?;
        let gid = resolve_id(
            config.gid,
            config.group.as_deref(),
            ("gid", "group"),
            &key,
            accounts::group_id,
        )?;
        if let Some(unit) = &config.unit {
            check_unit(unit).map_err(|why| format!("{} = {unit:?} {why}", key("unit")))?;
        }
        let exe = match &config.exe {
            Some(exe) => Some(grant_exe(exe, uid).map_err(|why| format!("{} {why}", key("exe")))?),
            None => None,
        };
        if uid.is_none() && gid.is_none() && config.unit.is_none() {
            return Err(format!(
                "`grant[{index}]` names nobody; set `uid`, `user`, `gid`, `group` or `unit`"
            ));
        }
        check_name(&config.issuer).map_err(|why| format!("{} {why}", key("issuer")))?;
        Ok(Grant {
            uid,
            gid,
            unit: config.unit.clone(),
            exe,
            issuer: config.issuer.clone(),
            apps: Apps::from_config(&config.apps)
                .map_err(|why| format!("{} {why}", key("apps")))?,
        })
    }

    /// Every identity field the grant sets must match the peer.
    fn matches(&self, peer: &Peer) -> bool {
        self.uid.is_none_or(|uid| peer.uid == uid)
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

impl Apps {
    fn from_config(apps: &[String]) -> Result<Apps, String> {
        match apps {
            [] => Err("is empty; list the app names, or [\"*\"] for any app".into()),
            [any] if any == "*" => Ok(Apps::Any),
            _ if apps.iter().any(|a| a == "*") => {
                Err("mixes \"*\" with app names; use [\"*\"] alone or list the names".into())
            }
            _ => {
                for app in apps.iter().filter(|a| !a.is_empty()) {
                    check_name(app).map_err(|why| format!("entry {app:?} {why}"))?;
                }
                Ok(Apps::Listed(apps.to_vec()))
            }
        }
    }
}

/// Checks an issuer or app name; the error completes "`key` …".
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        Some(c) => Err(format!(
            "contains {c:?}; names use only letters a-z and A-Z, digits, '-', '.' and '_'"
        )),
        None => Ok(()),
    }
}

fn check_unit(unit: &str) -> Result<(), String> {
    if unit.contains('/') || !(unit.ends_with(".service") || unit.ends_with(".scope")) {
        return Err("is not a unit name; name a service or scope, e.g. \"my-app.service\"".into());
    }
    Ok(())
}

/// The executable a grant names, checked and with symlinks resolved, as
/// /proc/PID/exe shows it; the error completes "`grant[i].exe` …".
fn grant_exe(exe: &Path, uid: Option<u32>) -> Result<PathBuf, String> {
    if !exe.is_absolute() {
        return Err(format!(
            "= {exe:?} is not an absolute path; write the executable's full path"
        ));
    }
    if uid.is_none() {
        return Err("is set without `uid` or `user`: the executable is read when a caller connects, and a process of any user can connect as that program and then run another; add the user the program runs as, e.g. `user = \"my-app\"`".into());
    }
    Ok(std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf()))
}

/// The id a grant sets with its number key or its name key (at most one of
/// them), e.g. `uid` or `user`, a name resolved by `lookup`; the error names
/// the keys as `key` writes them.
fn resolve_id(
    number: Option<u32>,
    name: Option<&str>,
    (number_key, name_key): (&str, &str),
    key: &dyn Fn(&str) -> String,
    lookup: fn(&str) -> Result<u32, String>,
) -> Result<Option<u32>, String> {
    match (number, name) {
        (Some(_), Some(_)) => Err(format!(
            "{} and {} are both set; keep one",
            key(number_key),
            key(name_key)
        )),
        (Some(number), None) => Ok(Some(number)),
        (None, Some(name)) => lookup(name).map(Some).map_err(|why| {
            format!(
                "{} = {name:?}: {why}; create the {name_key} or fix the name",
                key(name_key)
            )
        }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Process;

    fn grant(issuer: &str, apps: &[&str]) -> GrantConfig {
        GrantConfig {
            issuer: issuer.into(),
            apps: apps.iter().map(|a| a.to_string()).collect(),
            ..GrantConfig::default()
        }
    }

    fn for_uid(uid: u32, issuer: &str, apps: &[&str]) -> GrantConfig {
        GrantConfig {
            uid: Some(uid),
            ..grant(issuer, apps)
        }
    }

    fn policy(grants: &[GrantConfig]) -> Policy {
        Policy::from_config(grants).unwrap()
    }

    fn error(grants: &[GrantConfig]) -> String {
        Policy::from_config(grants).unwrap_err()
    }

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer::new(uid, gid, Some(4242)).with_process(Process::default())
    }

    fn target<'a>(issuer: &'a str, app: &'a str) -> Result<Target<'a>, Refusal> {
        Ok(Target { issuer, app })
    }

    #[test]
    fn uid_grant_allows_listed_apps_only() {
        let policy = policy(&[for_uid(1000, "ttd", &["my-app", "other"])]);
        let p = peer(1000, 1000);
        assert_eq!(
            policy.resolve(&p, Some("ttd"), Some("my-app")),
            target("ttd", "my-app")
        );
        assert_eq!(
            policy.resolve(&p, Some("ttd"), Some("other")),
            target("ttd", "other")
        );
        assert_eq!(
            policy.resolve(&p, Some("ttd"), Some("third")),
            Err(Refusal::NotGranted)
        );
        assert_eq!(
            policy.resolve(&p, Some("digdir"), Some("my-app")),
            Err(Refusal::NotGranted)
        );
    }

    #[test]
    fn other_uid_gets_nothing() {
        let policy = policy(&[for_uid(1000, "ttd", &["*"])]);
        let stranger = peer(65534, 65534);
        assert_eq!(
            policy.resolve(&stranger, Some("ttd"), Some("a")),
            Err(Refusal::NotGranted)
        );
        assert_eq!(
            policy.resolve(&stranger, None, None),
            Err(Refusal::NotGranted)
        );
    }

    #[test]
    fn wildcard_allows_any_named_app_but_not_an_empty_one() {
        let policy = policy(&[for_uid(1, "ttd", &["*"])]);
        let p = peer(1, 1);
        assert_eq!(
            policy.resolve(&p, Some("ttd"), Some("anything")),
            target("ttd", "anything")
        );
        assert_eq!(
            policy.resolve(&p, Some("ttd"), Some("")),
            Err(Refusal::NotGranted)
        );
    }

    #[test]
    fn empty_app_must_be_listed() {
        let policy = policy(&[for_uid(1, "platform", &[""])]);
        let p = peer(1, 1);
        assert_eq!(
            policy.resolve(&p, Some("platform"), Some("")),
            target("platform", "")
        );
        assert_eq!(policy.resolve(&p, None, None), target("platform", ""));
    }

    #[test]
    fn omitted_parameters_filled_from_a_single_grant() {
        let policy = policy(&[for_uid(1, "ttd", &["my-app"])]);
        let p = peer(1, 1);
        assert_eq!(policy.resolve(&p, None, None), target("ttd", "my-app"));
        assert_eq!(
            policy.resolve(&p, Some("ttd"), None),
            target("ttd", "my-app")
        );
        assert_eq!(
            policy.resolve(&p, None, Some("my-app")),
            target("ttd", "my-app")
        );
    }

    #[test]
    fn omitted_app_with_wildcard_grant_is_required() {
        let policy = policy(&[for_uid(1, "ttd", &["*"])]);
        let p = peer(1, 1);
        assert_eq!(policy.resolve(&p, None, None), Err(Refusal::AppRequired));
        assert_eq!(
            policy.resolve(&p, Some("ttd"), None),
            Err(Refusal::AppRequired)
        );
        assert_eq!(policy.resolve(&p, None, Some("x")), target("ttd", "x"));
    }

    #[test]
    fn omitted_parameters_with_several_choices() {
        let policy = policy(&[
            for_uid(1, "ttd", &["a", "b"]),
            for_uid(1, "digdir", &["a"]),
            for_uid(2, "ttd", &["a"]),
        ]);
        let p = peer(1, 1);
        assert_eq!(policy.resolve(&p, None, None), Err(Refusal::IssuerRequired));
        assert_eq!(
            policy.resolve(&p, Some("ttd"), None),
            Err(Refusal::AppRequired)
        );
        assert_eq!(
            policy.resolve(&p, Some("digdir"), None),
            target("digdir", "a")
        );
        assert_eq!(
            policy.resolve(&p, None, Some("a")),
            Err(Refusal::IssuerRequired)
        );
        assert_eq!(policy.resolve(&p, None, Some("b")), target("ttd", "b"));
        // Uid 2 has one grant of its own, whatever uid 1 has.
        assert_eq!(policy.resolve(&peer(2, 2), None, None), target("ttd", "a"));
    }

    #[test]
    fn the_same_app_granted_twice_is_one_choice() {
        let policy = policy(&[
            for_uid(1, "ttd", &["a"]),
            GrantConfig {
                gid: Some(10),
                ..grant("ttd", &["a"])
            },
        ]);
        assert_eq!(policy.resolve(&peer(1, 10), None, None), target("ttd", "a"));
    }

    #[test]
    fn group_grant_matches_primary_and_supplementary_groups() {
        let policy = policy(&[GrantConfig {
            gid: Some(500),
            ..grant("ttd", &["a"])
        }]);
        assert!(policy
            .resolve(&peer(1, 500), Some("ttd"), Some("a"))
            .is_ok());
        let member = Peer::new(1, 1, Some(7)).with_process(Process {
            groups: vec![20, 500],
            ..Process::default()
        });
        assert!(policy.resolve(&member, Some("ttd"), Some("a")).is_ok());
        assert_eq!(
            policy.resolve(&peer(1, 1), Some("ttd"), Some("a")),
            Err(Refusal::NotGranted)
        );
    }

    #[test]
    fn every_identity_field_must_match() {
        let policy = policy(&[GrantConfig {
            uid: Some(1),
            unit: Some("my-app.service".into()),
            exe: Some("/usr/bin/my-app".into()),
            ..grant("ttd", &["a"])
        }]);
        let process = Process {
            unit: Some("my-app.service".into()),
            exe: Some("/usr/bin/my-app".into()),
            groups: vec![],
        };
        let full = Peer::new(1, 1, Some(7)).with_process(process.clone());
        assert!(policy.resolve(&full, Some("ttd"), Some("a")).is_ok());
        let wrong_unit = Peer::new(1, 1, Some(7)).with_process(Process {
            unit: Some("other.service".into()),
            ..process.clone()
        });
        assert_eq!(
            policy.resolve(&wrong_unit, Some("ttd"), Some("a")),
            Err(Refusal::NotGranted)
        );
        let wrong_exe = Peer::new(1, 1, Some(7)).with_process(Process {
            exe: Some("/tmp/my-app".into()),
            ..process.clone()
        });
        assert_eq!(
            policy.resolve(&wrong_exe, Some("ttd"), Some("a")),
            Err(Refusal::NotGranted)
        );
        let wrong_uid = Peer::new(2, 1, Some(7)).with_process(process);
        assert_eq!(
            policy.resolve(&wrong_uid, Some("ttd"), Some("a")),
            Err(Refusal::NotGranted)
        );
        // Unknown process facts never match a grant that needs them.
        assert_eq!(
            policy.resolve(&peer(1, 1), Some("ttd"), Some("a")),
            Err(Refusal::NotGranted)
        );
    }

    #[test]
    fn a_unit_grant_is_not_matched_by_a_users_unit_of_that_name() {
        let policy = policy(&[GrantConfig {
            unit: Some("altinn-studio.service".into()),
            ..for_uid(1000, "ttd", &["a"])
        }]);
        let from_cgroup = |path: &str| {
            Peer::new(1000, 1000, Some(7)).with_process(Process {
                unit: crate::peer::unit_from_cgroup(&format!("0::{path}\n")),
                ..Process::default()
            })
        };
        let service = from_cgroup("/system.slice/altinn-studio.service");
        assert!(policy.resolve(&service, Some("ttd"), Some("a")).is_ok());
        for impostor in [
            "/user.slice/user-1000.slice/user@1000.service/app.slice/altinn-studio.service",
            "/system.slice/other.service/altinn-studio.service",
        ] {
            assert_eq!(
                policy.resolve(&from_cgroup(impostor), Some("ttd"), Some("a")),
                Err(Refusal::NotGranted),
                "{impostor}"
            );
        }
    }

    #[test]
    fn granted_lists_the_peers_own_grants() {
        let policy = policy(&[
            for_uid(1, "ttd", &["a", "b"]),
            for_uid(2, "ttd", &["c"]),
            for_uid(1, "digdir", &["*"]),
        ]);
        assert_eq!(
            policy.granted(&peer(1, 1)),
            vec![("ttd", vec!["a", "b"]), ("digdir", vec!["*"])]
        );
        assert!(policy.granted(&peer(3, 3)).is_empty());
    }

    #[test]
    fn exe_through_a_symlink_matches_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("my-app");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("current");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let policy = policy(&[GrantConfig {
            exe: Some(link),
            ..for_uid(1, "ttd", &["a"])
        }]);
        let peer = Peer::new(1, 1, Some(7)).with_process(Process {
            exe: Some(std::fs::canonicalize(&real).unwrap()),
            ..Process::default()
        });
        assert!(policy.resolve(&peer, Some("ttd"), Some("a")).is_ok());
    }

    #[test]
    fn users_and_groups_resolve_by_name() {
        let root = GrantConfig {
            user: Some("root".into()),
            group: Some("root".into()),
            ..grant("ttd", &["a"])
        };
        let policy = policy(&[root]);
        assert!(policy.resolve(&peer(0, 0), Some("ttd"), Some("a")).is_ok());
        assert!(policy.resolve(&peer(1, 0), Some("ttd"), Some("a")).is_err());
    }

    #[test]
    fn unknown_user_and_group_are_named() {
        let user = GrantConfig {
            user: Some("no-such-user-xq".into()),
            ..grant("ttd", &["a"])
        };
        let err = error(&[for_uid(1, "ttd", &["a"]), user]);
        assert!(
            err.starts_with("`grant[1].user` = \"no-such-user-xq\": no such name"),
            "{err}"
        );
        let group = GrantConfig {
            group: Some("no-such-group-xq".into()),
            ..grant("ttd", &["a"])
        };
        let err = error(&[group]);
        assert!(
            err.starts_with("`grant[0].group` = \"no-such-group-xq\": no such name"),
            "{err}"
        );
        assert!(err.ends_with("create the group or fix the name"), "{err}");
    }

    #[test]
    fn a_grant_must_name_somebody() {
        let err = error(&[grant("ttd", &["a"])]);
        assert!(err.contains("`grant[0]` names nobody"), "{err}");
    }

    #[test]
    fn id_and_name_together_are_refused() {
        let both = GrantConfig {
            uid: Some(0),
            user: Some("root".into()),
            ..grant("ttd", &["a"])
        };
        assert!(error(&[both]).contains("`grant[0].uid` and `grant[0].user` are both set"));
        let both = GrantConfig {
            gid: Some(0),
            group: Some("root".into()),
            ..grant("ttd", &["a"])
        };
        assert!(error(&[both]).contains("`grant[0].gid` and `grant[0].group` are both set"));
    }

    #[test]
    fn apps_are_checked() {
        assert!(error(&[for_uid(1, "ttd", &[])]).starts_with("`grant[0].apps` is empty"));
        assert!(error(&[for_uid(1, "ttd", &["*", "a"])]).contains("mixes \"*\""));
        let err = error(&[for_uid(1, "ttd", &["my app"])]);
        assert!(
            err.starts_with("`grant[0].apps` entry \"my app\" contains ' '"),
            "{err}"
        );
    }

    #[test]
    fn issuer_unit_and_exe_are_checked() {
        assert!(error(&[for_uid(1, "", &["a"])]).starts_with("`grant[0].issuer` is empty"));
        let unit = GrantConfig {
            unit: Some("my-app".into()),
            ..for_uid(1, "ttd", &["a"])
        };
        assert!(error(&[unit]).starts_with("`grant[0].unit` = \"my-app\" is not a unit name"));
        let exe = GrantConfig {
            exe: Some("bin/app".into()),
            ..for_uid(1, "ttd", &["a"])
        };
        assert!(error(&[exe]).contains("`grant[0].exe` = \"bin/app\" is not an absolute path"));
    }

    #[test]
    fn an_exe_grant_must_name_the_user() {
        for without_user in [
            GrantConfig {
                exe: Some("/usr/bin/my-app".into()),
                ..grant("ttd", &["a"])
            },
            GrantConfig {
                exe: Some("/usr/bin/my-app".into()),
                gid: Some(10),
                unit: Some("my-app.service".into()),
                ..grant("ttd", &["a"])
            },
        ] {
            let err = error(&[for_uid(1, "ttd", &["a"]), without_user]);
            assert!(
                err.starts_with("`grant[1].exe` is set without `uid` or `user`"),
                "{err}"
            );
            assert!(err.contains("add the user the program runs as"), "{err}");
        }
        let with_user = GrantConfig {
            exe: Some("/usr/bin/my-app".into()),
            user: Some("root".into()),
            ..grant("ttd", &["a"])
        };
        assert_eq!(policy(&[with_user]).len(), 1);
    }

    #[test]
    fn names_are_limited_to_a_safe_alphabet() {
        assert!(check_name("studio.designer").is_ok());
        assert!(check_name("my-app_2").is_ok());
        assert!(check_name("a\u{7f}").unwrap_err().contains("'\\u{7f}'"));
        assert!(check_name("a\tb").unwrap_err().contains("'\\t'"));
        assert!(check_name("æ").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1))
            .unwrap_err()
            .contains("longer"));
    }
}
