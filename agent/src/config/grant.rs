//! `[[grant]]`: who may have which token, checked and resolved.
//!
//! Users and groups are resolved to ids when the config is read, so a typo
//! fails the config instead of silently granting nothing.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::accounts;
use crate::token::name::check_name;

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
    /// path, when only slices lead to it. Units a user's own systemd starts all run inside
    /// `user@UID.service` and match only that, whatever they are named.
    pub unit: Option<String>,
    /// The program the peer runs when the agent accepts its connection, an
    /// absolute path; symlinks in it are resolved when the policy is built.
    /// It is read at accept, not at connect: between the two, a process can
    /// fork (the child keeps the connection and runs whatever it likes) and
    /// exec the granted program, which the agent then reads. Any user can
    /// run the program and do that, so `exe` is allowed only together with
    /// `uid` or `user`: it narrows which of that user's programs may have
    /// the token, and never stands alone. A program replaced on disk since
    /// it started still counts (see [`crate::front::policy`]).
    pub exe: Option<PathBuf>,
    /// The Kubernetes namespace of the calling pod, as its verified
    /// service-account token says (needs `[kubernetes]`). A grant naming
    /// a namespace matches only requests that carry such a token.
    pub k8s_namespace: Option<String>,
    /// The pod's service account, by name. Service-account names are
    /// unique only within a namespace, so it needs `k8s_namespace` too.
    pub k8s_service_account: Option<String>,
    pub issuer: String,
    pub apps: Vec<String>,
}

/// A `[[grant]]` checked and resolved: names turned into ids, symlinks in
/// `exe` resolved. Matching it against peers is the front's business
/// ([`crate::front::policy`]).
#[derive(Debug, Clone)]
pub struct Grant {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub unit: Option<String>,
    pub exe: Option<PathBuf>,
    /// The Kubernetes identity the request's verified token must carry.
    pub kubernetes: Option<K8sIdentity>,
    pub issuer: String,
    pub apps: Apps,
}

/// `k8s_namespace`, and `k8s_service_account` within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sIdentity {
    pub namespace: String,
    /// Any service account of the namespace when absent.
    pub service_account: Option<String>,
}

/// The apps a grant covers.
#[derive(Debug, Clone)]
pub enum Apps {
    /// `["*"]`: any app name (not the empty one).
    Any,
    /// These names; `""` is a token without the app claim.
    Listed(Vec<String>),
}

/// The ids that every peer outside the agent's user namespace shows as:
/// the kernel's overflow uid and gid, where the namespace's uid or gid map
/// leaves ids out; `None` where the map is the identity and every peer's
/// id is its own. Read by [`crate::front::peer::userns`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverflowIds {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Checks and resolves every grant; the error names the grant key that is wrong.
pub fn resolve(grants: &[GrantConfig]) -> Result<Vec<Grant>, String> {
    resolve_for(grants, OverflowIds::default())
}

/// [`resolve`], refusing too a grant of an id in `overflow`: every peer
/// the agent's user namespace does not map would match it.
pub fn resolve_for(grants: &[GrantConfig], overflow: OverflowIds) -> Result<Vec<Grant>, String> {
    grants
        .iter()
        .enumerate()
        .map(|(index, grant)| Grant::from_config(index, grant, overflow))
        .collect()
}

impl Grant {
    fn from_config(
        index: usize,
        config: &GrantConfig,
        overflow: OverflowIds,
    ) -> Result<Grant, String> {
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
        refuse_overflow(uid, overflow.uid, ("uid", config.user.as_deref()), &key)?;
        refuse_overflow(gid, overflow.gid, ("gid", config.group.as_deref()), &key)?;
        if let Some(unit) = &config.unit {
            check_unit(unit).map_err(|why| format!("{} = {unit:?} {why}", key("unit")))?;
        }
        let exe = match &config.exe {
            Some(exe) => Some(grant_exe(exe, uid).map_err(|why| format!("{} {why}", key("exe")))?),
            None => None,
        };
        let kubernetes = k8s_identity(config, &key)?;
        if uid.is_none() && gid.is_none() && config.unit.is_none() && kubernetes.is_none() {
            return Err(format!(
                "`grant[{index}]` names nobody; set `uid`, `user`, `gid`, `group`, `unit` or `k8s_namespace`"
            ));
        }
        check_name(&config.issuer).map_err(|why| format!("{} {why}", key("issuer")))?;
        Ok(Grant {
            uid,
            gid,
            unit: config.unit.clone(),
            exe,
            kubernetes,
            issuer: config.issuer.clone(),
            apps: Apps::from_config(&config.apps)
                .map_err(|why| format!("{} {why}", key("apps")))?,
        })
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

/// Refuses a grant naming a Kubernetes identity when the config has no
/// `[kubernetes]` section to verify one with; the error names the key.
pub fn need_kubernetes(grants: &[GrantConfig], section: bool) -> Result<(), String> {
    let named = grants.iter().enumerate().find_map(|(index, grant)| {
        let key = match (&grant.k8s_namespace, &grant.k8s_service_account) {
            (Some(_), _) => "k8s_namespace",
            (None, Some(_)) => "k8s_service_account",
            (None, None) => return None,
        };
        Some(format!("`grant[{index}].{key}`"))
    });
    match named {
        Some(key) if !section => Err(format!(
            "{key} names a Kubernetes identity, but there is no `[kubernetes]` section to verify pods' tokens with; add it with `jwks_file` and `issuer`, or remove the key"
        )),
        _ => Ok(()),
    }
}

/// The grant's Kubernetes identity, checked: names as Kubernetes allows
/// them, and a service account only within a namespace.
fn k8s_identity(
    config: &GrantConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<K8sIdentity>, String> {
    let namespace = match (&config.k8s_namespace, &config.k8s_service_account) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Err(format!(
            "{} is set without {}: service-account names are unique only within a namespace; add the pod's namespace",
            key("k8s_service_account"),
            key("k8s_namespace")
        )),
        (Some(namespace), _) => namespace,
    };
    // A namespace is a DNS-1123 label; a service account a DNS-1123 subdomain.
    check_k8s_name(namespace, 63, false)
        .map_err(|why| format!("{} = {namespace:?} {why}", key("k8s_namespace")))?;
    if let Some(account) = &config.k8s_service_account {
        check_k8s_name(account, 253, true)
            .map_err(|why| format!("{} = {account:?} {why}", key("k8s_service_account")))?;
    }
    Ok(Some(K8sIdentity {
        namespace: namespace.clone(),
        service_account: config.k8s_service_account.clone(),
    }))
}

/// A Kubernetes object name: lower-case letters, digits and `-` (and `.`
/// where `dots`), starting and ending with a letter or digit.
fn check_k8s_name(name: &str, max: usize, dots: bool) -> Result<(), String> {
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > max || !name.chars().all(allowed) {
        return Err(format!(
            "is not a Kubernetes name: at most {max} lower-case letters, digits, '-'{}",
            if dots { " and '.'" } else { "" }
        ));
    }
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err("is not a Kubernetes name: it starts and ends with a letter or digit".into());
    }
    Ok(())
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
        return Err("is set without `uid` or `user`: the executable is read when the agent accepts a connection, and a process of any user can connect, hand the connection to a child and exec that program before the accept; add the user the program runs as, e.g. `user = \"my-app\"`".into());
    }
    Ok(std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf()))
}

/// Refuses `id` if it is the `overflow` id of the agent's user namespace;
/// `kind` is `uid` or `gid`, and `name` the user or group name the grant
/// gave, if it gave one. The error names the key as `key` writes it.
fn refuse_overflow(
    id: Option<u32>,
    overflow: Option<u32>,
    (kind, name): (&str, Option<&str>),
    key: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    let Some(id) = id.filter(|id| Some(*id) == overflow) else {
        return Ok(());
    };
    let named = match (name, kind) {
        (Some(name), "uid") => format!("{} = {name:?} (uid {id})", key("user")),
        (Some(name), _) => format!("{} = {name:?} (gid {id})", key("group")),
        (None, _) => format!("{} = {id}", key(kind)),
    };
    Err(format!(
        "{named} is the overflow {kind} of this agent's user namespace (/proc/self/{kind}_map is not the identity): every peer whose {kind} is not mapped into the namespace shows as {id}, so the grant would match them all; grant {kind}s the namespace maps, or run the agent in the host's user namespace (no systemd `PrivateUsers=`, Kubernetes `hostUsers: true`)"
    ))
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
