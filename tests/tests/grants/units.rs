//! What a `unit` grant trusts: the unit systemd (PID 1) runs the peer in,
//! never a cgroup that someone else named like a unit. A container runtime
//! makes its cgroups outside systemd's slices and hands them to what runs
//! inside; whoever holds such a subtree may create `my-app.service` in it.
//! These tests make the cgroups on the real cgroup v2 hierarchy, move real
//! client processes into them, and ask a real agent.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use integration_tests::daemon::{
    add_server_settings, client_binary, open_directory_to_others, ttd_token, Daemon,
};
use integration_tests::kubernetes::{cgroup2_for, Cgroups};
use integration_tests::users::NOBODY;
use integration_tests::{OutputExt, TestToken};

/// An agent granting app `by-unit` to whatever runs in `unit`, and nothing
/// else to uid 65534.
fn agent_granting_unit(unit: &str) -> (TestToken, Daemon) {
    let grant = format!("[[grant]]\nunit = {unit:?}\nissuer = \"ttd\"\napps = [\"by-unit\"]\n");
    let token = ttd_token("p256", &grant);
    add_server_settings(&token, "socket_group = \"nogroup\"");
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);
    (token, daemon)
}

/// Runs `script` (`sh -c`) as root in cgroup `entry`; `$CLIENT` is the
/// `access-token` command asking for app `by-unit`, `$AS_NOBODY` the prefix
/// that runs a command as uid 65534.
fn run_in(entry: &Path, daemon: &Daemon, script: &str) -> Output {
    let client = format!(
        "{} --socket {} token --issuer ttd --app by-unit",
        client_binary().display(),
        daemon.socket.display()
    );
    let whole = format!("echo $$ > {}/cgroup.procs && {script}", entry.display());
    Command::new("sh")
        .args(["-c", &whole])
        .env("CLIENT", client)
        .env(
            "AS_NOBODY",
            format!("setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

#[test]
fn a_unit_named_inside_a_containers_cgroup_is_not_the_unit() {
    // CI runs as root on a host with cgroup v2: there, a skip is a failure.
    let Some(v2) = cgroup2_for("a_unit_named_inside_a_containers_cgroup_is_not_the_unit") else {
        return;
    };
    let unit = format!("att-app-{}.service", std::process::id());
    let (_token, daemon) = agent_granting_unit(&unit);
    let mut cgroups = Cgroups::new(&v2);

    // The runtime's cgroup for a container, given to the container's user.
    let container = cgroups.make(&format!("att-docker-{}/x", std::process::id()));
    for file in [
        "",
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.threads",
    ] {
        let path = container.join(file);
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    cgroups.adopt(container.join(&unit));
    // Inside, uid 65534 names a child cgroup like the granted unit and moves in.
    let script = format!(
        "exec $AS_NOBODY sh -c \
         'mkdir {inner} && echo $$ > {inner}/cgroup.procs && grep -q {unit} /proc/self/cgroup && exec $CLIENT'",
        inner = container.join(&unit).display(),
    );
    let asked = run_in(&container, &daemon, &script);
    assert_eq!(
        asked.code(),
        3,
        "a cgroup named {unit} under a container's cgroup is refused\n{}",
        asked.stderr_text()
    );

    // The same name right under slices is a unit systemd made: granted.
    let service = cgroups.make(&format!("att-{}.slice/{unit}", std::process::id()));
    run_in(&service, &daemon, "exec $AS_NOBODY $CLIENT").success();
}
