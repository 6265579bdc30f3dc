#!/usr/bin/env bash
# Network benchmarks, each against a baseline measured in the same run (medians of ROUNDS
# interleaved rounds). See bench/README.md ("net.sh") for what the numbers mean.
#  1. UDP blaster (64-byte datagrams) across a veth pair between two namespaces this script
#     creates and deletes. Conditions, interleaved each round:
#       bare      nothing attached
#       attach    do-nothing XDP (same mode osprey picks) + tcx egress programs on both ends
#                 (bpf/test_pass.bpf.c): the cost of merely having the hooks
#       flows     `osprey flows` on both ends
#       *_stats   the same two with BPF run-time stats on: their ns per run
#     Per packet: CPU ns of the sending process (the receive path runs in softirq on its
#     CPU, so it is included; other busy processes do not inflate it) and wall-clock
#     packets/s. Target: flows adds <= 60 ns per packet.
#  2. connect/close loop on loopback: ns per connection bare, with `osprey tcp`, and with
#     libbpf-tools `tcplife` (apt-get install libbpf-tools) when installed, interleaved.
# Usage (root): bench/net.sh [SECS_PER_ROUND] [ROUNDS]. XDP_MODE=native|generic forces the
# XDP mode for both osprey and the do-nothing program (default: native, what osprey's auto
# mode picks on veth). CONNECTIONS=N for the loop; OSPREY_BIN_DIR for other binaries;
# ONLY=flows|tcp runs one part.
set -euo pipefail
SECS=${1:-2}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${OSPREY_BIN_DIR:-$ROOT/target/release}
[ -x "$BIN/osprey" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml" -p osprey-cli -p osprey-workload >&2
# Copies, so a rebuild during the run does not mix versions.
TMP=$(mktemp -d)
cp "$BIN/osprey" "$BIN/osprey-workload" "$ROOT/crates/osprey-bpf/objects/test_pass.bpf.o" "$TMP/"
OSPREY=$TMP/osprey W=$TMP/osprey-workload PASS_OBJ=$TMP/test_pass.bpf.o
TAG=$$
A=obna$TAG B=obnb$TAG VA=obva$TAG VB=obvb$TAG
PIDS=()
STATS_BEFORE=$(cat /proc/sys/kernel/bpf_stats_enabled)
# SIGINT (osprey reports and detaches on it); SIGTERM for what still runs 3 s later.
stop_all() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  stop_all
  [ -n "${RECV:-}" ] && kill "$RECV" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE" || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
wait_for() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done; echo "not attached: $(cat "$1")" >&2; exit 1; }

flows_part() {
  ip netns add "$A"; ip netns add "$B"
  ip link add "$VA" netns "$A" type veth peer name "$VB" netns "$B"
  ip -n "$A" addr add 10.202.0.1/24 dev "$VA"; ip -n "$B" addr add 10.202.0.2/24 dev "$VB"
  ip -n "$A" link set "$VA" up; ip -n "$B" link set "$VB" up
  # A receiver that drains, so packets take the full receive path.
  ip netns exec "$B" "$W" udp-recv 10.202.0.2 9000 1000000000000 >/dev/null &
  RECV=$!
  local mode=${XDP_MODE:-native} flows_mode=()
  [ -n "${XDP_MODE:-}" ] && flows_mode=(--xdp-mode "$XDP_MODE")
  local out; out=$TMP/out
  declare -A CPU WALL NSRUN
  for round in $(seq "$ROUNDS"); do
    for cond in bare attach flows attach_stats flows_stats; do
      local logs=()
      case $cond in
        attach*)
          [ "$cond" = attach_stats ] && sysctl -qw kernel.bpf_stats_enabled=1
          for ns_if in "$A:$VA" "$B:$VB"; do
            ip netns exec "${ns_if%%:*}" "$W" attach-pass "$PASS_OBJ" "${ns_if#*:}" "$mode" tcx >"$TMP/$cond.${ns_if%%:*}" & PIDS+=($!)
            logs+=("$TMP/$cond.${ns_if%%:*}")
          done
          for l in "${logs[@]}"; do wait_for "$l" attached; done ;;
        flows*)
          local extra=(); [ "$cond" = flows_stats ] && extra=(--run-time-stats)
          for ns_if in "$A:$VA" "$B:$VB"; do
            ip netns exec "${ns_if%%:*}" "$OSPREY" flows -i "${ns_if#*:}" "${flows_mode[@]}" "${extra[@]}" -o json >/dev/null 2>"$TMP/$cond.${ns_if%%:*}" & PIDS+=($!)
            logs+=("$TMP/$cond.${ns_if%%:*}")
          done
          for l in "${logs[@]}"; do wait_for "$l" "osprey: tracing"; done ;;
      esac
      read -r pps cpu < <(ip netns exec "$A" "$W" udp-blast 10.202.0.2 9000 "$SECS" 64)
      stop_all
      [ "$cond" = attach_stats ] && sysctl -qw kernel.bpf_stats_enabled="$STATS_BEFORE"
      CPU[$cond]+="$cpu "; WALL[$cond]+="$(awk -v p="$pps" 'BEGIN{print 1e9/p}') "
      # ns per run: egress on A (sender), ingress on B (receiver), from run-time stats.
      case $cond in
        attach_stats)
          NSRUN[pass_tc]+="$(awk '$1=="pass_tc" && $3 {print $5/$3}' "$TMP/$cond.$A") "
          NSRUN[pass_xdp]+="$(awk '$1=="pass_xdp" && $3 {print $5/$3}' "$TMP/$cond.$B") " ;;
        flows_stats)
          NSRUN[flows_egress]+="$(grep -o '"avg_ns_per_run":[0-9]*,[^}]*"program":"flows_egress[a-z_]*"' "$TMP/$cond.$A" | grep -o '^"avg_ns_per_run":[0-9]*' | cut -d: -f2) "
          NSRUN[flows_ingress]+="$(grep -o '"avg_ns_per_run":[0-9]*,[^}]*"program":"flows_ingress"' "$TMP/$cond.$B" | grep -o '^"avg_ns_per_run":[0-9]*' | cut -d: -f2) " ;;
        attach)
          # Run counts with stats "off" mean another process holds BPF_ENABLE_STATS open.
          if awk '$3 > 0 {found=1} END {exit !found}' "$TMP/$cond.$A" "$TMP/$cond.$B"; then
            echo "note: BPF run-time stats were on during round $round without us (another process enables them)" >&2
          fi ;;
      esac
      echo "round $round $cond: $cpu cpu ns/pkt, $pps pkt/s" >&2
    done
  done
  kill "$RECV" 2>/dev/null || true
  local m; declare -A M MW
  for c in bare attach flows attach_stats flows_stats; do
    M[$c]=$(printf '%s\n' ${CPU[$c]} | median); MW[$c]=$(printf '%s\n' ${WALL[$c]} | median)
  done
  for p in pass_tc pass_xdp flows_egress flows_ingress; do
    NSRUN[$p]=$(printf '%s\n' ${NSRUN[$p]} | median)
  done
  awk -v b="${M[bare]}" -v a="${M[attach]}" -v f="${M[flows]}" -v as="${M[attach_stats]}" -v fs="${M[flows_stats]}" \
      -v wb="${MW[bare]}" -v wa="${MW[attach]}" -v wf="${MW[flows]}" -v mode="$mode" \
      -v ptc="${NSRUN[pass_tc]}" -v pxdp="${NSRUN[pass_xdp]}" -v fe="${NSRUN[flows_egress]}" -v fi="${NSRUN[flows_ingress]}" 'BEGIN {
    printf "udp 64B over veth, XDP %s, medians of interleaved rounds (CPU ns per packet of the sender, which runs the receive softirq too; wall ns in brackets):\n", mode
    printf "  bare                                  %7.1f ns/pkt  [wall %.0f]\n", b, wb
    printf "  do-nothing XDP + tcx attached         %7.1f ns/pkt  +%.1f  (attach-mode cost: the hooks themselves)  [wall %.0f]\n", a, a-b, wa
    printf "  osprey flows                          %7.1f ns/pkt  +%.1f  (target <= 60), of which our programs +%.1f  [wall %.0f]\n", f, f-b, f-a, wf
    printf "  with BPF run-time stats on: do-nothing +%.1f, osprey flows +%.1f (stats cost ~%.1f ns/pkt for the 2 runs)\n", as-b, fs-b, as-a
    printf "  ns per run (run-time stats): flows_egress %s, flows_ingress %s; do-nothing tc %s, xdp %s => ours %.1f + %.1f per packet\n", fe, fi, ptc, pxdp, fe-ptc, fi-pxdp
  }'
  ip netns del "$A"; ip netns del "$B"
}

tcp_part() {
  local N=${CONNECTIONS:-3000} PORT=$((20000 + TAG % 20000))
  exec 3> >("$W" tcp-sink 127.0.0.1 "$PORT")
  sleep 0.3
  # connect-loop prints wall ns and client CPU ns per connection.
  local -A WALL CPU
  local have_tcplife= conds="bare osprey"
  command -v tcplife >/dev/null && { have_tcplife=1; conds="bare osprey tcplife"; }
  for round in $(seq "$ROUNDS"); do
    for cond in $conds; do
      case $cond in
        osprey) "$OSPREY" tcp -o json >/dev/null 2>"$TMP/tcp.log" & PIDS+=($!)
                wait_for "$TMP/tcp.log" "osprey: tracing" ;;
        tcplife) stdbuf -oL tcplife >"$TMP/tcplife.out" 2>&1 & PIDS+=($!)
                 wait_for "$TMP/tcplife.out" "PID" ;;  # its header: attached
      esac
      read -r wall cpu < <("$W" connect-loop 127.0.0.1 "$PORT" "$N")
      stop_all
      WALL[$cond]+="$wall "; CPU[$cond]+="$cpu "
      echo "round $round connect+close $cond: $cpu cpu ns, $wall wall ns" >&2
    done
  done
  exec 3>&-
  local -A M MW
  for c in $conds; do
    M[$c]=$(printf '%s\n' ${CPU[$c]} | median); MW[$c]=$(printf '%s\n' ${WALL[$c]} | median)
  done
  printf "connect+close on loopback, medians (client CPU ns per connection; wall in brackets): bare %.0f [%.0f], osprey tcp %.0f (+%.0f) [%.0f]" \
    "${M[bare]}" "${MW[bare]}" "${M[osprey]}" "$(echo "${M[osprey]} - ${M[bare]}" | bc)" "${MW[osprey]}"
  if [ -n "$have_tcplife" ]; then
    printf ", tcplife %.0f (+%.0f) [%.0f]; osprey/tcplife added ratio %.2f" "${M[tcplife]}" "$(echo "${M[tcplife]} - ${M[bare]}" | bc)" "${MW[tcplife]}" \
      "$(echo "(${M[osprey]} - ${M[bare]}) / (${M[tcplife]} - ${M[bare]})" | bc -l)"
  else
    printf " (tcplife not installed: apt-get install libbpf-tools)"
  fi
  echo
}

[ "${ONLY:-flows}" = tcp ] || flows_part
[ "${ONLY:-tcp}" = flows ] || tcp_part
