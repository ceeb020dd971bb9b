//! The caller's pod, from the cgroup paths in /proc/PID/cgroup: the UID
//! the kubelet wrote into the name of the pod's cgroup.
//!
//! The kubelet's two cgroup drivers lay pods out as:
//!
//! - systemd: `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/<runtime>-<id>.scope`,
//!   with `_` for each `-` of the UID (systemd reads `-` in a slice name as
//!   nesting), and no qos level for guaranteed pods:
//!   `/kubepods.slice/kubepods-pod<uid>.slice/…`. The runtime's scope is
//!   `cri-containerd-<id>.scope`, `crio-<id>.scope` or `docker-<id>.scope`.
//! - cgroupfs: `/kubepods/<qos>/pod<uid>/<id>`, and `/kubepods/pod<uid>/<id>`
//!   for guaranteed pods.
//!
//! `<qos>` is `burstable` or `besteffort`. On cgroup v2 the path is on the
//! `0::` line; on v1 on every controller's line and on `name=systemd`'s.
//! An agent in a cgroup namespace of its own sees paths relative to its
//! namespace's root, climbing out with `..` first:
//! `/../../kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/…`
//! for another pod of the node when the agent runs in a pod itself.
//!
//! As with systemd units ([`crate::front::peer`]), a name counts only where
//! the kubelet made it: every component before the pod's must be one of
//! the kubelet's levels above pods, in their order (or `..`). A container
//! runtime or a delegated service makes cgroups of its own and lets what
//! runs inside name children as it likes, so
//! `/docker/x/kubepods/pod<uid>/…` and `/system.slice/a.service/kubepods/pod<uid>`
//! name no pod. Below the pod's cgroup, the container's own names count
//! for nothing either, except that another pod UID there makes the path
//! ambiguous: such a caller is refused rather than guessed about.

/// What the caller's cgroups say about its pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PodCgroup {
    /// /proc/PID/cgroup was not read: no pid (the caller is in another pid
    /// namespace than the agent), or the process's facts could not be
    /// trusted (see [`crate::front::peer`]).
    #[default]
    Unread,
    /// No cgroup of the caller is one the kubelet made for a pod.
    NoPod,
    /// The pod's UID, with `-` as Kubernetes writes it.
    Pod(String),
    /// Two different pod UIDs: on two hierarchies' lines, or nested in one path.
    Several(String, String),
}

/// The pod named by the cgroup paths of `text` (the whole /proc/PID/cgroup).
pub fn pod_of_cgroup(text: &str) -> PodCgroup {
    let mut found: Option<String> = None;
    for line in text.lines() {
        // Every pod's name has `pod` in it: the agent reads this file for
        // every connection, and most callers are in no pod.
        let Some(path) = line
            .splitn(3, ':')
            .nth(2)
            .filter(|path| path.contains("pod"))
        else {
            continue;
        };
        match pods_of_path(path) {
            (None, _) => {}
            (Some(first), Some(nested)) => return PodCgroup::Several(first, nested),
            (Some(uid), None) => match &found {
                Some(seen) if *seen != uid => return PodCgroup::Several(seen.clone(), uid),
                Some(_) => {}
                None => found = Some(uid),
            },
        }
    }
    found.map_or(PodCgroup::NoPod, PodCgroup::Pod)
}

/// The kubelet's qos classes below `kubepods`; guaranteed pods have none.
const QOS_CLASSES: [&str; 2] = ["burstable", "besteffort"];

/// The pod UID one path names, and another pod UID nested below it, if any.
fn pods_of_path(path: &str) -> (Option<String>, Option<String>) {
    // A path that climbed out of a cgroup namespace may start at any
    // level below the top, even at the pod's.
    let relative = path.split('/').any(|part| part == "..");
    let mut parts = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != "..");
    // The last kubelet level seen: its driver, index and qos class.
    let mut above: Option<(Driver, usize, Option<&str>)> = None;
    for part in parts.by_ref() {
        if let Some(pod) = PodName::parse(part) {
            if !pod.fits_below(above, relative) {
                return (None, None);
            }
            let nested = parts
                .filter_map(PodName::parse)
                .map(|other| other.uid)
                .find(|other| *other != pod.uid);
            return (Some(pod.uid), nested);
        }
        let Some(level) = kubelet_level(part) else {
            return (None, None);
        };
        let in_order = match above {
            None => relative || level.1 == 0,
            Some((driver, index, _)) => level.0 == driver && level.1 == index + 1,
        };
        if !in_order {
            return (None, None);
        }
        above = Some(level);
    }
    (None, None)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Systemd,
    Cgroupfs,
}

/// Which kubelet level above pods `part` is: its driver, its index in
/// the driver's levels (systemd: `kubepods.slice`, `kubepods-<qos>.slice`;
/// cgroupfs: `kubepods`, `<qos>`), and the qos class it names.
fn kubelet_level(part: &str) -> Option<(Driver, usize, Option<&'static str>)> {
    match part {
        "kubepods.slice" => return Some((Driver::Systemd, 0, None)),
        "kubepods" => return Some((Driver::Cgroupfs, 0, None)),
        _ => {}
    }
    let systemd_class = part
        .strip_prefix("kubepods-")
        .and_then(|rest| rest.strip_suffix(".slice"));
    QOS_CLASSES.into_iter().find_map(|class| {
        if part == class {
            Some((Driver::Cgroupfs, 1, Some(class)))
        } else if systemd_class == Some(class) {
            Some((Driver::Systemd, 1, Some(class)))
        } else {
            None
        }
    })
}

/// A pod's cgroup name as the kubelet writes it.
#[derive(Debug, PartialEq, Eq)]
struct PodName<'a> {
    driver: Driver,
    /// The qos class in a systemd slice name.
    qos: Option<&'a str>,
    uid: String,
}

impl<'a> PodName<'a> {
    /// `kubepods[-<qos>]-pod<uid with _>.slice` or `pod<uid>`.
    fn parse(part: &'a str) -> Option<PodName<'a>> {
        if let Some(name) = part
            .strip_prefix("kubepods-")
            .and_then(|name| name.strip_suffix(".slice"))
        {
            let class = QOS_CLASSES.into_iter().find(|class| {
                name.strip_prefix(class)
                    .is_some_and(|rest| rest.starts_with("-pod"))
            });
            let escaped = name
                .strip_prefix(class.unwrap_or_default())
                .and_then(|rest| rest.strip_prefix(if class.is_some() { "-pod" } else { "pod" }))?;
            // systemd reads `-` as nesting: the kubelet wrote `_`.
            if escaped.contains('-') {
                return None;
            }
            let uid = pod_uid(&escaped.replace('_', "-"))?;
            return Some(PodName {
                driver: Driver::Systemd,
                qos: class,
                uid,
            });
        }
        let uid = pod_uid(part.strip_prefix("pod")?)?;
        Some(PodName {
            driver: Driver::Cgroupfs,
            qos: None,
            uid,
        })
    }

    /// Whether the kubelet makes this name right below `above`, the last
    /// of its levels on the path (none: only on a path relative to a
    /// cgroup namespace, which may start anywhere).
    fn fits_below(&self, above: Option<(Driver, usize, Option<&str>)>, relative: bool) -> bool {
        match above {
            None => relative,
            Some((driver, _, _)) if driver != self.driver => false,
            // A systemd pod slice repeats its qos slice's class, if any.
            Some((Driver::Systemd, _, qos)) => qos == self.qos,
            Some((Driver::Cgroupfs, _, _)) => true,
        }
    }
}

/// `uid` if it can be a pod UID: a UUID, or the hash the kubelet gives a
/// static pod; lower-case hex digits and `-`.
fn pod_uid(uid: &str) -> Option<String> {
    let shaped = (1..=64).contains(&uid.len())
        && uid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        && uid.bytes().any(|b| b != b'-');
    shaped.then(|| uid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f6b8a2e-3c1d-4e5f-9a7b-1c2d3e4f5a6b";
    const OTHER: &str = "7d3e2c1b-aaaa-4bbb-8ccc-123456789abc";

    fn escaped(uid: &str) -> String {
        uid.replace('-', "_")
    }

    fn pod(text: &str) -> PodCgroup {
        pod_of_cgroup(text)
    }

    fn one(uid: &str) -> PodCgroup {
        PodCgroup::Pod(uid.into())
    }

    #[test]
    fn the_systemd_drivers_layouts_on_cgroup_v2() {
        let u = escaped(UID);
        for path in [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-ab12.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-ab12.scope"),
            format!("/kubepods.slice/kubepods-pod{u}.slice/docker-ab12.scope"),
            // The pod's own cgroup, and what a container nests below its scope.
            format!("/kubepods.slice/kubepods-pod{u}.slice"),
            format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-ab12.scope/init"),
        ] {
            assert_eq!(pod(&format!("0::{path}\n")), one(UID), "{path}");
        }
    }

    #[test]
    fn the_cgroupfs_drivers_layouts() {
        for path in [
            format!("/kubepods/besteffort/pod{UID}/0123abcd"),
            format!("/kubepods/burstable/pod{UID}/0123abcd"),
            format!("/kubepods/pod{UID}/0123abcd"),
        ] {
            assert_eq!(pod(&format!("0::{path}\n")), one(UID), "{path}");
        }
    }

    #[test]
    fn cgroup_v1_lines_and_the_hybrid_unified_line() {
        let u = escaped(UID);
        let v1 = format!(
            "12:memory:/kubepods/burstable/pod{UID}/c1\n2:cpu,cpuacct:/kubepods/burstable/pod{UID}/c1\n1:name=systemd:/kubepods/burstable/pod{UID}/c1\n0::/\n"
        );
        assert_eq!(pod(&v1), one(UID));
        let systemd_v1 = format!(
            "5:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-1.scope\n1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-1.scope\n"
        );
        assert_eq!(pod(&systemd_v1), one(UID));
        // Only one hierarchy names the pod; the others are the host's.
        let partly =
            format!("9:name=systemd:/user.slice/session-1.scope\n0::/kubepods/pod{UID}/c\n");
        assert_eq!(pod(&partly), one(UID));
    }

    #[test]
    fn paths_relative_to_a_cgroup_namespace() {
        let u = escaped(UID);
        for path in [
            format!("/../../kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-1.scope"),
            format!("/../../../kubepods-pod{u}.slice/crio-1.scope"),
            format!("/../kubepods-burstable-pod{u}.slice/crio-1.scope"),
            format!("/../../besteffort/pod{UID}/c"),
            format!("/../pod{UID}/c"),
            format!("/../../../kubepods.slice/kubepods-pod{u}.slice/c.scope"),
        ] {
            assert_eq!(pod(&format!("0::{path}\n")), one(UID), "{path}");
        }
    }

    #[test]
    fn a_pod_named_in_a_delegated_subtree_names_no_pod() {
        let u = escaped(UID);
        for path in [
            format!("/docker/0123/kubepods/pod{UID}/c"),
            format!("/docker/0123/kubepods/besteffort/pod{UID}/c"),
            format!("/system.slice/containerd.service/kubepods-pod{u}.slice/c.scope"),
            format!("/lxc.payload.c1/kubepods.slice/kubepods-pod{u}.slice/c.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/kubepods/pod{UID}"),
            format!("/../x/kubepods/pod{UID}/c"),
            // Kubelet levels out of their order, or of two drivers.
            format!("/besteffort/pod{UID}/c"),
            format!("/kubepods-besteffort-pod{u}.slice/c.scope"),
            format!("/pod{UID}/c"),
            format!("/kubepods/kubepods/pod{UID}/c"),
            format!("/kubepods.slice/besteffort/pod{UID}/c"),
            format!("/kubepods/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod{u}.slice"),
            format!("/kubepods.slice/kubepods-besteffort-pod{u}.slice/c.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-pod{u}.slice/c.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/pod{UID}/c"),
            format!("/kubepods/besteffort/kubepods-besteffort-pod{u}.slice/c"),
        ] {
            assert_eq!(pod(&format!("0::{path}\n")), PodCgroup::NoPod, "{path}");
        }
    }

    #[test]
    fn names_that_are_not_pod_uids() {
        for path in [
            "/kubepods/besteffort/pod/c".to_owned(),
            "/kubepods/besteffort/podXYZ/c".to_owned(),
            "/kubepods/besteffort/pod---/c".to_owned(),
            format!("/kubepods/besteffort/pod{}/c", UID.to_uppercase()),
            format!("/kubepods/besteffort/pod{}/c", "a".repeat(65)),
            // systemd's `-` is nesting: a UID with `-` in a slice name is no kubelet's.
            format!("/kubepods.slice/kubepods-pod{UID}.slice/c.scope"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod.slice".to_owned(),
        ] {
            assert_eq!(pod(&format!("0::{path}\n")), PodCgroup::NoPod, "{path}");
        }
        // A static pod's UID is a hash, not a UUID.
        let hash = "6e5d4a8c2f1b0e9d8c7b6a5f4e3d2c1b";
        assert_eq!(
            pod(&format!("0::/kubepods/burstable/pod{hash}/c\n")),
            one(hash)
        );
    }

    #[test]
    fn no_pod_outside_the_kubelets_cgroups() {
        for text in [
            "0::/\n",
            "0::/system.slice/access-token-agent.service\n",
            "9:name=systemd:/user.slice/user-1000.slice/session-2.scope\n0::/\n",
            "0::/kubepods.slice/kubepods-besteffort.slice\n",
            "0::/kubepods\n",
            "",
            "garbage\n",
        ] {
            assert_eq!(pod(text), PodCgroup::NoPod, "{text:?}");
        }
    }

    #[test]
    fn two_pod_uids_are_refused_not_guessed() {
        // On two hierarchies.
        let text = format!("1:name=systemd:/kubepods/pod{OTHER}/c\n0::/kubepods/pod{UID}/c\n");
        assert_eq!(pod(&text), PodCgroup::Several(OTHER.into(), UID.into()));
        // Nested in one path, in either driver's form.
        let nested = format!("0::/kubepods/besteffort/pod{UID}/pod{OTHER}/c\n");
        assert_eq!(pod(&nested), PodCgroup::Several(UID.into(), OTHER.into()));
        let o = escaped(OTHER);
        let nested = format!("0::/kubepods/pod{UID}/x/kubepods-burstable-pod{o}.slice\n");
        assert_eq!(pod(&nested), PodCgroup::Several(UID.into(), OTHER.into()));
        // The same pod twice is one pod.
        let same =
            format!("1:name=systemd:/kubepods/pod{UID}/c\n0::/kubepods/pod{UID}/c/pod{UID}\n");
        assert_eq!(pod(&same), one(UID));
    }
}
