#!/usr/bin/env bash
# Agent with default modules on an idle machine: time from start to all probes attached, RSS,
# and CPU use over a window. Prints medians over ROUNDS runs against the issue's targets.
# Root required; builds the release binary.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
WINDOW=${WINDOW:-10}
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin osprey
osprey=$repo/target/release/osprey
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tick=$(getconf CLK_TCK)
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
: >"$work/attach"; : >"$work/rss"; : >"$work/cpu"
for round in $(seq "$ROUNDS"); do
    "$osprey" agent --state-dir "$work/state" --log "$work/events.jsonl" \
        --control-socket "$work/ctl.sock" --metrics-listen "127.0.0.1:$port" 2>"$work/err" &
    pid=$!
    until grep -q '"started"' "$work/err" 2>/dev/null; do sleep 0.05; done
    grep -o '"attached_ms":[0-9]*' "$work/err" | cut -d: -f2 >>"$work/attach"
    sleep 2 # settle: /proc seeding, first metrics tick
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sleep "$WINDOW"
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    echo "scale=3; 100 * ($t1 - $t0) / $tick / $WINDOW" | bc >>"$work/cpu"
    awk '/VmRSS/ {print $2 / 1024}' "/proc/$pid/status" >>"$work/rss"
    kill -TERM "$pid"; wait "$pid" || true; pid=
    rm -f "$work/err"
    echo "round $round: attached $(tail -1 "$work/attach") ms, rss $(tail -1 "$work/rss") MiB, cpu $(tail -1 "$work/cpu")% of one core"
done
echo "median start-to-attached: $(median <"$work/attach") ms (target <= 300)"
echo "median RSS:               $(median <"$work/rss") MiB (target <= 30)"
echo "median idle CPU:          $(median <"$work/cpu")% of one core (target <= 0.5)"
