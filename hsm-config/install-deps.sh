#!/usr/bin/env bash
# Installs what building and testing the agent needs, when it is missing:
# SoftHSM2 (the dev/test HSM), opensc (pkcs11-tool, an independent view of
# the token), p11-kit's server and client module (the token across a process
# boundary), OpenSSL headers (PKCS#12 and certificates), pkg-config, curl
# and python3, which run the client examples in the tests, and libclang-dev
# and libsqlite3-dev, with which the tests build Kryoptic, the second
# software token.
set -euo pipefail

# With an argument, what one more make target needs: `deb` (dpkg-shlibdeps,
# lintian), `systemd` (systemd-nspawn, expect for the README's PIN prompts,
# p11-kit's server and client module for an HSM that can be made to hang),
# `hosts` (network namespaces, socat forwarders and p11-kit for the many-hosts test).
packages=(softhsm2 opensc p11-kit p11-kit-modules libssl-dev pkg-config openssl curl python3
    libclang-dev libsqlite3-dev)
case "${1:-}" in
    deb) packages=(dpkg-dev lintian) ;;
    systemd) packages=(systemd-container expect p11-kit p11-kit-modules) ;;
    hosts) packages=(iproute2 socat p11-kit p11-kit-modules) ;;
esac
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in "${packages[@]}"; do
    have_pkg "$pkg" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing: ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
