#!/usr/bin/env bash
# Added cost per syscall of file integrity monitoring (`osprey secure --watch`), measured in
# the same run as its baseline: medians of REPS interleaved runs of the syscall-heavy loop
# of bench/secure.sh (getppid, openat+close, write to /dev/null), under
#   secure-rules     default rules, no --watch
#   secure-fim-miss  + --watch of a directory of FILES files the loop never touches
#                    (each write costs the fd -> inode walk and one missing lookup)
#   secure-fim-hit   + --watch /dev/null: every write of the loop hits a watched inode
#                    (the lookup, then the per (process, inode) rate limiter)
# plus the in-kernel cost of the sys_exit program from BPF run-time statistics.
#
#   bench/fim.sh      REPS=5 ROUNDS=300000 FILES=1000; PROFILE=debug to skip a release build
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-300000}
FILES=${FILES:-1000}
PROFILE=${PROFILE:-release}
WORK=$(mktemp -d /tmp/osprey-bench-fim.XXXXXX)
TRACER_PID=
cleanup() { [ -n "$TRACER_PID" ] && kill -INT "$TRACER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if [ "$PROFILE" = release ]; then cargo build --release -q -p osprey-cli -p osprey-workload; else cargo build -q -p osprey-cli -p osprey-workload; fi
OSPREY=target/$PROFILE/osprey
WORKLOAD=target/$PROFILE/osprey-workload
mkdir -p "$WORK/watched"
for ((i = 0; i < FILES; i++)); do echo "$i" >"$WORK/watched/f$i"; done

start() {
    local log="$WORK/$1.log" watch=()
    case "$1" in
        bare) TRACER_PID=; return ;;
        secure-fim-miss) watch=(--watch "$WORK/watched") ;;
        secure-fim-hit) watch=(--watch /dev/null) ;;
    esac
    "$OSPREY" secure --state-dir "$WORK/state-$1" "${watch[@]}" -o json --run-time-stats >/dev/null 2>"$log" &
    TRACER_PID=$!
    until grep -q "osprey: tracing" "$log" 2>/dev/null; do sleep 0.05; done
}

stop() {
    if [ -n "$TRACER_PID" ]; then
        kill -INT "$TRACER_PID"; wait "$TRACER_PID" 2>/dev/null || true; TRACER_PID=
    fi
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

CONFIGS=(bare secure-rules secure-fim-miss secure-fim-hit)
for ((r = 0; r < REPS; r++)); do
    for c in "${CONFIGS[@]}"; do
        start "$c"
        "$WORKLOAD" bench-syscalls "$ROUNDS" /etc/hostname >>"$WORK/$c.ns"
        stop
        [ "$c" = bare ] || grep '"kind":"summary"' "$WORK/$c.log" |
            grep -oE '"avg_ns_per_run":[0-9]*,[^}]*"program":"security_exit_(sc|btf)"' |
            sed 's/"avg_ns_per_run":\([0-9]*\).*/\1/' >>"$WORK/$c.exit"
    done
done

BARE=$(median <"$WORK/bare.ns")
RULES=$(median <"$WORK/secure-rules.ns")
printf "%-16s %11s %14s %18s %20s\n" config "ns/syscall" "added vs bare" "added vs rules" "sys_exit prog ns/run"
for c in "${CONFIGS[@]}"; do
    m=$(median <"$WORK/$c.ns")
    e=-; [ "$c" = bare ] || e=$(median <"$WORK/$c.exit")
    printf "%-16s %11.1f %14.1f %18.1f %20s\n" "$c" "$m" "$(echo "$m - $BARE" | bc -l)" \
        "$(echo "$m - $RULES" | bc -l)" "$e"
done
