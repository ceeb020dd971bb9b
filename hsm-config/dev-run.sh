#!/usr/bin/env bash
# Mints a token for ttd on the development token and checks it against the
# certificate exported from the token.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dev="$root/.dev"
agent="$root/target/debug/access-token-agent"
export SOFTHSM2_CONF="$dev/softhsm2.conf"

token="$("$agent" --config "$dev/agent.toml" mint --issuer ttd --app my-app)"
"$agent" --config "$dev/agent.toml" keys export-cert --issuer ttd --format pem >"$dev/ttd.pem"
echo "$token"
echo "certificate for ttd: $dev/ttd.pem" >&2
