//! What /proc/PID says about a process: unit, pod, executable, groups, and
//! the ids and start time that tell whether it is the process that connected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Process;
use crate::front::kubernetes::pod_of_cgroup;

/// Everything read from /proc for one pid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Reading {
    pub process: Process,
    /// Real and effective uid, real and effective gid (`Uid:`/`Gid:` lines).
    pub ids: Option<Ids>,
    /// When the process started, in clock ticks since boot (/proc/PID/stat).
    pub started: Option<u64>,
}

/// Real and effective user and group ids of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ids {
    pub uid: (u32, u32),
    pub gid: (u32, u32),
}

impl Reading {
    /// Whether the process read is what SO_PEERCRED says connected:
    /// both its real and effective ids are `uid`:`gid`. A process that
    /// connected and then changed its ids (exec'd a setuid program, or
    /// restored the ids it had lowered to connect) is not, and nor is
    /// another user's process that got its pid. Unread ids count against it.
    pub fn has_the_peers_ids(&self, uid: u32, gid: u32) -> bool {
        self.ids
            .is_some_and(|ids| ids.uid == (uid, uid) && ids.gid == (gid, gid))
    }

    /// Whether the process read started no later than the clock tick of
    /// `accepted`, as the process that connected did; a start time unread
    /// counts against it.
    pub fn started_by(&self, accepted: Duration) -> bool {
        self.started
            .is_some_and(|ticks| ticks <= ticks_of(accepted, clock_ticks_per_second()))
    }
}

/// Reads unit, pod, exe, groups, ids and start time of `pid`; what cannot
/// be read stays empty.
pub(super) fn read(pid: i32) -> Reading {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).ok();
    let unit = cgroup.as_deref().and_then(unit_from_cgroup);
    let pod = cgroup.as_deref().map(pod_of_cgroup).unwrap_or_default();
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let exe = exe_of(&dir, &status);
    let started = std::fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|text| start_from_stat(&text));
    Reading {
        process: Process {
            unit,
            pod,
            exe,
            groups: groups_from_status(&status),
        },
        ids: ids_from_status(&status),
        started,
    }
}

/// The executable, when it can stand for what the process runs: nobody
/// traces the process (a tracer can make it run any code), and the file
/// running is the one at that path as the agent sees it, not another file
/// the process's own mount namespace put over the path. A program replaced
/// on disk since it started has no file to compare; it counts only in the
/// agent's own mount namespace.
fn exe_of(dir: &Path, status: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    if status_line(status, "TracerPid:")?.trim() != "0" {
        return None;
    }
    let link = std::fs::read_link(dir.join("exe")).ok()?;
    if link.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") {
        let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
        let theirs = std::fs::read_link(dir.join("ns/mnt")).ok();
        return (ours.is_some() && ours == theirs).then(|| installed_path(link));
    }
    // The magic link opens the running file itself, wherever it is mounted.
    let running = std::fs::metadata(dir.join("exe")).ok()?;
    let at_path = std::fs::metadata(&link).ok()?;
    (running.dev() == at_path.dev() && running.ino() == at_path.ino()).then_some(link)
}

/// The path of a running program as /proc/PID/exe links it. A program
/// whose file was replaced or removed since it started links as
/// `/usr/bin/x (deleted)`; while a file is at `/usr/bin/x` again (a package
/// upgrade replaced it), the program counts as `/usr/bin/x`, so that an
/// upgrade does not cut a running service off from its tokens until it
/// restarts. Removed for good, it keeps the suffix and matches no grant.
pub(super) fn installed_path(link: PathBuf) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = link.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(path) if Path::new(std::ffi::OsStr::from_bytes(path)).exists() => {
            PathBuf::from(std::ffi::OsStr::from_bytes(path))
        }
        _ => link,
    }
}

/// The systemd unit from /proc/PID/cgroup: the first service or scope on
/// the process's cgroup path, which is the unit the system manager (PID 1)
/// runs it in. What lies below that unit is the unit's own to arrange: a
/// user's systemd (`user@UID.service`) or a service with `Delegate=` can
/// create cgroups with any name there, so a name below never counts.
/// `systemd-run --user --unit=x.service` runs in
/// `/user.slice/user-1000.slice/user@1000.service/app.slice/x.service` and
/// reads as `user@1000.service`.
///
/// Only PID 1 makes units, and it makes them under slices alone: a service
/// or scope counts only when every component before it is a `.slice`.
/// Container runtimes make cgroups outside systemd's slices
/// (`/docker/<id>/…`, `/lxc.payload.c1/…`, `/kubepods/…`) and hand them to
/// whoever runs inside, who may name a child `my-app.service`; such a path
/// has no unit.
///
/// The unified hierarchy's line (`0::`) is read first; on a host with
/// systemd's legacy v1 hierarchy that line is `/` for every process, and
/// the `name=systemd` line holds the path instead.
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    let unified = text.lines().find_map(|line| line.strip_prefix("0::"));
    let legacy = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers == "name=systemd").then_some(path)
    });
    [unified, legacy]
        .into_iter()
        .flatten()
        .find_map(unit_of_path)
}

/// The first service or scope of a cgroup path, if only slices lead to it.
fn unit_of_path(path: &str) -> Option<String> {
    let mut parts = path.split('/').filter(|part| !part.is_empty());
    let first_other = parts.find(|part| !part.ends_with(".slice"))?;
    let is_unit = first_other.ends_with(".service") || first_other.ends_with(".scope");
    is_unit.then(|| first_other.to_owned())
}

/// Supplementary groups from the `Groups:` line of /proc/PID/status.
pub fn groups_from_status(text: &str) -> Vec<u32> {
    status_line(text, "Groups:")
        .map(|ids| {
            ids.split_whitespace()
                .filter_map(|id| id.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Real and effective ids from the `Uid:` and `Gid:` lines (real,
/// effective, saved, filesystem).
fn ids_from_status(text: &str) -> Option<Ids> {
    let pair = |name: &str| -> Option<(u32, u32)> {
        let mut ids = status_line(text, name)?.split_whitespace();
        Some((ids.next()?.parse().ok()?, ids.next()?.parse().ok()?))
    };
    Some(Ids {
        uid: pair("Uid:")?,
        gid: pair("Gid:")?,
    })
}

fn status_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| line.strip_prefix(name))
}

/// Field 22 of /proc/PID/stat, the start time in clock ticks since boot.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from its last `)`.
fn start_from_stat(text: &str) -> Option<u64> {
    let (_, after_name) = text.rsplit_once(')')?;
    // Field 3 (state) is the first after the name; field 22 is 19 further.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The time since boot, suspend included: the clock /proc/PID/stat's start
/// times count on.
pub fn since_boot() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill; CLOCK_BOOTTIME exists since Linux 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The clock tick `time` falls in, as the kernel rounds start times: down.
fn ticks_of(time: Duration, per_second: u64) -> u64 {
    (time.as_nanos() * u128::from(per_second) / 1_000_000_000) as u64
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_of_a_system_service() {
        assert_eq!(
            unit_from_cgroup("0::/system.slice/my-app.service\n").as_deref(),
            Some("my-app.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/system.slice/system-getty.slice/getty@tty1.service\n").as_deref(),
            Some("getty@tty1.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n").as_deref(),
            Some("session-3.scope")
        );
    }

    #[test]
    fn a_users_own_units_read_as_the_user_manager() {
        // systemd-run --user --unit=altinn-studio.service, and a scope of the user's manager.
        for path in [
            "/user.slice/user-1000.slice/user@1000.service/app.slice/altinn-studio.service",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope",
            "/user.slice/user-1000.slice/user@1000.service/init.scope",
        ] {
            assert_eq!(
                unit_from_cgroup(&format!("0::{path}\n")).as_deref(),
                Some("user@1000.service"),
                "{path}"
            );
        }
    }

    #[test]
    fn a_cgroup_made_in_a_delegated_subtree_does_not_count() {
        for below in ["worker", "altinn-studio.service", "a/b/altinn-studio.scope"] {
            let text = format!("0::/system.slice/my-app.service/{below}\n");
            assert_eq!(
                unit_from_cgroup(&text).as_deref(),
                Some("my-app.service"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_unit_named_in_a_containers_cgroup_does_not_count() {
        for path in [
            "/docker/0123abcd/my-app.service",
            "/lxc.payload.c1/system.slice/my-app.service",
            "/kubepods/besteffort/pod1234/my-app.service",
            "/machine.slice/libpod-ab12.scope/container/system.slice/my-app.service",
            "/my-app.service.d/my-app.service",
        ] {
            let found = unit_from_cgroup(&format!("0::{path}\n"));
            let expected = path
                .starts_with("/machine.slice/")
                .then(|| "libpod-ab12.scope".to_owned());
            assert_eq!(found, expected, "{path}");
        }
        // PID 1's own scope sits at the root, with no slice before it.
        assert_eq!(
            unit_from_cgroup("0::/init.scope\n").as_deref(),
            Some("init.scope")
        );
    }

    #[test]
    fn unit_from_the_legacy_hierarchy() {
        // Legacy: the unified line is `/` for everyone; systemd's v1 hierarchy has the path.
        let legacy =
            "12:cpu,cpuacct:/other.service\n1:name=systemd:/system.slice/legacy.service\n0::/\n";
        assert_eq!(unit_from_cgroup(legacy).as_deref(), Some("legacy.service"));
        let user =
            "1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n";
        assert_eq!(unit_from_cgroup(user).as_deref(), Some("user@1000.service"));
        // Hybrid: both hierarchies say the same.
        let hybrid = "1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service\n";
        assert_eq!(unit_from_cgroup(hybrid).as_deref(), Some("a.service"));
    }

    #[test]
    fn no_unit_outside_services_and_scopes() {
        assert_eq!(unit_from_cgroup("0::/\n"), None);
        assert_eq!(unit_from_cgroup("0::/system.slice\n"), None);
        assert_eq!(unit_from_cgroup(""), None);
    }

    #[test]
    fn groups_and_ids_from_the_status_lines() {
        let status = "Name:\tbash\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 24 1000 \nNgid:\t0\n";
        assert_eq!(groups_from_status(status), vec![4, 24, 1000]);
        assert!(groups_from_status("Groups:\t\n").is_empty());
        assert!(groups_from_status("Name:\tx\n").is_empty());
        assert_eq!(
            ids_from_status(status),
            Some(Ids {
                uid: (1000, 1001),
                gid: (50, 51)
            })
        );
        assert_eq!(ids_from_status("Uid:\t1\t1\t1\t1\n"), None);
    }

    #[test]
    fn start_time_is_counted_past_a_name_with_parentheses() {
        let stat =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_from_stat(stat), Some(987654));
        assert_eq!(start_from_stat("4242 (x) S 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let started = start_from_stat(&own).unwrap();
        let now = ticks_of(since_boot(), clock_ticks_per_second());
        assert!(started <= now, "started {started}, now {now}");
    }

    #[test]
    fn only_a_process_started_by_the_accept_can_be_the_peer() {
        let per_second = clock_ticks_per_second();
        let accepted = Duration::from_secs(1000) + Duration::from_millis(5);
        let tick = ticks_of(accepted, per_second);
        let reading = |started| Reading {
            started: Some(started),
            ..Reading::default()
        };
        assert!(reading(tick).started_by(accepted));
        assert!(reading(tick - 500).started_by(accepted));
        // Started after the accept's tick: not the process that connected.
        assert!(!reading(tick + 1).started_by(accepted));
        assert!(!Reading::default().started_by(accepted));
    }

    #[test]
    fn only_the_connecting_ids_are_the_peers() {
        let reading = |uid, euid, gid, egid| Reading {
            ids: Some(Ids {
                uid: (uid, euid),
                gid: (gid, egid),
            }),
            ..Reading::default()
        };
        assert!(reading(7, 7, 8, 8).has_the_peers_ids(7, 8));
        // Another user's or group's process.
        assert!(!reading(9, 9, 8, 8).has_the_peers_ids(7, 8));
        assert!(!reading(7, 7, 9, 9).has_the_peers_ids(7, 8));
        // Connected with lowered effective ids, then restored them.
        assert!(!reading(0, 0, 0, 8).has_the_peers_ids(7, 8));
        // A setuid or setgid program exec'd after the connect.
        assert!(!reading(7, 0, 8, 8).has_the_peers_ids(7, 8));
        assert!(!reading(7, 7, 8, 0).has_the_peers_ids(7, 8));
        assert!(!Reading::default().has_the_peers_ids(7, 8));
    }
}
