#!/usr/bin/env python3
"""Print an Altinn access token from the local access-token-agent.

Usage: get_token.py ISSUER APP
The socket is $ACCESS_TOKEN_AGENT_SOCKET, else /run/access-token-agent/agent.sock.
In a Kubernetes pod, the pod's projected service-account token is sent too.
Python standard library only.
"""
import http.client
import json
import os
import socket
import sys
import urllib.parse


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix stream socket."""

    def __init__(self, socket_path):
        super().__init__("access-token-agent")
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.socket_path)
        self.sock = sock


# Where the pod's projected service-account token for the agent is mounted
# (deploy/kubernetes/app-example.yaml).
KUBERNETES_TOKEN_FILE = "/var/run/secrets/access-token-agent/token"


def kubernetes_token():
    """The pod's service-account token, or None outside a pod. Read again
    for every request: the kubelet renews the file before it expires."""
    try:
        with open(KUBERNETES_TOKEN_FILE, encoding="ascii") as file:
            return file.read().strip()
    except FileNotFoundError:
        return None


def get_token(issuer, app, socket_path):
    query = urllib.parse.urlencode({"issuer": issuer, "app": app})
    headers = {"Accept": "application/json"}
    service_account = kubernetes_token()
    if service_account:
        # Tells the agent the pod's namespace and service account.
        headers["Authorization"] = "Bearer " + service_account
    connection = UnixHTTPConnection(socket_path)
    connection.request("GET", "/v1/token?" + query, headers=headers)
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    if response.status != 200:
        # An RFC 9457 problem document: its detail says what to do.
        raise RuntimeError(f"{response.status} {body.get('type')}: {body.get('detail')}")
    return body["token"]


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    socket_path = os.environ.get("ACCESS_TOKEN_AGENT_SOCKET", "/run/access-token-agent/agent.sock")
    try:
        print(get_token(sys.argv[1], sys.argv[2], socket_path))
    except (OSError, RuntimeError, ValueError) as error:
        print(f"get_token: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
