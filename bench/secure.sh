#!/usr/bin/env bash
# Added cost per syscall of `osprey secure` (default rules; then also syscall baselines in
# detect mode) and of `osprey syscalls`, against the bare loop and libbpf-tools `syscount -L`,
# measured in the same run: medians of REPS interleaved runs of a syscall-heavy loop
# (getppid, openat+close, write to /dev/null). Then the alert latency (kernel event to alert
# line, `detect_latency_ns`) over ALERTS triggers of a default rule: p50 and p99.
#
#   bench/secure.sh          REPS=5 ROUNDS=500000 ALERTS=200 by default
# Needs root; syscount from libbpf-tools (apt-get install libbpf-tools) or it is skipped.
# With the community rule sets beside the repository (RULESETS, default ../shared/rulesets)
# it also runs secure-community: the defaults plus the 169 Sigma rules and Falco's stable
# file, and prints the start-up time (launch to the 'tracing' line) of each secure config.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-500000}
ALERTS=${ALERTS:-200}
RULESETS=${RULESETS:-../shared/rulesets}
WORK=$(mktemp -d /tmp/osprey-bench-secure.XXXXXX)
TRACER_PID=
cleanup() { [ -n "$TRACER_PID" ] && kill -INT "$TRACER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release -q -p osprey-cli -p osprey-workload
OSPREY=target/release/osprey
WORKLOAD=target/release/osprey-workload
TARGET=/etc/hostname
mkdir -p "$WORK/empty-state" "$WORK/state"

loop() { "$WORKLOAD" bench-syscalls "$ROUNDS" "$TARGET"; } # prints ns per syscall

# start NAME: the tracer of a configuration in the background, attached; sets TRACER_PID
start() {
    local log="$WORK/$1.log"
    case "$1" in
        bare) TRACER_PID=; return ;;
        syscount)
            /usr/sbin/syscount -L >/dev/null 2>"$log" &
            TRACER_PID=$!; sleep 2 ;;
        osprey-syscalls)
            "$OSPREY" syscalls >/dev/null 2>"$log" & TRACER_PID=$! ;;
        secure-rules)
            "$OSPREY" secure --state-dir "$WORK/empty-state" -o json --run-time-stats >/dev/null 2>"$log" & TRACER_PID=$! ;;
        secure-baselines)
            "$OSPREY" secure --state-dir "$WORK/state" -o json --run-time-stats >/dev/null 2>"$log" & TRACER_PID=$! ;;
        secure-community)
            "$OSPREY" secure --state-dir "$WORK/empty-state" -o json --run-time-stats --rules "$RULESETS/sigma" \
                --rules "$RULESETS/falco/falco_rules.yaml" >/dev/null 2>"$log" & TRACER_PID=$! ;;
    esac
    local t0; t0=$(date +%s%N)
    [ "$1" = syscount ] || until grep -q "osprey: tracing" "$log" 2>/dev/null; do sleep 0.01; done
    case "$1" in secure-*) echo $(( ($(date +%s%N) - t0) / 1000000 )) >>"$WORK/$1.startup" ;; esac
}

stop() {
    if [ -n "$TRACER_PID" ]; then
        kill -INT "$TRACER_PID"; wait "$TRACER_PID" 2>/dev/null || true; TRACER_PID=
    fi
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Baselines of the loop itself (and everything else running) for the detect configuration.
"$OSPREY" secure --learn 4 --state-dir "$WORK/state" >/dev/null 2>"$WORK/learn.log" &
LEARN=$!
until grep -q "osprey: tracing" "$WORK/learn.log" 2>/dev/null; do sleep 0.05; done
"$WORKLOAD" bench-syscalls 1000 "$TARGET" >/dev/null
wait "$LEARN"

CONFIGS=(bare osprey-syscalls secure-rules secure-baselines)
[ -d "$RULESETS/sigma" ] && CONFIGS+=(secure-community) || echo "$RULESETS missing: secure-community skipped"
[ -x /usr/sbin/syscount ] && CONFIGS+=(syscount) || echo "syscount missing: skipped (apt-get install libbpf-tools)"
for ((r = 0; r < REPS; r++)); do
    for c in "${CONFIGS[@]}"; do
        start "$c"
        loop >>"$WORK/$c.ns"
        stop
        # The in-kernel cost of the sys_enter program, from BPF run-time statistics.
        case "$c" in secure-*)
            grep '"kind":"summary"' "$WORK/$c.log" | grep -oE '"avg_ns_per_run":[0-9]*,[^}]*"program":"security_enter_(sc|btf)"' |
                sed 's/"avg_ns_per_run":\([0-9]*\).*/\1/' >>"$WORK/$c.enter" ;;
        esac
    done
done

BARE=$(median <"$WORK/bare.ns")
printf "%-18s %12s %12s %8s\n" config "ns/syscall" "added ns" ratio
for c in "${CONFIGS[@]}"; do
    m=$(median <"$WORK/$c.ns")
    printf "%-18s %12.1f %12.1f %8.2f\n" "$c" "$m" "$(echo "$m - $BARE" | bc -l)" "$(echo "$m / $BARE" | bc -l)"
done
RULES=$(median <"$WORK/secure-rules.ns"); BASE=$(median <"$WORK/secure-baselines.ns")
printf "baseline check alone (secure-baselines - secure-rules): %.1f ns per syscall wall clock (target <= 200)\n" \
    "$(echo "$BASE - $RULES" | bc -l)"
printf "sys_enter program, BPF run-time stats: %s ns per run with rules only, %s with baselines\n" \
    "$(median <"$WORK/secure-rules.enter")" "$(median <"$WORK/secure-baselines.enter")"

for c in "${CONFIGS[@]}"; do
    case "$c" in secure-*) printf "start-up of %s: %s ms (median, launch to the 'tracing' line)\n" "$c" "$(median <"$WORK/$c.startup")" ;; esac
done

# Alert latency: ALERTS opens of /etc/passwd for writing (rule account_file_write).
"$OSPREY" secure --state-dir "$WORK/empty-state" -o json >"$WORK/alerts.json" 2>"$WORK/alerts.log" &
TRACER_PID=$!
until grep -q "osprey: tracing" "$WORK/alerts.log" 2>/dev/null; do sleep 0.05; done
for ((i = 0; i < ALERTS; i++)); do "$WORKLOAD" open-write /etc/passwd; sleep 0.01; done
sleep 0.5
stop
grep '"rule":"account_file_write"' "$WORK/alerts.json" | grep -o '"detect_latency_ns":[0-9]*' | cut -d: -f2 |
    sort -g | awk -v want="$ALERTS" '{a[NR]=$1} END {
        if (NR == 0) { print "no alerts"; exit 1 }
        p50 = a[int((NR - 1) * 0.50) + 1]; p99 = a[int((NR - 1) * 0.99) + 1];
        printf "alert latency over %d alerts (of %d triggers): p50 %.2f ms, p99 %.2f ms (target p99 < 50 ms)\n",
            NR, want, p50 / 1e6, p99 / 1e6 }'
