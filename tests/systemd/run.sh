#!/usr/bin/env bash
# `make systemd-test`: the Debian package under a real systemd.
#
# Boots a container (systemd-nspawn) whose root is an overlay of this host's
# own, installs target/debian/access-token-agent_*.deb with apt-get, follows
# systemd/README.md's "Install on Debian" blocks as written (expect answers
# the PIN prompts), and then checks, each as a test of its own, what the
# units promise. Everything it made is unmounted and removed at the end.
# Without root or systemd-nspawn it says so and runs nothing.
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
readme="$root/systemd/README.md"
deb="$(ls "$root"/target/debian/access-token-agent_*.deb 2>/dev/null | tail -n 1)"

SUITE=systemd
. "$root/tests/shell/harness.sh"
[ "$(id -u)" -eq 0 ] || not_run "they need root (systemd-nspawn, overlay mounts)"
for tool in systemd-nspawn expect nsenter; do
    command -v "$tool" >/dev/null || not_run "$tool is missing (make systemd-test installs it)"
done
[ -n "$deb" ] || { echo "systemd tests: no package in target/debian; run make deb" >&2; exit 1; }
# Where the container and the chroot see the package: a copy in their own
# /root, since the checkout may be under a path the container mounts over
# (its /tmp is a tmpfs of its own).
package="/root/packages/$(basename "$deb")"

work="$(mktemp -d /var/tmp/access-token-agent-systemd.XXXXXX)"
rootfs="$work/root"
machine="att-$$"
nspawn=""
leader=""

cleanup() {
    if [ -n "$leader" ]; then
        nsenter -t "$leader" -a systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 50); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.2; done
    fi
    [ -n "$nspawn" ] && kill -KILL "$nspawn" 2>/dev/null && wait "$nspawn" 2>/dev/null
    for mount in "$rootfs" "$work/chroot"; do
        mountpoint -q "$mount" && umount -l "$mount"
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command inside the container, as root.
inside() { nsenter -t "$leader" -a "$@"; }
# Runs a command inside the container as USER, with a login environment.
as() { local user=$1; shift; inside runuser -u "$user" -- "$@"; }
token() { as "$1" access-token token --issuer ttd --app "$2"; }
# A file the container sees at PATH, written from here.
put() { mkdir -p "$(dirname "$rootfs$1")" && cat >"$rootfs$1"; }
prop() { inside systemctl show -P "$2" "$1"; }
# Copies the package to $package under the root ROOT.
put_package() { mkdir -p "$1$(dirname "$package")" && cp "$deb" "$1$package"; }

overlay() {
    mkdir -p "$work/$1-upper" "$work/$1-work" "$2"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$work/$1-upper,workdir=$work/$1-work" "$2"
}

boot() {
    overlay root "$rootfs" || return 1
    systemd-nspawn -D "$rootfs" -b --console=passive --register=no --keep-unit -M "$machine" \
        >"$work/console.log" 2>&1 &
    nspawn=$!
    for _ in $(seq 150); do
        leader="$(pgrep -P "$nspawn" -x systemd | head -n 1)"
        if [ -n "$leader" ]; then
            case "$(inside systemctl is-system-running 2>/dev/null)" in
                running | degraded) return 0 ;;
            esac
        fi
        sleep 0.2
    done
    cat "$work/console.log" >&2
    fail "the container's systemd did not reach running within 30 s"
}


# The ```sh blocks of the README's "Install on Debian" section, in order.
readme_steps() {
    awk '/^## Install on Debian/ {on = 1; next} /^##/ && on {exit}
         on && /^```sh$/ {block = 1; next} block && /^```$/ {block = 0; next}
         block {print}' "$readme"
}

install_as_the_readme_says() {
    # The apps' accounts exist before the config names them.
    inside useradd --system --shell /usr/sbin/nologin my-app || return 1
    inside useradd --system --shell /usr/sbin/nologin other-app || return 1
    inside useradd --create-home --shell /bin/bash other-user || return 1
    inside useradd --system --shell /usr/sbin/nologin stranger || return 1
    { echo "set -ex"; echo "cd $(dirname "$package")"; readme_steps; } | put /root/install.sh
    put /root/install.exp <<'EXPECT'
set timeout 300
spawn bash /root/install.sh
expect {
    -re {SO PIN: $} { send "so-pin-4242\r"; exp_continue }
    -re {user PIN: $} { send "user-pin-1717\r"; exp_continue }
    eof
}
lassign [wait] pid spawnid os_error status
exit $status
EXPECT
    inside expect /root/install.exp >"$work/install.log" 2>&1 || {
        tail -n 40 "$work/install.log" >&2
        fail "a step of systemd/README.md's 'Install on Debian' failed (the log's end is above)"
    }
    grep -q '^eyJ' "$work/install.log" || fail "the README's last step printed no token"
}

# Appends TEXT to the installed config and reloads.
add_to_config() {
    cat >>"$rootfs/etc/access-token-agent/agent.toml"
    inside systemctl reload access-token-agent.service
}

test_a_fresh_install_leaves_no_failed_unit() {
    inside apt-get install -y -qq "$package" >"$work/fresh.log" 2>&1 || { cat "$work/fresh.log" >&2; fail "apt-get install failed"; }
    grep -q 'write /etc/access-token-agent/agent.toml' "$work/fresh.log" ||
        fail "the install does not say what to do next: $(cat "$work/fresh.log")"
    [ "$(inside systemctl is-enabled access-token-agent.socket)" = enabled ] || fail "the socket is not enabled"
    local failed
    failed="$(inside systemctl list-units --failed --plain --no-legend)"
    [ -z "$failed" ] || fail "failed units after a fresh install: $failed"
    [ "$(prop access-token-agent.socket ConditionResult)" = no ] ||
        fail "the socket started without a config"
    inside systemctl start access-token-agent.service || fail "starting the unconfigured service failed"
    [ "$(prop access-token-agent.service ActiveState)" = inactive ] || fail "the unconfigured service is not inactive"
    inside systemctl status access-token-agent.service 2>&1 | grep -q 'ConditionPathExists=/etc/access-token-agent/agent.toml' ||
        fail "systemctl status does not name the missing config"
    inside apt-get purge -y -qq access-token-agent >/dev/null 2>&1 || fail "apt-get purge failed"
}

test_the_configured_agent_leaves_no_failed_unit() {
    local failed
    failed="$(inside systemctl list-units --failed --plain --no-legend)"
    [ -z "$failed" ] || fail "failed units after following the README: $failed"
}

test_start_returns_after_ready_and_status_names_the_issuers() {
    inside systemctl stop access-token-agent.service || return 1
    inside systemctl start access-token-agent.service || fail "systemctl start failed"
    local state status
    state="$(prop access-token-agent.service ActiveState)"
    [ "$state" = active ] || fail "right after systemctl start returned, ActiveState=$state (Type=notify returns after READY=1)"
    status="$(prop access-token-agent.service StatusText)"
    [[ "$status" == *"ttd (kid "* ]] || fail "StatusText does not name issuer ttd and its kid: $status"
}

test_socket_activation_starts_the_agent_for_a_request() {
    inside systemctl stop access-token-agent.service || return 1
    [ "$(prop access-token-agent.service ActiveState)" = inactive ] || fail "the service did not stop"
    [ "$(prop access-token-agent.socket ActiveState)" = active ] || fail "the socket is not listening"
    token my-app my-app | grep -q '^eyJ' || fail "a request to the idle socket got no token"
    [ "$(prop access-token-agent.service ActiveState)" = active ] || fail "the request did not start the service"
}

test_no_request_is_lost_across_restart_and_sigkill() {
    local before
    before="$(prop access-token-agent.service NRestarts)"
    put /opt/att-test/load.sh <<'LOAD'
ok=0; bad=0
end=$((SECONDS + 25))
while [ $SECONDS -lt $end ]; do
    if access-token token --issuer ttd --app my-app >/dev/null 2>>/opt/att-test/load.errors; then
        ok=$((ok + 1))
    else
        bad=$((bad + 1))
    fi
done
echo "$ok $bad"
LOAD
    as my-app bash /opt/att-test/load.sh >"$work/load.out" &
    local load=$!
    sleep 3
    inside systemctl restart access-token-agent.service || fail "systemctl restart failed"
    sleep 3
    inside systemctl kill --kill-whom=main --signal=KILL access-token-agent.service
    wait "$load"
    local ok bad
    read -r ok bad <"$work/load.out"
    [ "$(prop access-token-agent.service NRestarts)" -gt "$before" ] || fail "systemd did not restart the agent after SIGKILL"
    [ "$(prop access-token-agent.service ActiveState)" = active ] || fail "the agent is not active after the SIGKILL"
    [ "${ok:-0}" -gt 100 ] || fail "only ${ok:-0} requests were answered in 25 s"
    [ "${bad:-1}" -eq 0 ] || fail "$bad of $((ok + bad)) requests failed: $(sort "$rootfs/opt/att-test/load.errors" | uniq -c)"
    echo "$ok requests, none lost"
}

test_a_wrong_pin_exits_77_and_is_not_restarted() {
    local pin="$rootfs/etc/access-token-agent/pin"
    cp -p "$pin" "$work/pin"
    printf 'not-the-pin' >"$pin"
    inside systemctl restart access-token-agent.service && fail "the agent started with a wrong PIN"
    sleep 7 # longer than RestartSec=5s
    local status restarts state
    status="$(prop access-token-agent.service ExecMainStatus)"
    restarts="$(prop access-token-agent.service NRestarts)"
    state="$(prop access-token-agent.service ActiveState)"
    cp -p "$work/pin" "$pin"
    inside systemctl reset-failed access-token-agent.service
    inside systemctl start access-token-agent.service || fail "the agent did not start again with the right PIN"
    [ "$status" = 77 ] || fail "exit status $status, expected 77"
    [ "$restarts" = 0 ] || fail "NRestarts=$restarts: systemd restarted an agent whose PIN was refused"
    [ "$state" = failed ] || fail "ActiveState=$state, expected failed"
}

test_reload_adds_a_grant_and_a_broken_config_keeps_the_old_one() {
    token other-app second 2>/dev/null && fail "other-app got a token before its grant"
    inside usermod -aG access-token-clients other-app
    put /opt/att-test/keepalive.py <<'PY'
import socket, subprocess, sys
def get(s):
    s.sendall(b"GET /v1/token?issuer=ttd&app=my-app HTTP/1.1\r\nHost: agent\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(65536)
    status = head.split(b" ")[1]
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += s.recv(65536)
    return status
s = socket.socket(socket.AF_UNIX)
s.connect("/run/access-token-agent/agent.sock")
first = get(s)
sys.stdin.readline()
second = get(s)
print(first.decode(), second.decode())
PY
    coproc KEEP { as my-app python3 /opt/att-test/keepalive.py; }
    sleep 1
    add_to_config <<'TOML' || fail "systemctl reload failed"

[[grant]]
user = "other-app"
issuer = "ttd"
apps = ["second"]
TOML
    sleep 1
    echo >&"${KEEP[1]}"
    local statuses
    read -r statuses <&"${KEEP[0]}"
    [ "$statuses" = "200 200" ] || fail "a connection held across the reload got: $statuses"
    token other-app second | grep -q '^eyJ' || fail "the reloaded grant gives other-app no token"
    local config="$rootfs/etc/access-token-agent/agent.toml"
    cp -p "$config" "$work/agent.toml"
    printf '\n[token]\nlifetime_seconds = 0\n' >>"$config"
    local since
    since="$(inside date '+%Y-%m-%d %H:%M:%S')"
    inside systemctl reload access-token-agent.service
    sleep 1
    cp -p "$work/agent.toml" "$config"
    token my-app my-app | grep -q '^eyJ' || fail "the old config stopped serving after a broken reload"
    inside journalctl -u access-token-agent --since "$since" -o verbose | grep -q 'lifetime_seconds' ||
        fail "the journal does not say why the reload was refused"
}

test_unit_grants_match_real_systemd_units_only() {
    add_to_config <<'TOML' || return 1

[[grant]]
unit = "my-app.service"
issuer = "ttd"
apps = ["unit-app"]
TOML
    inside systemd-run --quiet --wait --pipe --unit=my-app.service -p User=my-app \
        access-token token --issuer ttd --app unit-app | grep -q '^eyJ' ||
        fail "my-app.service got no token through its unit grant"
    local code
    token my-app unit-app >/dev/null 2>&1
    code=$?
    [ "$code" = 3 ] || fail "my-app outside its unit: exit $code, expected 3 (not granted)"
    inside usermod -aG access-token-clients other-user
    local uid
    uid="$(inside id -u other-user)"
    inside systemctl start "user@$uid.service" || fail "no user manager for other-user"
    inside runuser -u other-user -- env XDG_RUNTIME_DIR="/run/user/$uid" \
        systemd-run --user --quiet --wait --pipe --unit=my-app.service \
        access-token token --issuer ttd --app unit-app >/dev/null 2>&1
    code=$?
    [ "$code" = 3 ] || fail "another user's systemd-run --user --unit=my-app.service: exit $code, expected 3"
    token stranger my-app >/dev/null 2>"$work/stranger.err"
    code=$?
    [ "$code" = 5 ] || fail "a user outside access-token-clients: exit $code, expected 5 (cannot connect): $(cat "$work/stranger.err")"
}

test_the_sandbox_lets_softhsm_and_the_credential_work() {
    local files owner mode
    files="$(inside find /var/lib/softhsm/tokens -name token.object)"
    [ -n "$files" ] || fail "no token.object under /var/lib/softhsm/tokens"
    owner="$(inside stat -c %U "$files")"
    [ "$owner" = access-token-agent ] || fail "the token files belong to $owner, not the agent's user"
    local before after
    before="$(inside stat -c %Y "$files")"
    sleep 1.1
    inside systemctl restart access-token-agent.service || return 1
    after="$(inside stat -c %Y "$files")"
    [ "$after" -gt "$before" ] || fail "SoftHSM did not write token.object under ProtectSystem=strict (mtime $before, then $after)"
    mode="$(inside stat -c '%a %U %G' /etc/access-token-agent/pin)"
    [ "$mode" = "600 root root" ] || fail "/etc/access-token-agent/pin is $mode, expected 600 root root"
    as access-token-agent cat /etc/access-token-agent/pin >/dev/null 2>&1 &&
        fail "the agent's user can read the PIN file itself"
    grep -q 'pin_credential = "hsm-pin"' "$rootfs/etc/access-token-agent/agent.toml" ||
        fail "the config does not use the credential"
    token my-app my-app | grep -q '^eyJ' || fail "no token after the restart"
}

# The HSM across a process boundary (p11-kit server in front of the same
# SoftHSM token), stopped with SIGSTOP: an HSM that hangs. The agent's
# watchdog pings stop, systemd restarts it, and it serves again once the
# HSM answers.
test_the_watchdog_restarts_an_agent_whose_hsm_hangs() {
    local client=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so
    inside test -e "$client" || fail "$client is missing (p11-kit-modules)"
    inside systemd-run --quiet --unit=test-hsm -p User=access-token-agent -p SupplementaryGroups=softhsm \
        -p RuntimeDirectory=test-hsm -p KillMode=control-group \
        p11-kit server -f --provider /usr/lib/softhsm/libsofthsm2.so -n /run/test-hsm/hsm.sock \
        "pkcs11:token=access-tokens" || fail "cannot start p11-kit server"
    local config="$rootfs/etc/access-token-agent/agent.toml"
    cp -p "$config" "$work/agent.toml.local"
    sed -i "s|^module = .*|module = \"$client\"|" "$config"
    put /etc/systemd/system/access-token-agent.service.d/remote-hsm.conf <<'UNIT'
[Service]
Environment=P11_KIT_SERVER_ADDRESS=unix:path=/run/test-hsm/hsm.sock
WatchdogSec=6s
UNIT
    inside systemctl daemon-reload
    inside systemctl restart access-token-agent.service || fail "the agent did not start on the remote HSM"
    token my-app my-app | grep -q '^eyJ' || fail "no token through the remote HSM"
    local before pids
    before="$(prop access-token-agent.service NRestarts)"
    pids="$(inside systemctl show -P ControlGroup test-hsm.service)"
    inside sh -c "kill -STOP \$(cat /sys/fs/cgroup$pids/cgroup.procs)"
    local restarted=no
    for _ in $(seq 60); do
        if [ "$(prop access-token-agent.service NRestarts)" -gt "$before" ]; then restarted=yes; break; fi
        sleep 0.5
    done
    inside sh -c "kill -CONT \$(cat /sys/fs/cgroup$pids/cgroup.procs)"
    local served=no
    for _ in $(seq 60); do
        if [ "$(prop access-token-agent.service ActiveState)" = active ] && token my-app my-app 2>/dev/null | grep -q '^eyJ'; then
            served=yes; break
        fi
        sleep 0.5
    done
    inside journalctl -u access-token-agent -o cat | grep -qi 'watchdog timeout' || restarted="$restarted, no watchdog timeout in the journal"
    cp -p "$work/agent.toml.local" "$config"
    rm -f "$rootfs/etc/systemd/system/access-token-agent.service.d/remote-hsm.conf"
    inside systemctl daemon-reload
    inside systemctl stop test-hsm.service
    inside systemctl restart access-token-agent.service || fail "the agent did not start on the local HSM again"
    [ "$restarted" = yes ] || fail "30 s after the HSM hung, systemd had not restarted the agent ($restarted)"
    [ "$served" = yes ] || fail "after the HSM answered again the agent served no token within 30 s"
}

test_systemd_analyze_security_rates_the_unit_at_most_1_0() {
    local line exposure
    line="$(inside systemd-analyze security access-token-agent.service 2>&1 | grep 'Overall exposure level')"
    exposure="$(echo "$line" | grep -oE '[0-9]+\.[0-9]+' | head -n 1)"
    [ -n "$exposure" ] || fail "no exposure level in systemd-analyze's output"
    awk -v e="$exposure" 'BEGIN { exit !(e <= 1.0) }' || fail "$line"
    echo "$line"
}

test_the_journal_has_audit_fields_and_never_a_token() {
    local token signature
    token="$(token my-app my-app)"
    signature="${token##*.}"
    [ ${#signature} -gt 20 ] || fail "no token to look for"
    inside journalctl --sync
    inside journalctl -u access-token-agent -o json >"$work/journal.json"
    grep -qF "$signature" "$work/journal.json" && fail "a token's signature is in the journal"
    grep -qF "eyJhbGci" "$work/journal.json" && fail "something that looks like a token header is in the journal"
    local refused
    refused="$(inside journalctl -u access-token-agent OUTCOME=refused -o json | wc -l)"
    [ "$refused" -gt 0 ] || fail "journalctl OUTCOME=refused selects no audit line"
    inside journalctl -u access-token-agent OUTCOME=issued APP=my-app -o json >"$work/issued.json"
    grep -q '"ISSUER":"ttd"' "$work/issued.json" ||
        fail "issued audit lines carry no ISSUER field: $(head -c 2000 "$work/issued.json")"
}

test_remove_stops_and_disables_purge_leaves_only_the_token() {
    inside apt-get remove -y -qq access-token-agent >/dev/null 2>&1 || fail "apt-get remove failed"
    local state
    state="$(prop access-token-agent.service ActiveState)"
    [ "$state" = inactive ] || fail "after remove the service is $state"
    [ "$(prop access-token-agent.socket ActiveState)" = inactive ] || fail "after remove the socket listens"
    inside test -e /usr/bin/access-token-agent && fail "the binary is still there"
    inside sh -c 'ls /etc/systemd/system/*/access-token-agent.* 2>/dev/null' | grep -q . &&
        fail "enablement links are left after remove"
    inside apt-get purge -y -qq access-token-agent >/dev/null 2>&1 || fail "apt-get purge failed"
    local left
    left="$(inside sh -c 'ls -d /etc/access-token-agent /var/log/access-token-agent /run/access-token-agent /etc/systemd/system/access-token-agent.* /usr/lib/systemd/system/access-token-agent.* 2>/dev/null')"
    [ -z "$left" ] || fail "left after purge: $left"
    inside find /var/lib/softhsm/tokens -name token.object | grep -q . || fail "purge removed the HSM token"
}

# Runs the package's scripts on a root that is not booted with systemd.
test_installing_without_systemd_says_so_and_succeeds() {
    local chroot="$work/chroot"
    overlay chroot "$chroot" || return 1
    put_package "$chroot" || return 1
    local output
    output="$(chroot "$chroot" dpkg -i "$package" 2>&1)" || fail "dpkg -i failed without systemd: $output"
    [[ "$output" == *"systemd is not running"* ]] || fail "no message about systemd: $output"
    umount "$chroot"
}

echo "systemd tests: booting a container on an overlay of / ($work)"
boot || exit 1
put_package "$rootfs" || exit 1
inside mkdir -m 1777 -p /opt/att-test
run test_a_fresh_install_leaves_no_failed_unit
run install_as_the_readme_says
if [ ${#failed[@]} -eq 0 ]; then
    run test_the_configured_agent_leaves_no_failed_unit
    run test_start_returns_after_ready_and_status_names_the_issuers
    run test_socket_activation_starts_the_agent_for_a_request
    run test_no_request_is_lost_across_restart_and_sigkill
    run test_a_wrong_pin_exits_77_and_is_not_restarted
    run test_reload_adds_a_grant_and_a_broken_config_keeps_the_old_one
    run test_unit_grants_match_real_systemd_units_only
    run test_the_sandbox_lets_softhsm_and_the_credential_work
    run test_the_watchdog_restarts_an_agent_whose_hsm_hangs
    run test_systemd_analyze_security_rates_the_unit_at_most_1_0
    run test_the_journal_has_audit_fields_and_never_a_token
    run test_remove_stops_and_disables_purge_leaves_only_the_token
fi
run test_installing_without_systemd_says_so_and_succeeds
summary
