#!/usr/bin/env sh
# Getting a token with curl, and sending it to Altinn Platform.
# Usage: curl.sh ISSUER APP [PLATFORM_URL]
set -eu
socket="${ACCESS_TOKEN_AGENT_SOCKET:-/run/access-token-agent/agent.sock}"
token="$(curl --silent --show-error --fail-with-body --unix-socket "$socket" \
    -H 'Accept: application/jwt' "http://agent/v1/token?issuer=$1&app=$2")"
if [ $# -ge 3 ]; then
    curl --silent --show-error -H "PlatformAccessToken: $token" "$3"
else
    echo "$token"
fi
