#!/usr/bin/env bash
# Multi-process cluster benchmark in the network-namespace testbed (root): 3 replica processes
# and a client node, each in its own namespace, joined by veths to a bridge. For each
# transport, polling mode, fsync policy and client count it runs the cluster for WARMUP + RUN
# seconds and prints a markdown row: values/s over the RUN window (acknowledged lines counted
# at the client node), and the client node's p50/p99 submit-to-delivery latency.
# Usage: benches/nodes-grid.sh [OUTSTANDING] [RUN_SECONDS]     (defaults: 1, 5)
# Environment: TRANSPORTS, POLLINGS, POLICIES, CLIENTS, STAGES narrow or widen the grid;
# BIN runs a prebuilt ethpaxos binary instead of building this checkout (before/after runs).
# Transports: afpacket, udp, dpdk (net_af_packet on each veth), dpdk-virtio (virtio_user
# ports of `ethpaxos vswitch`); the dpdk ones build with --features dpdk.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-1}
run=${2:-5}
warm=2
features=()
case " ${TRANSPORTS:-} " in *" dpdk"*) features=(--features dpdk) ;; esac
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --quiet "${features[@]}"
  bin=$PWD/target/release/ethpaxos
fi
dir=$(mktemp -d /tmp/ethpaxos-nodes-grid.XXXXXX)
trap '"$bin" testbed down --name bench >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
echo "| transport | stages | polling | policy | clients x outstanding | values/s | p50 | p99 | frames/value |"
echo "|---|---|---|---|---|---|---|---|---|"
for transport in ${TRANSPORTS:-afpacket udp}; do for stages in ${STAGES:-single}; do
for polling in ${POLLINGS:-adaptive busy}; do for policy in ${POLICIES:-none async sync}; do
  for clients in ${CLIENTS:-1 4 16 64 256}; do
    rm -rf "$dir"/*
    case $transport in
      dpdk-virtio) how=(--transport dpdk --virtio) ;;
      *) how=(--transport "$transport") ;;
    esac
    "$bin" testbed up --name bench --dir "$dir" "${how[@]}" --polling "$polling" \
      --policy "$policy" --clients "$clients" --outstanding "$out" --stages "$stages" \
      --start >/dev/null
    sleep "$warm"
    a0=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
    sleep "$run"
    a1=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
    "$bin" testbed down --name bench >/dev/null
    # The client node's JSON summary (output.summary), written when it stops.
    p50=$(grep -o '"latency_p50_us": *[0-9]*' "$dir/summary-9.json" 2>/dev/null | grep -o '[0-9]*$' || true)
    p99=$(grep -o '"latency_p99_us": *[0-9]*' "$dir/summary-9.json" 2>/dev/null | grep -o '[0-9]*$' || true)
    # Frames every node sent over the whole run, per value acknowledged: a cost that does not
    # depend on the machine's speed.
    a2=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
    sent=$(cat "$dir"/summary-*.json 2>/dev/null | grep -o '"sent": *[0-9]*' | grep -o '[0-9]*$' | awk '{s+=$1} END {print s+0}')
    fpv=$(python3 -c "print(f'{${sent:-0}/${a2:-0}:.2f}' if ${a2:-0}>0 else '?')")
    echo "| $transport | $stages | $polling | $policy | $clients x $out | $(( (a1 - a0) / run )) | ${p50:-?} us | ${p99:-?} us | $fpv |"
  done
done; done; done; done
