#!/usr/bin/env bash
# Network benchmarks, each against a baseline measured in the same run (medians of ROUNDS):
#  1. UDP blaster across a veth pair between two namespaces this script creates (and
#     deletes): packets/s and ns/packet bare vs with `osprey flows` on both veth ends
#     (tcx egress on the sender's side, XDP on the receiver's). Target: <= 60 ns added.
#  2. connect/close loop on loopback: ns per connection bare, with `osprey tcp`, and with
#     libbpf-tools `tcplife` (apt-get install libbpf-tools), when installed.
# Usage (root): bench/net.sh [SECS_PER_ROUND] [ROUNDS]; FLOWS_ARGS="--xdp-mode generic" to compare
# modes; CONNECTIONS=N for the loop; OSPREY_BIN_DIR to use other binaries.
set -euo pipefail
SECS=${1:-2}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${OSPREY_BIN_DIR:-$ROOT/target/release}
[ -x "$BIN/osprey" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml" -p osprey-cli >&2
W=$BIN/osprey-workload
TAG=$$
A=obna$TAG B=obnb$TAG VA=obva$TAG VB=obvb$TAG
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
wait_ready() { for _ in $(seq 100); do grep -q "osprey: tracing" "$1" 2>/dev/null && return; sleep 0.1; done; echo "not attached: $(cat "$1")" >&2; exit 1; }
stop_all() { for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=(); }

ip netns add "$A"; ip netns add "$B"
ip link add "$VA" netns "$A" type veth peer name "$VB" netns "$B"
ip -n "$A" addr add 10.202.0.1/24 dev "$VA"; ip -n "$B" addr add 10.202.0.2/24 dev "$VB"
ip -n "$A" link set "$VA" up; ip -n "$B" link set "$VB" up
# A receiver that drains, so packets take the full receive path.
ip netns exec "$B" "$W" udp-recv 10.202.0.2 9000 1000000000000 >/dev/null &
RECV=$!

blast() { ip netns exec "$A" "$W" udp-blast 10.202.0.2 9000 "$SECS" 64; }
bare=(); traced=()
for _ in $(seq "$ROUNDS"); do
  bare+=("$(blast)")
  LOG_A=$(mktemp); LOG_B=$(mktemp)
  ip netns exec "$A" "$BIN/osprey" flows -i "$VA" ${FLOWS_ARGS:-} -o json >/dev/null 2>"$LOG_A" & PIDS+=($!)
  ip netns exec "$B" "$BIN/osprey" flows -i "$VB" ${FLOWS_ARGS:-} -o json >/dev/null 2>"$LOG_B" & PIDS+=($!)
  wait_ready "$LOG_A"; wait_ready "$LOG_B"
  traced+=("$(blast)")
  stop_all
  rm -f "$LOG_A" "$LOG_B"
done
kill "$RECV" 2>/dev/null || true
pb=$(printf '%s\n' "${bare[@]}" | median); pt=$(printf '%s\n' "${traced[@]}" | median)
awk -v b="$pb" -v t="$pt" 'BEGIN {
  printf "udp 64B over veth: bare %.0f pkt/s (%.1f ns/pkt), with osprey flows %.0f pkt/s (%.1f ns/pkt): +%.1f ns/pkt, ratio %.3f (target <= 60 ns)\n",
    b, 1e9/b, t, 1e9/t, 1e9/t - 1e9/b, t/b }'

# 2. connect/close loop on loopback.
N=${CONNECTIONS:-3000}
PORT=$((20000 + TAG % 20000))
exec 3> >("$W" tcp-sink 127.0.0.1 "$PORT")
sleep 0.3
loop() { "$W" connect-loop 127.0.0.1 "$PORT" "$N"; }
bare=(); osp=(); life=()
for _ in $(seq "$ROUNDS"); do
  bare+=("$(loop)")
  LOG=$(mktemp)
  "$BIN/osprey" tcp -o json >/dev/null 2>"$LOG" & PIDS+=($!)
  wait_ready "$LOG"
  osp+=("$(loop)")
  stop_all; rm -f "$LOG"
  if command -v tcplife >/dev/null; then
    tcplife >/dev/null 2>&1 & PIDS+=($!)
    sleep 1.5
    life+=("$(loop)")
    stop_all
  fi
done
exec 3>&-
b=$(printf '%s\n' "${bare[@]}" | median); o=$(printf '%s\n' "${osp[@]}" | median)
printf "connect+close on loopback: bare %.0f ns, osprey tcp %.0f ns (+%.0f ns/connection)" "$b" "$o" "$(echo "$o - $b" | bc)"
if [ ${#life[@]} -gt 0 ]; then
  l=$(printf '%s\n' "${life[@]}" | median)
  printf ", tcplife %.0f ns (+%.0f ns/connection)" "$l" "$(echo "$l - $b" | bc)"
fi
echo
