//! Grants matched against peers, and grant configs refused with the key named.

use super::*;
use crate::front::peer::Process;

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
        policy.resolve(&p, None, Some("ttd"), Some("my-app")),
        target("ttd", "my-app")
    );
    assert_eq!(
        policy.resolve(&p, None, Some("ttd"), Some("other")),
        target("ttd", "other")
    );
    assert_eq!(
        policy.resolve(&p, None, Some("ttd"), Some("third")),
        Err(Refusal::NotGranted)
    );
    assert_eq!(
        policy.resolve(&p, None, Some("digdir"), Some("my-app")),
        Err(Refusal::NotGranted)
    );
}

#[test]
fn other_uid_gets_nothing() {
    let policy = policy(&[for_uid(1000, "ttd", &["*"])]);
    let stranger = peer(65534, 65534);
    assert_eq!(
        policy.resolve(&stranger, None, Some("ttd"), Some("a")),
        Err(Refusal::NotGranted)
    );
    assert_eq!(
        policy.resolve(&stranger, None, None, None),
        Err(Refusal::NotGranted)
    );
}

#[test]
fn wildcard_allows_any_named_app_but_not_an_empty_one() {
    let policy = policy(&[for_uid(1, "ttd", &["*"])]);
    let p = peer(1, 1);
    assert_eq!(
        policy.resolve(&p, None, Some("ttd"), Some("anything")),
        target("ttd", "anything")
    );
    assert_eq!(
        policy.resolve(&p, None, Some("ttd"), Some("")),
        Err(Refusal::NotGranted)
    );
}

#[test]
fn empty_app_must_be_listed() {
    let policy = policy(&[for_uid(1, "platform", &[""])]);
    let p = peer(1, 1);
    assert_eq!(
        policy.resolve(&p, None, Some("platform"), Some("")),
        target("platform", "")
    );
    assert_eq!(policy.resolve(&p, None, None, None), target("platform", ""));
}

#[test]
fn omitted_parameters_filled_from_a_single_grant() {
    let policy = policy(&[for_uid(1, "ttd", &["my-app"])]);
    let p = peer(1, 1);
    assert_eq!(
        policy.resolve(&p, None, None, None),
        target("ttd", "my-app")
    );
    assert_eq!(
        policy.resolve(&p, None, Some("ttd"), None),
        target("ttd", "my-app")
    );
    assert_eq!(
        policy.resolve(&p, None, None, Some("my-app")),
        target("ttd", "my-app")
    );
}

#[test]
fn omitted_app_with_wildcard_grant_is_required() {
    let policy = policy(&[for_uid(1, "ttd", &["*"])]);
    let p = peer(1, 1);
    assert_eq!(
        policy.resolve(&p, None, None, None),
        Err(Refusal::AppRequired)
    );
    assert_eq!(
        policy.resolve(&p, None, Some("ttd"), None),
        Err(Refusal::AppRequired)
    );
    assert_eq!(
        policy.resolve(&p, None, None, Some("x")),
        target("ttd", "x")
    );
}

#[test]
fn omitted_parameters_with_several_choices() {
    let policy = policy(&[
        for_uid(1, "ttd", &["a", "b"]),
        for_uid(1, "digdir", &["a"]),
        for_uid(2, "ttd", &["a"]),
    ]);
    let p = peer(1, 1);
    assert_eq!(
        policy.resolve(&p, None, None, None),
        Err(Refusal::IssuerRequired)
    );
    assert_eq!(
        policy.resolve(&p, None, Some("ttd"), None),
        Err(Refusal::AppRequired)
    );
    assert_eq!(
        policy.resolve(&p, None, Some("digdir"), None),
        target("digdir", "a")
    );
    assert_eq!(
        policy.resolve(&p, None, None, Some("a")),
        Err(Refusal::IssuerRequired)
    );
    assert_eq!(
        policy.resolve(&p, None, None, Some("b")),
        target("ttd", "b")
    );
    // Uid 2 has one grant of its own, whatever uid 1 has.
    assert_eq!(
        policy.resolve(&peer(2, 2), None, None, None),
        target("ttd", "a")
    );
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
    assert_eq!(
        policy.resolve(&peer(1, 10), None, None, None),
        target("ttd", "a")
    );
}

#[test]
fn group_grant_matches_primary_and_supplementary_groups() {
    let policy = policy(&[GrantConfig {
        gid: Some(500),
        ..grant("ttd", &["a"])
    }]);
    assert!(policy
        .resolve(&peer(1, 500), None, Some("ttd"), Some("a"))
        .is_ok());
    let member = Peer::new(1, 1, Some(7)).with_process(Process {
        groups: vec![20, 500],
        ..Process::default()
    });
    assert!(policy
        .resolve(&member, None, Some("ttd"), Some("a"))
        .is_ok());
    assert_eq!(
        policy.resolve(&peer(1, 1), None, Some("ttd"), Some("a")),
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
        ..Process::default()
    };
    let full = Peer::new(1, 1, Some(7)).with_process(process.clone());
    assert!(policy.resolve(&full, None, Some("ttd"), Some("a")).is_ok());
    let wrong_unit = Peer::new(1, 1, Some(7)).with_process(Process {
        unit: Some("other.service".into()),
        ..process.clone()
    });
    assert_eq!(
        policy.resolve(&wrong_unit, None, Some("ttd"), Some("a")),
        Err(Refusal::NotGranted)
    );
    let wrong_exe = Peer::new(1, 1, Some(7)).with_process(Process {
        exe: Some("/tmp/my-app".into()),
        ..process.clone()
    });
    assert_eq!(
        policy.resolve(&wrong_exe, None, Some("ttd"), Some("a")),
        Err(Refusal::NotGranted)
    );
    let wrong_uid = Peer::new(2, 1, Some(7)).with_process(process);
    assert_eq!(
        policy.resolve(&wrong_uid, None, Some("ttd"), Some("a")),
        Err(Refusal::NotGranted)
    );
    // Unknown process facts never match a grant that needs them.
    assert_eq!(
        policy.resolve(&peer(1, 1), None, Some("ttd"), Some("a")),
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
            unit: crate::front::peer::unit_from_cgroup(&format!("0::{path}\n")),
            ..Process::default()
        })
    };
    let service = from_cgroup("/system.slice/altinn-studio.service");
    assert!(policy
        .resolve(&service, None, Some("ttd"), Some("a"))
        .is_ok());
    for impostor in [
        "/user.slice/user-1000.slice/user@1000.service/app.slice/altinn-studio.service",
        "/system.slice/other.service/altinn-studio.service",
    ] {
        assert_eq!(
            policy.resolve(&from_cgroup(impostor), None, Some("ttd"), Some("a")),
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
        policy.granted(&peer(1, 1), None),
        vec![("ttd", vec!["a", "b"]), ("digdir", vec!["*"])]
    );
    assert!(policy.granted(&peer(3, 3), None).is_empty());
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
    assert!(policy.resolve(&peer, None, Some("ttd"), Some("a")).is_ok());
}

#[test]
fn users_and_groups_resolve_by_name() {
    let root = GrantConfig {
        user: Some("root".into()),
        group: Some("root".into()),
        ..grant("ttd", &["a"])
    };
    let policy = policy(&[root]);
    assert!(policy
        .resolve(&peer(0, 0), None, Some("ttd"), Some("a"))
        .is_ok());
    assert!(policy
        .resolve(&peer(1, 0), None, Some("ttd"), Some("a"))
        .is_err());
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
fn a_grant_of_the_overflow_ids_is_refused_only_where_a_map_leaves_ids_out() {
    use crate::front::peer::userns::overflow_ids_from;
    let identity = "0 0 4294967295\n";
    let private = "0 100000 65536\n";
    let overflow = (Some("65534\n"), Some("65534\n"));
    let host = overflow_ids_from(Some(identity), Some(identity), overflow);
    let in_namespace = overflow_ids_from(Some(private), Some(private), overflow);
    let grants = [
        (for_uid(65534, "ttd", &["a"]), "`grant[1].uid` = 65534"),
        (
            GrantConfig {
                user: Some("nobody".into()),
                ..grant("ttd", &["a"])
            },
            "`grant[1].user` = \"nobody\" (uid 65534)",
        ),
        (
            GrantConfig {
                gid: Some(65534),
                ..grant("ttd", &["a"])
            },
            "`grant[1].gid` = 65534",
        ),
        (
            GrantConfig {
                group: Some("nogroup".into()),
                ..grant("ttd", &["a"])
            },
            "`grant[1].group` = \"nogroup\" (gid 65534)",
        ),
    ];
    for (overflowing, key) in grants {
        let grants = [for_uid(1000, "ttd", &["a"]), overflowing];
        // On the host, 65534 is a user like any other.
        assert_eq!(Policy::for_namespace(&grants, host).unwrap().len(), 2);
        let err = Policy::for_namespace(&grants, in_namespace).unwrap_err();
        assert!(err.starts_with(key), "{key}: {err}");
        assert!(err.contains("is the overflow"), "{err}");
        assert!(err.contains("is not the identity"), "{err}");
    }
    // Mapped ids are granted in the namespace too.
    let mapped = [for_uid(1000, "ttd", &["a"])];
    assert_eq!(
        Policy::for_namespace(&mapped, in_namespace).unwrap().len(),
        1
    );
}

#[test]
fn kubernetes_grants_match_only_a_verified_pod_of_their_namespace() {
    use crate::front::kubernetes::PodIdentity;
    let pod = |namespace: &str, account: &str| PodIdentity {
        namespace: namespace.into(),
        service_account: account.into(),
        service_account_uid: "s".into(),
        pod_name: "p".into(),
        pod_uid: "u".into(),
    };
    let policy = policy(&[
        GrantConfig {
            k8s_namespace: Some("apps".into()),
            k8s_service_account: Some("my-app".into()),
            ..grant("ttd", &["by-account"])
        },
        GrantConfig {
            k8s_namespace: Some("apps".into()),
            uid: Some(1000),
            ..grant("ttd", &["by-namespace-and-uid"])
        },
        for_uid(1000, "ttd", &["by-uid"]),
    ]);
    let peer = Peer::new(1000, 1000, Some(7));
    let mine = pod("apps", "my-app");
    let ask = |pod: Option<&PodIdentity>, app| policy.resolve(&peer, pod, Some("ttd"), Some(app));
    assert!(ask(Some(&mine), "by-account").is_ok());
    assert!(ask(Some(&mine), "by-namespace-and-uid").is_ok());
    // A token takes nothing away from a grant that names no pod.
    assert!(ask(Some(&mine), "by-uid").is_ok());
    // Without a token, the same uid reaches no grant that names a namespace.
    assert_eq!(ask(None, "by-account"), Err(Refusal::NotGranted));
    assert_eq!(ask(None, "by-namespace-and-uid"), Err(Refusal::NotGranted));
    assert!(ask(None, "by-uid").is_ok());
    // Another namespace, another service account, another uid.
    assert_eq!(
        ask(Some(&pod("other", "my-app")), "by-account"),
        Err(Refusal::NotGranted)
    );
    assert_eq!(
        ask(Some(&pod("apps", "other")), "by-account"),
        Err(Refusal::NotGranted)
    );
    assert!(ask(Some(&pod("apps", "other")), "by-namespace-and-uid").is_ok());
    let other_uid = Peer::new(2000, 1000, Some(7));
    let asked = policy.resolve(
        &other_uid,
        Some(&mine),
        Some("ttd"),
        Some("by-namespace-and-uid"),
    );
    assert_eq!(asked, Err(Refusal::NotGranted));
    assert_eq!(
        policy.granted(&peer, Some(&mine)).len(),
        3,
        "every grant this pod and uid match"
    );
}
