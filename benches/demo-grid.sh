#!/usr/bin/env bash
# The clients x policy table of docs/benchmarks.md: `ethpaxos demo` at 1, 4, 16, 64 and 256
# clients, memory (none), async and sync back to back, for each outstanding count given.
# Usage: benches/demo-grid.sh [CONFIG] [OUTSTANDING...]   (defaults: config/demo.yaml, 1 64)
# Prints one markdown row per run; a run whose learners disagree prints "LEARNERS DIFFER".
# BIN runs a prebuilt ethpaxos binary instead of building this checkout (before/after runs).
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=${1:-config/demo.yaml}
shift || true
[ $# -gt 0 ] || set -- 1 64
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --quiet
  bin=target/release/ethpaxos
fi
echo "| outstanding | clients | policy | values/s | p50 | p99 | changes/commit |"
echo "|---|---|---|---|---|---|---|"
for o in "$@"; do for c in 1 4 16 64 256; do for p in none async sync; do
  out=$("$bin" demo --duration 4s --clients "$c" --outstanding "$o" --policy "$p" --config "$cfg" 2>&1) || true
  row=$(echo "$out" | sed -n 's/^summary: .*= \([0-9]*\) values\/s; latency p50 \([^ ]*\) p99 \([^;]*\);.*/\1 | \2 | \3/p')
  per=$(echo "$out" | grep -o '[0-9.]* changes per commit' | cut -d' ' -f1 || true)
  echo "$out" | grep -q "learners agree" || row="$row LEARNERS DIFFER"
  echo "| $o | $c | $p | ${row:-FAILED} | ${per:--} |"
done; done; done
