#!/usr/bin/env bash
# What an always-on monitor adds to every other process's syscalls. Two loops of
# osprey-workload, each timed by the workload itself:
#   getppid   COUNT raw getppid(2): a syscall no module or rule needs
#   openat    COUNT openat(2) of a missing path (fails with ENOENT)
# under each configuration, interleaved round by round (REPS rounds). Each loop reports the
# CPU time of its own thread per call (OSPREY_BENCH_CPU_TIME: user + system, which includes
# the BPF programs run in its context) rather than wall time, so that a busy machine's
# waits for a CPU do not count; CLOCK=wall for wall time. Configurations:
#   bare             nothing attached
#   agent            osprey agent with its default modules
#   secure           osprey secure, default rules, no baselines
#   syscalls         osprey syscalls
#   syscount         libbpf-tools syscount      (skipped when not installed)
#   syscount-L       libbpf-tools syscount -L   (skipped when not installed)
#   files            osprey files --output json > /dev/null
# Prints per configuration and loop the added ns per call (traced minus bare of the same
# round): median, min and max over the rounds, and osprey syscalls' ratio to syscount -L.
# Then FLOOD_SECS of two openers at full speed under `osprey files --output json`: events
# delivered per second and what osprey's own counters say was dropped.
#
#   bench/syscall-cost.sh      REPS=5 COUNT=2000000 FLOOD_SECS=10 CONFIGS="..." by default
# BEFORE=PATH (another build's osprey binary): a config NAME@before (e.g. agent@before) runs
# NAME with that binary, for a before/after comparison within one run.
# Needs root. libbpf-tools (apt-get install libbpf-tools) for the syscount rows.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
COUNT=${COUNT:-2000000}
FLOOD_SECS=${FLOOD_SECS:-10}
CONFIGS=${CONFIGS:-"bare agent secure syscalls syscount syscount-L files"}
SYSCOUNT=${SYSCOUNT:-$(command -v syscount || echo /usr/sbin/syscount)}
[ "${CLOCK:-cpu}" = wall ] || export OSPREY_BENCH_CPU_TIME=1
WORK=$(mktemp -d /tmp/osprey-bench-syscall-cost.XXXXXX)
TRACER_PID=
cleanup() {
    [ -n "$TRACER_PID" ] && kill -INT "$TRACER_PID" 2>/dev/null && wait "$TRACER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p osprey-cli -p osprey-workload
# Private copies: a rebuild of target/release during the run must not change what is measured.
cp target/release/osprey target/release/osprey-workload "$WORK/"
[ -z "${BEFORE:-}" ] || cp "$BEFORE" "$WORK/osprey-before"
OSPREY=$WORK/osprey
WORKLOAD=$WORK/osprey-workload
MISSING=/nonexistent/osprey-bench-syscall-cost

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/agent.toml" <<EOF
state_dir = "$WORK/agent-state"
control_socket = "$WORK/agent.sock"
[metrics]
listen = "127.0.0.1:$port"
[log]
path = "$WORK/agent.jsonl"
EOF
mkdir -p "$WORK/secure-state"

have() { case "$1" in syscount*) [ -x "$SYSCOUNT" ] ;; *) true ;; esac; }

# start CONFIG: its tracer in the background, attached; sets TRACER_PID
start() {
    local log="$WORK/$1.log" ready="osprey: tracing" OSPREY=$OSPREY
    if [[ "$1" == *@before ]]; then
        OSPREY=$WORK/osprey-before
        set -- "${1%@before}"
    fi
    case "$1" in
        bare) TRACER_PID=; return ;;
        agent) "$OSPREY" agent --config "$WORK/agent.toml" >/dev/null 2>"$log" &
            ready="osprey agent: {" ;;
        secure) "$OSPREY" secure --state-dir "$WORK/secure-state" -o json >/dev/null 2>"$log" & ;;
        syscalls) "$OSPREY" syscalls >/dev/null 2>"$log" & ;;
        files) "$OSPREY" files --output json >/dev/null 2>"$log" & ;;
        syscount) "$SYSCOUNT" >/dev/null 2>"$log" & ready= ;;
        syscount-L) "$SYSCOUNT" -L >/dev/null 2>"$log" & ready= ;;
    esac
    TRACER_PID=$!
    if [ -z "$ready" ]; then
        sleep 2 # syscount prints nothing when attached
    else
        until grep -q "$ready" "$log" 2>/dev/null; do
            kill -0 "$TRACER_PID" 2>/dev/null || { cat "$log" >&2; exit 1; }
            sleep 0.05
        done
    fi
}

stop() {
    if [ -n "$TRACER_PID" ]; then
        kill -INT "$TRACER_PID" 2>/dev/null || true
        wait "$TRACER_PID" 2>/dev/null || true
        TRACER_PID=
    fi
}

getppid_loop() { "$WORKLOAD" bench-getppid "$COUNT"; }
openat_loop() { "$WORKLOAD" bench-open $((COUNT / 4)) "$MISSING"; }

stats() { # stdin: numbers; prints "median min max"
    sort -g | awk '{a[NR]=$1} END { if (NR == 0) { print "nan nan nan"; exit }
        m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
        printf "%.0f %.0f %.0f\n", m, a[1], a[NR] }'
}

declare -A BARE ADDED
echo "round config loop ns_per_call added_ns"
for ((r = 1; r <= REPS; r++)); do
    for config in $CONFIGS; do
        have "$config" || continue
        start "$config"
        for loop in getppid openat; do
            ns=$(${loop}_loop)
            if [ "$config" = bare ]; then
                BARE[$r/$loop]=$ns
            fi
            added=$(awk -v a="$ns" -v b="${BARE[$r/$loop]:-$ns}" 'BEGIN { printf "%.1f", a - b }')
            ADDED[$config/$loop]+="$added "
            echo "$r $config $loop $ns $added"
        done
        stop
    done
done

echo
echo "added ns per call, over $REPS interleaved rounds of $COUNT getppid and $((COUNT / 4)) openat"
printf '%-12s %-8s %8s %8s %8s\n' config loop median min max
for config in $CONFIGS; do
    [ "$config" = bare ] && continue
    have "$config" || { echo "$config: not installed, skipped"; continue; }
    for loop in getppid openat; do
        read -r m lo hi < <(tr ' ' '\n' <<<"${ADDED[$config/$loop]}" | grep . | stats)
        printf '%-12s %-8s %8s %8s %8s\n' "$config" "$loop" "$m" "$lo" "$hi"
    done
done
if have syscount-L && [[ " $CONFIGS " == *" syscalls "* && " $CONFIGS " == *" syscount-L "* ]]; then
    for loop in getppid openat; do
        a=$(tr ' ' '\n' <<<"${ADDED[syscalls/$loop]}" | grep . | stats | cut -d' ' -f1)
        b=$(tr ' ' '\n' <<<"${ADDED[syscount-L/$loop]}" | grep . | stats | cut -d' ' -f1)
        awk -v a="$a" -v b="$b" -v l="$loop" \
            'BEGIN { if (b > 0) printf "osprey syscalls / syscount -L, %s: %.2f\n", l, a / b }'
    done
fi

# Two openers at full speed under osprey files --output json.
echo
echo "flood: 2 openers at full speed for ${FLOOD_SECS}s under osprey files --output json"
"$OSPREY" files --output json >/dev/null 2>"$WORK/flood.log" &
TRACER_PID=$!
until grep -q "osprey: tracing" "$WORK/flood.log"; do sleep 0.05; done
per_opener=$((FLOOD_SECS * 400000))
started=$(date +%s.%N)
openers=()
for i in 1 2; do "$WORKLOAD" bench-open "$per_opener" "$MISSING" >"$WORK/opener$i" & openers+=($!); done
wait "${openers[@]}"
ended=$(date +%s.%N)
# Stopped once the openers are done (however long a busy machine made them take); it drains
# its ring and prints its counters on the way out.
kill -INT "$TRACER_PID"
wait "$TRACER_PID" || true
TRACER_PID=
read -r emitted dropped throttled < <(python3 bench/summary-counts.py "$WORK/flood.log" files file_open)
[ "$emitted" != "?" ] || { echo "flood: no exit summary from osprey files"; exit 1; }
awk -v s="$started" -v e="$ended" -v n=$((2 * per_opener)) -v em="$emitted" -v d="$dropped" -v t="$throttled" \
    'BEGIN { secs = e - s; printf "opens %d in %.1fs (%.0f/s); emitted %d, dropped %d, throttled %d; delivered %.0f events/s\n", n, secs, n / secs, em, d, t, em / secs }'
