#!/usr/bin/env bash
# `make deb`: target/debian/access-token-agent_<version>_<arch>.deb, built
# with dpkg-deb from the release binaries, the units in systemd/, the files
# in packaging/debian/, and man pages and completions generated from the
# commands' own definitions (gen-docs).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
name=access-token-agent
version="$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="access-token-agent"))')"
arch="$(dpkg --print-architecture)"
out="$root/target/debian"
stage="$out/stage"
# Whoever committed what is packaged, unless DEB_MAINTAINER says otherwise.
maintainer="${DEB_MAINTAINER:-$(git log -1 --format='%cn <%ce>')}"
docs="$out/docs"

cargo build --release -p access-token-agent -p access-token-client --bins
cargo build --release -p access-token-packaging
rm -rf "$stage" "$docs"
target/release/gen-docs "$docs"

for bin in access-token-agent access-token; do
    install -D -m 0755 "target/release/$bin" "$stage/usr/bin/$bin"
    strip --strip-unneeded --remove-section=.comment "$stage/usr/bin/$bin"
done
install -D -m 0644 -t "$stage/usr/lib/systemd/system" \
    systemd/access-token-agent.service systemd/access-token-agent.socket
install -D -m 0644 systemd/access-token-agent.sysusers "$stage/usr/lib/sysusers.d/access-token-agent.conf"
install -D -m 0644 systemd/access-token-agent.tmpfiles "$stage/usr/lib/tmpfiles.d/access-token-agent.conf"
install -D -m 0644 systemd/access-token-agent.logrotate "$stage/etc/logrotate.d/access-token-agent"

doc="$stage/usr/share/doc/$name"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 systemd/README.md "$doc/systemd-README.md"
install -D -m 0644 client/README.md "$doc/client-README.md"
install -D -m 0644 hsm-config/agent.example.toml "$doc/examples/agent.toml"
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
# A native package (no Debian revision): its changelog is changelog.gz.
changelog="$doc/changelog"
printf '%s (%s) stable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
    "$name" "$version" "$version" "$maintainer" \
    "$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")" >"$changelog"
gzip -9n "$changelog"

install -d "$stage/usr/share/man/man1"
for page in "$docs"/man/*.1; do
    gzip -9n -c "$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
install -D -m 0644 "$docs/completions/bash/access-token-agent.bash" "$stage/usr/share/bash-completion/completions/access-token-agent"
install -D -m 0644 "$docs/completions/bash/access-token.bash" "$stage/usr/share/bash-completion/completions/access-token"
install -D -m 0644 -t "$stage/usr/share/zsh/vendor-completions" "$docs"/completions/zsh/_*
install -D -m 0644 -t "$stage/usr/share/fish/vendor_completions.d" "$docs"/completions/fish/*.fish

# Depends: what the binaries link, as dpkg-shlibdeps finds it.
mkdir -p "$out/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$name" "$name" >"$out/shlibs/debian/control"
depends="$(cd "$out/shlibs" && dpkg-shlibdeps -O "$stage/usr/bin/access-token-agent" "$stage/usr/bin/access-token" 2>/dev/null |
    sed -n "s/^shlibs:Depends=//p")"
[ -n "$depends" ] || { echo "dpkg-shlibdeps found no dependencies" >&2; exit 1; }

install -d "$stage/DEBIAN"
install -m 0755 -t "$stage/DEBIAN" packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm
# Files under /etc are the operator's once installed: dpkg keeps their edits.
(cd "$stage" && find etc -type f -printf '/%p\n') >"$stage/DEBIAN/conffiles"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: $depends, adduser
Recommends: softhsm2, opensc
Suggests: p11-kit-modules
Section: admin
Priority: optional
Description: Altinn access tokens signed by a key kept in a PKCS#11 HSM
 A daemon that keeps an organisation's Altinn access-token signing key
 inside a PKCS#11 HSM (SoftHSM2, or a vendor's network HSM) and hands out
 signed PlatformAccessTokens to local processes over a Unix socket, so that
 no application process ever holds the private key. Grants decide which
 process (by user, group, systemd unit or executable) gets which token, and
 every decision leaves an audit line.
 .
 The package holds the agent (access-token-agent: serve, and the operators'
 keys and mint commands), the access-token client command, the systemd
 units, and the sysusers.d and tmpfiles.d files.
CONTROL
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
