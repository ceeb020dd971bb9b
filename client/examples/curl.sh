#!/usr/bin/env sh
# Getting a token with curl (7.76 or later), and sending it to Altinn Platform.
# Usage: curl.sh ISSUER APP [PLATFORM_URL]
# The socket is $ACCESS_TOKEN_AGENT_SOCKET, else /run/access-token-agent/agent.sock.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: curl.sh ISSUER APP [PLATFORM_URL]" >&2
    exit 2
fi
socket="${ACCESS_TOKEN_AGENT_SOCKET:-/run/access-token-agent/agent.sock}"
# In a Kubernetes pod: its projected service-account token, read each time
# (the kubelet renews it), as a header curl reads from stdin, so that the
# token is never on a command line.
sa_token=/var/run/secrets/access-token-agent/token
authorization=""
if [ -r "$sa_token" ]; then
    authorization="Authorization: Bearer $(cat "$sa_token")"
fi
# Accept: application/jwt asks for the bare token; --get --data-urlencode
# puts the parameters, percent-encoded, into the query.
if ! token="$(printf '%s\n' "$authorization" | curl --silent --show-error --fail-with-body \
    --unix-socket "$socket" -H @- -H 'Accept: application/jwt' --get \
    --data-urlencode "issuer=$1" --data-urlencode "app=$2" http://agent/v1/token)"; then
    # The body is a problem document (RFC 9457); its detail says what to do.
    echo "curl.sh: no token: $token" >&2
    exit 1
fi
if [ $# -ge 3 ]; then
    # The token goes into the header as is, without "Bearer ".
    curl --silent --show-error -H "PlatformAccessToken: $token" "$3"
else
    echo "$token"
fi
