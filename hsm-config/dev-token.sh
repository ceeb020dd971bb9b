#!/usr/bin/env bash
# Creates the development HSM under .dev/ the first time: a SoftHSM token
# "access-tokens" with random PINs, an agent config, and a fresh key for
# issuer ttd generated inside the token. Later runs reuse all of it.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dev="$root/.dev"
agent="$root/target/debug/access-token-agent"
module="${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
export SOFTHSM2_CONF="$dev/softhsm2.conf"

umask 077
mkdir -p "$dev/tokens"
if [ ! -f "$SOFTHSM2_CONF" ]; then
    sed "s|@TOKENDIR@|$dev/tokens|" "$root/hsm-config/softhsm2.conf.in" >"$SOFTHSM2_CONF"
fi
if [ ! -f "$dev/agent.toml" ]; then
    sed -e "s|@MODULE@|$module|" -e "s|@DEV@|$dev|g" -e "s|@UID@|$(id -u)|g" \
        "$root/hsm-config/dev.toml.in" >"$dev/agent.toml"
fi
if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *access-tokens *$"; then
    od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$dev/pin"
    od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$dev/so-pin"
    softhsm2-util --init-token --free --label access-tokens \
        --so-pin "$(cat "$dev/so-pin")" --pin "$(cat "$dev/pin")" >/dev/null
    echo "created SoftHSM token 'access-tokens' in $dev/tokens" >&2
fi
if ! "$agent" --config "$dev/agent.toml" keys list | grep -q '^ttd '; then
    "$agent" --config "$dev/agent.toml" keys generate --issuer ttd --subject "CN=ttd (development)" >&2
fi
