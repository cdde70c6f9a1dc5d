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
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "$image imported"
