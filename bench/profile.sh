#!/usr/bin/env bash
# Overhead of `osprey profile` (default auto unwinding at 99 and 999 Hz, and frame pointers
# only at 99 Hz: osprey99fp) on a CPU-bound workload, against the bare run, perf and
# bpftrace measured in the same run (medians of REPS interleaved runs), and the time from
# the end of a profile to a written flame graph (osprey vs perf script | inferno).
#
#   bench/profile.sh            REPS=5 PROFILE_SECS=10 SVG_REPS=3 OWN_SECS=10 OWN_REPS=3 by
#                               default (60 s for the issue's figure: PROFILE_SECS=60);
#                               SKIP_RUNTIME=1, SKIP_OWN=1, SKIP_SVG=1 leave parts out
# Needs root, cc, perf (apt-get install linux-perf), bpftrace, and for the SVG comparison
# inferno-collapse-perf/inferno-flamegraph (installed with cargo install inferno when
# missing); other missing tools are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
PROFILE_SECS=${PROFILE_SECS:-10}
WORK=$(mktemp -d /tmp/osprey-bench-profile.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p osprey-cli -p osprey-workload
OSPREY=target/release/osprey

cat > "$WORK/burn.c" <<'C'
#include <stdint.h>
#include <stdlib.h>
volatile uint64_t sink;
__attribute__((noinline)) void leaf(void) { uint64_t x = 0; for (int i = 0; i < 2000000; i++) x += (uint64_t)i * i; sink = x; }
__attribute__((noinline)) void mid(void) { for (int i = 0; i < 10; i++) leaf(); }
__attribute__((noinline)) void top(void) { for (int i = 0; i < 10; i++) mid(); }
int main(int argc, char **argv) { int n = argc > 1 ? atoi(argv[1]) : 10; for (int i = 0; i < n; i++) top(); return 0; }
C
cc -O1 -fno-omit-frame-pointer -o "$WORK/burn" "$WORK/burn.c"
ITER=${ITER:-25}

runtime() { # seconds of one workload run
    local t0 t1
    t0=$(date +%s.%N); "$WORK/burn" "$ITER"; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

# start_profiler NAME: starts it in the background, waits until it samples; sets PROF_PID
start_profiler() {
    local log="$WORK/$1.log"
    case "$1" in
        osprey99|osprey999|osprey99fp)
            local hz=${1#osprey}; local unwind=auto
            [ "$hz" = 99fp ] && hz=99 && unwind=fp
            "$OSPREY" profile --freq "$hz" --unwind "$unwind" --folded "$WORK/o.folded" >/dev/null 2>"$log" &
            PROF_PID=$!
            until grep -q "osprey: tracing" "$log" 2>/dev/null; do sleep 0.05; done ;;
        perf)
            perf record -F 99 -g -a -o "$WORK/perf.data" 2>"$log" >/dev/null &
            PROF_PID=$!; sleep 1 ;;
        bpftrace)
            bpftrace -e 'profile:hz:99 { @[kstack, ustack, comm] = count(); }' >/dev/null 2>"$log" &
            PROF_PID=$!; sleep 3 ;;
    esac
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

CONFIGS=(bare osprey99 osprey99fp osprey999)
command -v perf >/dev/null && CONFIGS+=(perf) || echo "perf missing: skipped (apt-get install linux-perf)"
command -v bpftrace >/dev/null && CONFIGS+=(bpftrace) || echo "bpftrace missing: skipped"
for c in "${CONFIGS[@]}"; do : > "$WORK/$c.times"; done
[ "${SKIP_RUNTIME:-0}" = 1 ] && REPS=0 && CONFIGS=(bare) && ITER=1 && runtime > "$WORK/bare.times"
for _ in $(seq "$REPS"); do
    for c in "${CONFIGS[@]}"; do
        PROF_PID=
        [ "$c" != bare ] && start_profiler "$c"
        runtime >> "$WORK/$c.times"
        if [ -n "$PROF_PID" ]; then kill -INT "$PROF_PID"; wait "$PROF_PID" 2>/dev/null || true; fi
    done
done
BARE=$(median < "$WORK/bare.times")
printf "%-10s %10s %8s\n" CONFIG MEDIAN_S VS_BARE
for c in "${CONFIGS[@]}"; do
    m=$(median < "$WORK/$c.times")
    printf "%-10s %10.3f %8.4f\n" "$c" "$m" "$(echo "$m / $BARE" | bc -l)"
done

# The profiler's own CPU, in % of one core, while it profiles the whole system at 99 Hz
# with a C burner and a CPython burner running (Python frames read at every sample of the
# latter): osprey (auto unwinding) against perf record -g, OWN_SECS of steady state after
# start-up (utime + stime of the profiler process), medians of OWN_REPS.
own_cpu() { # NAME: prints the profiler's CPU % of one core over OWN_SECS
    start_profiler "$1"
    local hz t0 t1 c0 c1
    hz=$(getconf CLK_TCK)
    c0=$(awk '{print $14 + $15}' "/proc/$PROF_PID/stat"); t0=$(date +%s.%N)
    sleep "$OWN_SECS" # the measured interval
    c1=$(awk '{print $14 + $15}' "/proc/$PROF_PID/stat"); t1=$(date +%s.%N)
    kill -INT "$PROF_PID"; wait "$PROF_PID" 2>/dev/null || true
    echo "100 * ($c1 - $c0) / $hz / ($t1 - $t0)" | bc -l
}
OWN_SECS=${OWN_SECS:-10}
OWN_REPS=${OWN_REPS:-3}
if [ "${SKIP_OWN:-0}" != 1 ]; then
    cat > "$WORK/burn.py" <<'PY'
def leaf(n):
    x = 0
    for i in range(n):
        x += i * i
    return x
def mid(n):
    return sum(leaf(n) for _ in range(10))
while True:
    mid(20000)
PY
    PYTHON=$(command -v python3.11 || command -v python3)
    "$WORK/burn" 1000000000 & CBURN=$!
    "$PYTHON" "$WORK/burn.py" & PYBURN=$!
    OWN=(osprey99)
    command -v perf >/dev/null && OWN+=(perf)
    for c in "${OWN[@]}"; do : > "$WORK/$c.own"; done
    for _ in $(seq "$OWN_REPS"); do
        for c in "${OWN[@]}"; do own_cpu "$c" >> "$WORK/$c.own"; done
    done
    kill "$CBURN" "$PYBURN" 2>/dev/null; wait "$CBURN" "$PYBURN" 2>/dev/null || true
    for c in "${OWN[@]}"; do
        printf "%-10s own CPU at 99 Hz: median %.3f %% of one core (rounds: %s)\n" "$c" \
            "$(median < "$WORK/$c.own")" "$(tr '\n' ' ' < "$WORK/$c.own")"
    done
fi
[ "${SKIP_SVG:-0}" = 1 ] && exit 0

# Time from the end of a PROFILE_SECS system-wide profile of the same workload to a written
# SVG: osprey's own measure (symbolize + write every output) against perf record's data
# turned into a flame graph by perf script | inferno (SVG_REPS rounds each, medians).
SVG_REPS=${SVG_REPS:-3}
if ! command -v inferno-flamegraph >/dev/null; then
    echo "installing inferno (cargo install inferno) for the perf comparison"
    cargo install -q inferno || true
    export PATH="${CARGO_INSTALL_ROOT:-$HOME/.cargo}/bin:$PATH"
fi
"$WORK/burn" 1000000000 & BURN=$!
: > "$WORK/osprey_svg.times"; : > "$WORK/perf_svg.times"
for _ in $(seq "$SVG_REPS"); do
    "$OSPREY" profile --duration "$PROFILE_SECS" --svg "$WORK/o.svg" --output json \
        >/dev/null 2>"$WORK/o.json"
    grep '"kind":"summary"' "$WORK/o.json" \
        | sed 's/.*"symbolize_and_write_secs":\([0-9.e-]*\).*/\1/' >> "$WORK/osprey_svg.times"
    if command -v perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
        perf record -F 99 -g -a -o "$WORK/perf.data" -- sleep "$PROFILE_SECS" 2>/dev/null >/dev/null
        t0=$(date +%s.%N)
        perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$WORK/p.svg"
        t1=$(date +%s.%N)
        echo "$t1 - $t0" | bc -l >> "$WORK/perf_svg.times"
    fi
done
kill "$BURN" 2>/dev/null; wait "$BURN" 2>/dev/null || true
OSPREY_SVG=$(median < "$WORK/osprey_svg.times")
echo "osprey: end of ${PROFILE_SECS}s profile to SVG: median ${OSPREY_SVG} s (rounds: $(tr '\n' ' ' < "$WORK/osprey_svg.times"))"
if [ -s "$WORK/perf_svg.times" ]; then
    PERF_SVG=$(median < "$WORK/perf_svg.times")
    printf "perf script | inferno: median %.3f s (rounds: %s); osprey/perf %.3f\n" "$PERF_SVG" \
        "$(tr '\n' ' ' < "$WORK/perf_svg.times")" "$(echo "$OSPREY_SVG / $PERF_SVG" | bc -l)"
else
    echo "perf or inferno-flamegraph missing: SVG comparison skipped (cargo install inferno)"
fi
