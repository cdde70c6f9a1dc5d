#!/usr/bin/env bash
# Builds the appliance image ethpaxos:local (TAG overrides the tag) from docker/Dockerfile:
# the binary is compiled inside the build, on the base bootstrap-base.sh makes where it
# cannot be pulled. The host's own CA certificates (/usr/local/share/ca-certificates/*.crt,
# e.g. a TLS-inspecting proxy's) are handed to the build so cargo trusts what the host trusts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${TAG:-ethpaxos:local}
rm -f "$here"/ca-certificates/*.crt
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -e "$crt" ] && cp "$crt" "$here/ca-certificates/"
done
echo "== docker build -f docker/Dockerfile -t $tag (compiles the binary: a few minutes)"
DOCKER_BUILDKIT=0 docker build -q --force-rm -f "$here/Dockerfile" -t "$tag" "$here/.." >/dev/null
echo "$tag built"
