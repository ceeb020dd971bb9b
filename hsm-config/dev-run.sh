#!/usr/bin/env bash
# Serves tokens on .dev/agent.sock from the development token, in the
# foreground (Ctrl-C stops it), after printing how to ask for one.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dev="$root/.dev"
agent="$root/target/debug/access-token-agent"
export SOFTHSM2_CONF="$dev/softhsm2.conf"

"$agent" --config "$dev/agent.toml" keys export-cert --issuer ttd --format pem >"$dev/ttd.pem" 2>/dev/null
cat >&2 <<INFO

access-token-agent: serving on $dev/agent.sock (Ctrl-C stops it). In another terminal:

  curl --unix-socket $dev/agent.sock 'http://agent/v1/token?issuer=ttd&app=my-app'

or just the token, and a check as Platform does it:

  TOKEN=\$(curl -s --unix-socket $dev/agent.sock -H 'Accept: application/jwt' 'http://agent/v1/token?issuer=ttd&app=my-app')
  $root/target/debug/access-token verify --cert $dev/ttd.pem "\$TOKEN"

Audit lines go to $dev/audit.jsonl; the certificate is $dev/ttd.pem.

INFO
exec "$agent" --config "$dev/agent.toml" serve
