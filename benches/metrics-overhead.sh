#!/usr/bin/env bash
# What serving Prometheus metrics costs: the same 4-process cluster on loopback UDP (3
# replicas + a client node, no root needed) with `metrics_address` off and on, every node
# scraped once a second while on. Runs alternate off/on PAIRS times, so drift on a shared
# machine hits both alike; each run is 2 s of warm-up, then values/s over RUN seconds counted
# at the client node. Prints a row per run and the on/off ratio of the means.
# Usage: benches/metrics-overhead.sh [PAIRS] [RUN_SECONDS] [POLICY] [CLIENTS]
#        (defaults: 5, 8, none, 256; 1 value outstanding per client)
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-5}
run=${2:-8}
policy=${3:-none}
clients=${4:-256}
cargo build --release --quiet
bin=$PWD/target/release/ethpaxos
dir=$(mktemp -d /tmp/ethpaxos-metrics-bench.XXXXXX)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stop; rm -rf "$dir"' EXIT

write_configs() { # $1: on|off
  for id in 1 2 3 9; do
    {
      echo "node_id: $id"
      [ "$1" = on ] && echo "metrics_address: \"127.0.0.1:96$(printf %02d $id)\""
      echo "members:"
      for m in 1 2 3; do echo "  - {id: $m, roles: [replica], udp: \"127.0.0.1:76$(printf %02d $m)\"}"; done
      echo "  - {id: 9, roles: [learner, client], udp: \"127.0.0.1:7609\"}"
      if [ "$id" != 9 ]; then
        echo "storage: {fsync_policy: $policy, path: \"$dir/data\"}"
      else
        echo "load: {clients: $clients, outstanding: 1}"
        echo "output: {acknowledged: \"$dir/acknowledged.txt\"}"
      fi
    } > "$dir/node-$id.yaml"
  done
}

one_run() { # $1: on|off; prints values/s
  rm -rf "$dir/data" "$dir/acknowledged.txt"
  write_configs "$1"
  for id in 1 2 3 9; do "$bin" run --config "$dir/node-$id.yaml" 2>"$dir/node-$id.log" & pids+=($!); done
  if [ "$1" = on ]; then
    ( while sleep 1; do for id in 01 02 03 09; do curl -s -o /dev/null "http://127.0.0.1:96$id/metrics" || true; done; done ) &
    pids+=($!)
  fi
  sleep 2
  a0=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
  sleep "$run"
  a1=$(wc -l < "$dir/acknowledged.txt" 2>/dev/null || echo 0)
  stop
  echo $(( (a1 - a0) / run ))
}

echo "| pair | metrics off, values/s | metrics on, values/s | on/off |"
echo "|---|---|---|---|"
sum_off=0; sum_on=0
for k in $(seq 1 "$pairs"); do
  off=$(one_run off); on=$(one_run on)
  sum_off=$((sum_off + off)); sum_on=$((sum_on + on))
  echo "| $k | $off | $on | $(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", a/b}') |"
done
echo
echo "policy $policy, $clients clients x 1: mean off $((sum_off / pairs)), mean on $((sum_on / pairs)), on/off $(awk -v a="$sum_on" -v b="$sum_off" 'BEGIN{printf "%.3f", a/b}')"
