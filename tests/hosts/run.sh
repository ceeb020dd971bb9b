#!/usr/bin/env bash
# `make hosts-test`: three hosts' agents signing with the one key of one
# network HSM.
#
# Four network namespaces are hosts of their own, joined by veth pairs with
# addresses inside them only. The "HSM" host runs `p11-kit server` in front
# of a SoftHSM token, exposed over TCP by socat; each of the three other
# hosts runs an agent whose module is p11-kit-client.so, reaching that port
# through a local socat forwarder (the shape of a vendor client talking to
# its appliance). Without root, ip, socat or p11-kit it says so and runs
# nothing. Everything it made is removed at the end.
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
agent="$root/target/debug/access-token-agent"
client="$root/target/debug/access-token"
loop="$root/target/debug/request-loop"
module=/usr/lib/softhsm/libsofthsm2.so
remote=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so

SUITE=hosts
. "$root/tests/shell/harness.sh"
[ "$(id -u)" -eq 0 ] || not_run "they need root (network namespaces)"
for tool in ip socat p11-kit softhsm2-util curl; do
    command -v "$tool" >/dev/null || not_run "$tool is missing (make hosts-test installs it)"
done
[ -e "$remote" ] || not_run "$remote is missing (p11-kit-modules)"
for binary in "$agent" "$client" "$loop"; do
    [ -x "$binary" ] || { echo "hosts tests: $binary is not built (cargo build --workspace --bins)" >&2; exit 1; }
done

tag="att$$"
hsm="$tag-hsm"
hosts=(1 2 3)
work="$(mktemp -d /var/tmp/access-token-agent-hosts.XXXXXX)"
chmod 0755 "$work"

cleanup() {
    for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; done
    for ns in "$hsm" "${hosts[@]/#/$tag-h}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

on() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# GET PATH from host N's agent: prints the body, then the status on a line of its own.
get() { curl -s --unix-socket "$work/h$1/agent.sock" -w '\n%{http_code}\n' "http://agent$2"; }
kid_of() { sed -n 's/.*"kid":"\([0-9A-F]*\)".*/\1/p'; }
token_of() { sed -n 's/.*"token":"\([^"]*\)".*/\1/p'; }

network() {
    ip netns add "$hsm" || return 1
    on "$hsm" ip link set lo up
    for n in "${hosts[@]}"; do
        local ns="$tag-h$n"
        ip netns add "$ns" && on "$ns" ip link set lo up || return 1
        ip link add "$tag-v$n" netns "$hsm" type veth peer name eth0 netns "$ns" || return 1
        on "$hsm" ip addr add "10.77.$n.1/30" dev "$tag-v$n"
        on "$hsm" ip link set "$tag-v$n" up
        on "$ns" ip addr add "10.77.$n.2/30" dev eth0
        on "$ns" ip link set eth0 up
    done
}

cut_links() { for n in "${hosts[@]}"; do on "$hsm" ip link set "$tag-v$n" "$1"; done; }

the_hsm() {
    export SOFTHSM2_CONF="$work/softhsm2.conf"
    mkdir -p "$work/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\n' "$work/tokens" >"$SOFTHSM2_CONF"
    softhsm2-util --init-token --free --label access-tokens --so-pin 864213 --pin 4711 >/dev/null || return 1
    install -m 0600 /dev/null "$work/pin" && printf '4711' >"$work/pin"
    on "$hsm" p11-kit server -f --provider "$module" -n "$work/hsm.sock" "pkcs11:token=access-tokens" \
        >"$work/p11-kit.log" 2>&1 &
    for _ in $(seq 50); do [ -S "$work/hsm.sock" ] && break; sleep 0.1; done
    [ -S "$work/hsm.sock" ] || fail "p11-kit server did not start: $(cat "$work/p11-kit.log")"
    on "$hsm" socat TCP-LISTEN:5696,fork,reuseaddr "UNIX-CONNECT:$work/hsm.sock" >/dev/null 2>>"$work/socat.log" &
}

# Host N: its forwarder to the HSM, and an agent config with its own grant.
host() {
    local n=$1 dir="$work/h$1"
    mkdir -p "$dir"
    on "$tag-h$n" socat "UNIX-LISTEN:$dir/hsm.sock,fork" "TCP:10.77.$n.1:5696" >/dev/null 2>>"$work/socat.log" &
    for _ in $(seq 50); do [ -S "$dir/hsm.sock" ] && break; sleep 0.1; done
    cat >"$dir/agent.toml" <<TOML
[hsm]
module = "$remote"
token_label = "access-tokens"
pin_file = "$work/pin"
environment = { P11_KIT_SERVER_ADDRESS = "unix:path=$dir/hsm.sock" }

[token]
cache = false

[signing]
timeout_seconds = 2

[server]
socket = "$dir/agent.sock"
socket_mode = "0600"

[[issuer]]
name = "ttd"

[[grant]]
uid = 0
issuer = "ttd"
apps = ["app-of-host-$n"]
TOML
}

start_agent() {
    local n=$1
    # ip netns exec execs the agent, so $! is the agent's own pid.
    ip netns exec "$tag-h$n" "$agent" --config "$work/h$n/agent.toml" serve >>"$work/h$n/agent.log" 2>&1 &
    echo $! >"$work/h$n/pid"
    for _ in $(seq 100); do
        [ "$(get "$n" /readyz | tail -n 1)" = 200 ] && return 0
        sleep 0.1
    done
    fail "host $n's agent did not become ready: $(tail -n 5 "$work/h$n/agent.log")"
}

setup() {
    network || fail "cannot make the network namespaces" || return 1
    the_hsm || return 1
    for n in "${hosts[@]}"; do host "$n"; done
    on "$tag-h1" "$agent" --config "$work/h1/agent.toml" keys generate --issuer ttd >"$work/kid" 2>"$work/enrol.log" ||
        fail "keys generate through the remote HSM failed: $(cat "$work/enrol.log")" || return 1
    on "$tag-h1" "$agent" --config "$work/h1/agent.toml" keys export-cert --issuer ttd --format pem >"$work/ttd.pem" ||
        fail "export-cert failed" || return 1
    for n in "${hosts[@]}"; do start_agent "$n" || return 1; done
}


test_every_host_signs_with_the_one_key_and_grants_only_its_own_apps() {
    local kid
    kid="$(head -n 1 "$work/kid" | tr -d '[:space:]')"
    [ ${#kid} = 40 ] || fail "keys generate printed no kid: $(cat "$work/kid")"
    for n in "${hosts[@]}"; do
        local answer
        answer="$(get "$n" "/v1/token?issuer=ttd&app=app-of-host-$n")"
        [ "$(tail -n 1 <<<"$answer")" = 200 ] || fail "host $n: $answer"
        [ "$(kid_of <<<"$answer")" = "$kid" ] || fail "host $n signs with kid $(kid_of <<<"$answer"), not $kid"
        "$client" verify --cert "$work/ttd.pem" "$(token_of <<<"$answer")" >/dev/null ||
            fail "host $n's token does not verify against the exported certificate"
        local other=$((n % 3 + 1))
        [ "$(get "$n" "/v1/token?issuer=ttd&app=app-of-host-$other" | tail -n 1)" = 403 ] ||
            fail "host $n's agent grants host $other's app"
    done
}

# request-loop's tally for host N: REQUESTS over 4 connections.
load() { "$loop" "$work/h$1/agent.sock" 4 "$2" "/v1/token?issuer=ttd&app=app-of-host-$1"; }

test_one_hosts_agent_killed_the_others_serve_on_without_an_error() {
    load 1 3000 >"$work/load1" &
    local l1=$!
    load 2 3000 >"$work/load2" &
    local l2=$!
    sleep 0.5
    local victim
    victim="$(cat "$work/h3/pid")"
    kill -KILL "$victim"
    sleep 0.2
    [ -e "/proc/$victim" ] && fail "host 3's agent survived SIGKILL"
    [ "$(get 3 /readyz | tail -n 1)" = 000 ] || fail "host 3 still answers after its agent was killed"
    wait "$l1" "$l2"
    for n in 1 2; do
        grep -q '"statuses":{"200":3000}' "$work/load$n" && grep -q '"errors":\[\]' "$work/load$n" || fail "host $n while host 3's agent died: $(cat "$work/load$n")"
    done
    start_agent 3 || return 1
}

# Statuses of requests to host N, one a line, until the file STOP exists;
# 000 is a request that got no answer within 5 s.
statuses() {
    while [ ! -e "$work/stop" ]; do
        curl -s -o /dev/null --max-time 5 -w '%{http_code}\n' --unix-socket "$work/h$1/agent.sock" \
            "http://agent/v1/token?issuer=ttd&app=app-of-host-$1"
    done
}

test_a_cut_link_gives_503s_within_the_deadline_and_every_host_recovers() {
    rm -f "$work/stop"
    local loops=()
    for n in "${hosts[@]}"; do
        statuses "$n" >"$work/cut$n" &
        loops+=($!)
    done
    sleep 2
    cut_links down
    sleep 10
    cut_links up
    local recovered
    for n in "${hosts[@]}"; do
        recovered=no
        for _ in $(seq 300); do
            [ "$(get "$n" "/v1/token?issuer=ttd&app=app-of-host-$n" | tail -n 1)" = 200 ] && { recovered=yes; break; }
            sleep 0.1
        done
        [ "$recovered" = yes ] || fail "host $n did not serve again within 30 s of the link coming back"
    done
    sleep 2
    touch "$work/stop"
    wait "${loops[@]}"
    for n in "${hosts[@]}"; do
        kill -0 "$(cat "$work/h$n/pid")" 2>/dev/null || fail "host $n's agent is gone"
        local counts
        counts="$(sort "$work/cut$n" | uniq -c | tr -s ' ' | tr '\n' ';')"
        grep -qv -e '^200$' -e '^503$' "$work/cut$n" && fail "host $n: answers other than 200 and 503 (000: none within 5 s): $counts"
        grep -q '^503$' "$work/cut$n" || fail "host $n: no 503 while the HSM was cut off: $counts"
        [ "$(tail -n 1 "$work/cut$n")" = 200 ] || fail "host $n: the last answer was not 200: $counts"
        local answer
        answer="$(get "$n" "/v1/token?issuer=ttd&app=app-of-host-$n")"
        [ "$(kid_of <<<"$answer")" = "$(head -n 1 "$work/kid" | tr -d '[:space:]')" ] ||
            fail "host $n signs with another key after the cut: $answer"
        "$client" verify --cert "$work/ttd.pem" "$(token_of <<<"$answer")" >/dev/null ||
            fail "host $n's token after the cut does not verify against the one certificate"
        echo "host $n: $counts"
    done
}

test_a_key_enrolled_from_one_host_serves_on_every_host_after_sighup() {
    local kid
    on "$tag-h1" "$agent" --config "$work/h1/agent.toml" keys generate --issuer ttd >"$work/kid2" 2>>"$work/enrol.log" ||
        fail "the second keys generate failed: $(tail -n 3 "$work/enrol.log")" || return 1
    kid="$(head -n 1 "$work/kid2" | tr -d '[:space:]')"
    for n in "${hosts[@]}"; do
        kill -HUP "$(cat "$work/h$n/pid")"
    done
    for n in "${hosts[@]}"; do
        local seen=""
        for _ in $(seq 100); do
            seen="$(get "$n" "/v1/token?issuer=ttd&app=app-of-host-$n" | kid_of)"
            [ "$seen" = "$kid" ] && break
            sleep 0.1
        done
        [ "$seen" = "$kid" ] || fail "host $n still signs with $seen after SIGHUP, not the new $kid"
        kill -0 "$(cat "$work/h$n/pid")" 2>/dev/null || fail "host $n's agent restarted or died"
    done
}

echo "hosts tests: an HSM host and three agent hosts in network namespaces ($work)"
run setup
if [ ${#failed[@]} -eq 0 ]; then
    run test_every_host_signs_with_the_one_key_and_grants_only_its_own_apps
    run test_one_hosts_agent_killed_the_others_serve_on_without_an_error
    run test_a_cut_link_gives_503s_within_the_deadline_and_every_host_recovers
    run test_a_key_enrolled_from_one_host_serves_on_every_host_after_sighup
fi
summary
