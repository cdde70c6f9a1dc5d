#!/usr/bin/env bash
# Makes the base image the Dockerfiles name (debian:bookworm-slim) where it is missing and
# cannot be pulled: a minimal Debian bookworm from Debian's packages (debootstrap, about 30 s),
# imported under that name. Needs root, docker and debootstrap.
set -euo pipefail
image=debian:bookworm-slim
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image is there"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "error: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "== debootstrap --variant=minbase bookworm (about 30 s)"
debootstrap --variant=minbase bookworm "$root" >/dev/null
# The official image's package sources: bookworm, its updates and security (where Debian's
# current Rust toolchain for the build stage comes from), and no package lists or archives.
rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "$image imported"
