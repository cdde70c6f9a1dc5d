#!/usr/bin/env bash
# Builds the binary on the host and the appliance image ethpaxos:local (TAG overrides the tag)
# from docker/Dockerfile, on the base bootstrap-base.sh makes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${TAG:-ethpaxos:local}
(cd "$here/.." && cargo build --release --quiet)
mkdir -p "$here/.build"
cp "$here/../target/release/ethpaxos" "$here/.build/ethpaxos"
docker build -q -t "$tag" "$here" >/dev/null
echo "$tag built"
