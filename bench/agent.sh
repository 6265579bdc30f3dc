#!/usr/bin/env bash
# Agent on an idle machine: time from start to all probes attached, RSS, and CPU use over a
# window. Rounds interleave two variants so that a busy (shared) machine affects both alike:
#   default   the embedded defaults (process, security rules, tcp, profiler at 19 Hz)
#   baseline  process and tcp only (no rules, no profiler): what the new modules add
# Prints medians over ROUNDS runs, the default/baseline ratio, and what else used the CPU.
# WINDOW defaults to 65 s so that every window holds one profile interval (60 s): the
# symbolizing and writing of a pprof file is part of the idle cost. Root required; builds
# the release binary.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
WINDOW=${WINDOW:-65}
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
: >"$work/default.toml"
printf '[modules.security]\nenabled = false\n[modules.profile]\nenabled = false\n' >"$work/baseline.toml"
variants="default baseline"
for v in $variants; do : >"$work/$v.attach"; : >"$work/$v.rss"; : >"$work/$v.cpu"; done
: >"$work/others"
for round in $(seq "$ROUNDS"); do
    for v in $variants; do
        rm -rf "$work/state"
        "$osprey" agent --config "$work/$v.toml" --state-dir "$work/state" --log "$work/events.jsonl" \
            --control-socket "$work/ctl.sock" --metrics-listen "127.0.0.1:$port" 2>"$work/err" &
        pid=$!
        until grep -q '"started"' "$work/err" 2>/dev/null; do sleep 0.05; done
        grep -o '"attached_ms":[0-9]*' "$work/err" | cut -d: -f2 >>"$work/$v.attach"
        sleep 2 # settle: /proc seeding, first metrics tick
        t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
        sleep "$WINDOW"
        t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
        echo "scale=3; 100 * ($t1 - $t0) / $tick / $WINDOW" | bc >>"$work/$v.cpu"
        awk '/VmRSS/ {print $2 / 1024}' "/proc/$pid/status" >>"$work/$v.rss"
        # What else ran during the window (the machine may be shared).
        { echo "round $round $v: load $(cut -d' ' -f1-3 /proc/loadavg)";
          ps -eo pcpu,comm --sort=-pcpu | sed -n 2,5p; } >>"$work/others"
        kill -TERM "$pid"; wait "$pid" || true; pid=
        profiles=$(find "$work/state" -name 'cpu-*.pb.gz' | wc -l)
        rm -f "$work/err"
        echo "round $round $v: attached $(tail -1 "$work/$v.attach") ms, rss $(tail -1 "$work/$v.rss") MiB, cpu $(tail -1 "$work/$v.cpu")% of one core, $profiles profiles"
    done
done
for v in $variants; do
    echo "$v: median start-to-attached $(median <"$work/$v.attach") ms (target <= 300), RSS $(median <"$work/$v.rss") MiB (target <= 30), idle CPU $(median <"$work/$v.cpu")% of one core (target <= 0.5)"
done
ratio() {
    awk -v a="$(median <"$work/default.$1")" -v b="$(median <"$work/baseline.$1")" \
        'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a (baseline 0)" }'
}
echo "default/baseline: attach x$(ratio attach), RSS x$(ratio rss), CPU x$(ratio cpu)"
echo "other processes during the windows:"
cat "$work/others"
