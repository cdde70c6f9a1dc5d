#!/usr/bin/env bash
# What the learners' journals cost (root: the network-namespace testbed). 3 replica
# processes and a client node with CLIENTS sessions (default 256) run in memory mode (fsync
# policy none, so the journal is written but never synced) for WARMUP + RUN seconds, with the
# learners' journals on and off in alternating rounds, so both see the same machine. Prints a
# markdown row per round and the ratio of the medians (journal on / off), plus each mode's
# journal bytes per value from the nodes' JSON summaries.
# Usage: benches/journal-cost.sh [ROUNDS] [RUN_SECONDS]     (defaults: 3, 8)
# Environment: CLIENTS, OUTSTANDING, POLICY, TRANSPORT; BIN runs a prebuilt binary.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
run=${2:-8}
warm=2
clients=${CLIENTS:-256}
out=${OUTSTANDING:-1}
policy=${POLICY:-none}
transport=${TRANSPORT:-afpacket}
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --quiet
  bin=$PWD/target/release/ethpaxos
fi
dir=$(mktemp -d /tmp/ethpaxos-journal-cost.XXXXXX)
trap '"$bin" testbed down --name jcost >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
echo "| round | journal | values/s | journal bytes/value |"
echo "|---|---|---|---|"
declare -A rates
for round in $(seq 1 "$rounds"); do
  for mode in on off; do
    rm -rf "${dir:?}"/*
    flag=()
    [ "$mode" = off ] && flag=(--no-journal)
    "$bin" testbed up --name jcost --dir "$dir" --transport "$transport" --policy "$policy" \
      --clients "$clients" --outstanding "$out" "${flag[@]}" --start >/dev/null
    sleep "$warm"
    a0=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
    sleep "$run"
    a1=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
    "$bin" testbed down --name jcost >/dev/null
    a2=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
    # Journal bytes per value, per learner that keeps one.
    bpv=$(python3 - "$dir" "$a2" <<'PY'
import glob, json, sys
per = [json.load(open(f)).get("learner") or {} for f in glob.glob(sys.argv[1] + "/summary-*.json")]
js = [p["journal"]["appended_bytes"] for p in per if p.get("journal")]
print(f"{sum(js) / len(js) / max(1, int(sys.argv[2])):.1f}" if js else "-")
PY
)
    rate=$(( (a1 - a0) / run ))
    rates[$mode]="${rates[$mode]:-} $rate"
    echo "| $round | $mode | $rate | $bpv |"
  done
done
python3 - "${rates[on]}" "${rates[off]}" <<'PY'
import statistics, sys
on = [int(x) for x in sys.argv[1].split()]
off = [int(x) for x in sys.argv[2].split()]
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"\nmedian values/s: journal on {m_on:.0f}, off {m_off:.0f}; on/off = {m_on / max(1, m_off):.3f}")
PY
