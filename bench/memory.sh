#!/usr/bin/env bash
# Cost of `osprey memory` on a page-fault-bound workload (fresh anonymous pages, one minor
# fault each): runtime bare vs under `osprey memory` (every process traced) vs `perf stat -e
# page-faults` and a bpftrace one-liner counting faults per process, same run, medians of
# REPS interleaved runs; prints ns per fault added.
#
#   bench/memory.sh             REPS=5 PAGES=200000 by default
# Needs root; perf (apt-get install linux-perf) and bpftrace are skipped when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
PAGES=${PAGES:-200000}
WORK=$(mktemp -d /tmp/osprey-bench-memory.XXXXXX)
trap 'rm -rf "$WORK"; [ -n "${TRACER:-}" ] && kill "$TRACER" 2>/dev/null || true' EXIT

cargo build --release -q -p osprey-cli -p osprey-workload
OSPREY=target/release/osprey
WORKLOAD=target/release/osprey-workload

runtime() { # seconds of one workload run (mapping, then faulting PAGES pages)
    local t0 t1
    t0=$(date +%s.%N); echo go | "$WORKLOAD" fault-anon "$PAGES" >/dev/null; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

# with NAME CMD...: runs CMD in the background until it is ready, times one workload run.
with() {
    local name=$1; shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    TRACER=$!
    for _ in $(seq 100); do
        grep -qE "osprey: tracing|Attaching|Performance counter" "$WORK/$name.log" 2>/dev/null && break
        sleep 0.1
    done
    sleep 0.3
    runtime
    # TERM, not INT: background jobs of a script start with SIGINT ignored.
    kill -TERM "$TRACER"; wait "$TRACER" || true; TRACER=
}

declare -A times
tools=(bare osprey)
command -v perf >/dev/null && tools+=(perf)
command -v bpftrace >/dev/null && tools+=(bpftrace)
for _ in $(seq "$REPS"); do
    for t in "${tools[@]}"; do
        case $t in
            bare) s=$(runtime) ;;
            osprey) s=$(with osprey "$OSPREY" memory --top 3) ;;
            perf) s=$(with perf bash -c 'echo "Performance counter" >&2; exec perf stat -a -e page-faults sleep 600') ;;
            bpftrace) s=$(with bpftrace bpftrace -e 'software:page-faults:1 { @[pid] = count(); }') ;;
        esac
        times[$t]+="$s "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${times[bare]}" | median)
printf "%-10s %10s %8s %14s\n" TOOL "MEDIAN_S" RATIO "NS_PER_FAULT+"
for t in "${tools[@]}"; do
    m=$(echo "${times[$t]}" | median)
    printf "%-10s %10.4f %8.3f %14.0f\n" "$t" "$m" "$(echo "$m / $base" | bc -l)" \
        "$(echo "($m - $base) * 1000000000 / $PAGES" | bc -l)"
done
