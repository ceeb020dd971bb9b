//! The user namespace the agent runs in, as far as its peers' ids go.
//!
//! SO_PEERCRED and /proc give a peer's ids as the agent's user namespace
//! maps them. A peer whose uid is not in the namespace's uid_map shows as
//! the kernel's overflow uid (/proc/sys/kernel/overflowuid, 65534 unless
//! changed), and likewise for gids: all such peers look alike, to the
//! grants and to the per-uid limits. That happens to an agent under
//! systemd's `PrivateUsers=`, in rootless podman, or in a Kubernetes pod
//! with `hostUsers: false`. In the host's own namespace the maps are the
//! identity (`0 0 4294967295`) and every peer's id is its own.

use crate::config::grant::OverflowIds;

/// The ids that unmapped peers show as in the agent's namespace, read from
/// /proc now. A kernel without user namespaces has no map files: its ids
/// are all the peers' own.
pub fn overflow_ids() -> OverflowIds {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    overflow_ids_from(
        read("/proc/self/uid_map").as_deref(),
        read("/proc/self/gid_map").as_deref(),
        (
            read("/proc/sys/kernel/overflowuid").as_deref(),
            read("/proc/sys/kernel/overflowgid").as_deref(),
        ),
    )
}

/// [`overflow_ids`] from the text of the uid and gid maps and of the
/// overflow uid and gid files; a map that is absent is the identity.
pub fn overflow_ids_from(
    uid_map: Option<&str>,
    gid_map: Option<&str>,
    (overflow_uid, overflow_gid): (Option<&str>, Option<&str>),
) -> OverflowIds {
    let overflow = |map: Option<&str>, id: Option<&str>| {
        let identity = map.is_none_or(is_identity);
        (!identity).then(|| id.and_then(|id| id.trim().parse().ok()).unwrap_or(65534))
    };
    OverflowIds {
        uid: overflow(uid_map, overflow_uid),
        gid: overflow(gid_map, overflow_gid),
    }
}

/// Whether a uid_map or gid_map maps every id to itself: each line
/// (`inside outside count`) maps a range to the same ids, and the ranges,
/// which the kernel keeps from overlapping, add up to all 4294967295 ids.
pub fn is_identity(map: &str) -> bool {
    let mut total: u64 = 0;
    for line in map.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<u64> = line
            .split_whitespace()
            .filter_map(|field| field.parse().ok())
            .collect();
        let [inside, outside, count] = fields[..] else {
            return false;
        };
        if inside != outside {
            return false;
        }
        total += count;
    }
    total == u64::from(u32::MAX)
}

/// What the namespace means for peers, for the log at start; `None` in
/// the host's namespace.
pub fn note(overflow: OverflowIds) -> Option<String> {
    let unmapped = |kind: &str, id: Option<u32>| {
        id.map(|id| {
            format!("every peer whose {kind} /proc/self/{kind}_map leaves out shows as {kind} {id}")
        })
    };
    let parts: Vec<String> = [unmapped("uid", overflow.uid), unmapped("gid", overflow.gid)]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "the agent runs in a user namespace that does not map every id: {}; grants cannot tell such peers apart, the per-uid limits count them as one uid, and a grant of that id is refused",
            parts.join(", and ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: &str = "         0          0 4294967295\n";

    #[test]
    fn the_hosts_map_is_the_identity() {
        assert!(is_identity(IDENTITY));
        // The same, written as two ranges.
        assert!(is_identity("0 0 1000\n1000 1000 4294966295\n"));
    }

    #[test]
    fn a_map_that_leaves_ids_out_or_moves_them_is_not() {
        for map in [
            "0 0 65534\n",                // ids 65534 and above are unmapped
            "0 100000 65536\n",           // rootless podman, PrivateUsers=
            "0 1000 1\n1 100000 65536\n", // newuidmap for user 1000
            "0 1 4294967295\n",           // all ids moved by one
            "",                           // a namespace nobody mapped yet
            "0 0\n",                      // not a map line
        ] {
            assert!(!is_identity(map), "{map:?}");
        }
    }

    #[test]
    fn overflow_ids_only_where_a_map_leaves_ids_out() {
        let host = overflow_ids_from(
            Some(IDENTITY),
            Some(IDENTITY),
            (Some("65534\n"), Some("65534\n")),
        );
        assert_eq!(host, OverflowIds::default());
        assert_eq!(note(host), None);
        // No user namespaces in the kernel: no map files.
        assert_eq!(
            overflow_ids_from(None, None, (None, None)),
            OverflowIds::default()
        );
        let private = "0 100000 65536\n";
        let both = overflow_ids_from(
            Some(private),
            Some(private),
            (Some("65534\n"), Some("65533\n")),
        );
        assert_eq!(
            both,
            OverflowIds {
                uid: Some(65534),
                gid: Some(65533)
            }
        );
        let note = note(both).unwrap();
        assert!(
            note.contains("uid 65534") && note.contains("gid 65533"),
            "{note}"
        );
        // Only the gid map leaves ids out; unreadable overflow files mean the default.
        let gids = overflow_ids_from(Some(IDENTITY), Some(private), (None, None));
        assert_eq!(
            gids,
            OverflowIds {
                uid: None,
                gid: Some(65534)
            }
        );
    }

    #[test]
    fn this_process_reads_its_own_maps() {
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
        assert_eq!(overflow_ids().uid.is_none(), is_identity(&map));
    }
}
