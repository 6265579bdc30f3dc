#!/usr/bin/env bash
# Per-openat cost of tracing file opens: osprey vs libbpf-tools opensnoop vs bpftrace.
#
# A benchmark, not a test: it prints numbers and a verdict against the targets, and
# exits 0 whether or not the targets are met (set STRICT=1 to exit 1 on a miss).
#
# What it measures
#   1. Overhead: a tight loop of openat(AT_FDCWD, <missing path>, O_RDONLY) run by
#      `osprey-workload bench-open`, which prints the mean ns per call. Configurations:
#        bare       nothing attached
#        osprey     osprey files --output json          (unfiltered, stdout -> /dev/null)
#        opensnoop  /usr/sbin/opensnoop                 (unfiltered, stdout -> /dev/null)
#        bpftrace   enter/exit openat one-liner         (unfiltered, stdout -> /dev/null)
#      Every tracer sees every open on the machine and formats it, so the comparison is
#      like for like. A missing path keeps the syscall itself cheap, which makes the
#      tracing cost the largest part of each call (the worst case for a tracer).
#      Configurations are interleaved over ROUNDS rounds, and each traced run is paired
#      with a bare run immediately before it; "added" is traced minus its own paired
#      bare run, so machine noise (other builds, frequency changes) hits both sides of
#      each difference alike. Medians over rounds are reported.
#   2. Sustained rate: osprey files --comm <unique workload comm> (default ring), reading
#      osprey's own emitted/dropped counters at exit:
#      a. paced: for each rate in PACE_RATES (ascending), opens are issued at that rate
#         for PACE_SECS seconds (batches of rate/20 opens every 50 ms, each batch one
#         workload process at full speed); stops at the first rate that drops. The
#         highest paced rate with 0 drops is "the highest sustained rate with 0 drops".
#      b. full speed: SUSTAIN_WORKERS concurrent workloads each do SUSTAIN_COUNT opens
#         as fast as they can (an upper bound: at full speed a long run may drop).
#
# Targets: osprey added <= 450 ns/openat, and osprey_added / opensnoop_added <= 0.8.
#
# Environment (all optional):
#   ROUNDS=5  COUNT=1000000      rounds, opens per measurement
#   SUSTAIN_COUNT=2000000        opens per workload process in the sustained-rate test
#   SUSTAIN_WORKERS="1 N"        concurrent workload processes per stage (N = nproc)
#   PACE_RATES="100000 200000 ... 2000000"  opens/s for the paced stages (ascending)
#   PACE_SECS=3                  seconds per paced stage
#   SKIP_SUSTAIN=1               skip the sustained-rate test
#   WORKLOAD_CPU=k               pin the workload to CPU k (default: not pinned)
#   OSPREY_BIN, WORKLOAD_BIN     binaries (default: target/release of this checkout)
#   OPENSNOOP_BIN, BPFTRACE_BIN  comparison tools (default: found on PATH / /usr/sbin)
#   STRICT=1                     exit 1 if a target is missed
#   BEFORE=path                  another osprey binary (e.g. a copy of the previous release
#                                build): the full-speed stages then run it too, alternating,
#                                and print its row labelled "before" (a comparison on a
#                                shared machine; reader_ns/ev is the CPU the reader spends
#                                per event, the least load-sensitive column)
#
# Requires root (loads BPF programs). Build first: cargo build --release --workspace
set -euo pipefail

# ---------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
COUNT=${COUNT:-1000000}
SUSTAIN_COUNT=${SUSTAIN_COUNT:-2000000}
SUSTAIN_WORKERS=${SUSTAIN_WORKERS:-"1 $(nproc)"}
SKIP_SUSTAIN=${SKIP_SUSTAIN:-0}
PACE_RATES=${PACE_RATES:-"100000 200000 300000 400000 500000 600000 700000 800000 900000 1000000 1250000 1500000 2000000"}
PACE_SECS=${PACE_SECS:-3}
WORKLOAD_CPU=${WORKLOAD_CPU:-}
STRICT=${STRICT:-0}
OSPREY_BIN=${OSPREY_BIN:-$REPO_ROOT/target/release/osprey}
WORKLOAD_BIN=${WORKLOAD_BIN:-$REPO_ROOT/target/release/osprey-workload}
OPENSNOOP_BIN=${OPENSNOOP_BIN:-$(command -v opensnoop || echo /usr/sbin/opensnoop)}
BPFTRACE_BIN=${BPFTRACE_BIN:-$(command -v bpftrace || echo /usr/bin/bpftrace)}

TARGET_ADDED_NS=450
TARGET_RATIO=0.8

# The bpftrace equivalent of opensnoop: remember the path pointer at entry, print
# pid/comm/ret/path at exit (reading the string at exit, as opensnoop.bt does).
# END clears the map so nothing is dumped at exit.
BPFTRACE_PROG='
tracepoint:syscalls:sys_enter_openat { @path[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@path[tid]/ {
  printf("%d %s %d %s\n", pid, comm, args->ret, str(@path[tid]));
  delete(@path[tid]);
}
END { clear(@path); }'

# ---------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------
die() { echo "files-openat: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

WORKDIR=""
TRACER_PIDS=()   # every background tracer we started; killed by PID on exit

cleanup() {
    local pid
    for pid in "${TRACER_PIDS[@]}"; do
        # Only our own children: kill by PID, never by name (others may run these tools).
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 0.5
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    [[ -n $WORKDIR && -d $WORKDIR ]] && rm -rf "$WORKDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Forget a PID once it has been reaped, so cleanup never signals a recycled PID.
forget_pid() {
    local pid=$1 keep=() p
    for p in "${TRACER_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    TRACER_PIDS=("${keep[@]}")
}

# Count the fds through which a process attaches BPF programs: bpf_link fds (osprey,
# libbpf perf_event links) and perf_event fds (bpftrace's tracepoints, perf buffers).
attach_fd_count() {
    local pid=$1 n=0 f t
    for f in /proc/"$pid"/fd/*; do
        t=$(readlink "$f" 2>/dev/null) || continue
        [[ $t == anon_inode:bpf_link || $t == "anon_inode:[perf_event]" ]] && n=$((n + 1))
    done
    echo "$n"
}

# Wait until the tracer PID has attached: it holds attach fds and their number has not
# changed for 3 polls (300 ms), then settle a little more. This looks at the tracer's
# own fds, so another osprey/opensnoop run by someone else cannot fool it (bpftool
# prog show here does not report owning PIDs). Startup takes ~0.3-3 s per tool.
wait_attached() {
    local pid=$1 name=$2 errfile=$3 deadline=$((SECONDS + 30)) n last=-1 stable=0
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited before attaching; its stderr:"
            sed 's/^/    /' "$errfile" >&2 || true
            return 1
        fi
        n=$(attach_fd_count "$pid")
        if ((n > 0 && n == last)); then
            stable=$((stable + 1))
            if ((stable >= 3)); then sleep 0.3; return 0; fi
        else
            stable=0
        fi
        last=$n
        sleep 0.1
    done
    log "$name did not attach within 30 s"
    return 1
}

# Start a tracer in the background with stdout to /dev/null and stderr to ERRFILE.
# Sets STARTED_PID. Launching the command directly (no subshell, no pipeline) makes $!
# the tracer itself, so we can signal exactly it.
start_tracer() {
    local name=$1 errfile=$2; shift 2
    "$@" >/dev/null 2>"$errfile" &
    STARTED_PID=$!
    TRACER_PIDS+=("$STARTED_PID")
    wait_attached "$STARTED_PID" "$name" "$errfile"
}

# Stop a tracer with SIGTERM and wait for it (osprey prints its stats at exit).
# SIGTERM rather than SIGINT: background jobs of a non-interactive shell ignore SIGINT.
# libbpf-tools opensnoop only handles SIGINT, so SIGTERM just ends it, which is fine.
stop_tracer() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && { log "pid $pid ignored SIGTERM for 15 s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Run the open loop once; print mean ns per openat.
run_workload() {
    local count=$1 out
    if [[ -n $WORKLOAD_CPU ]]; then
        out=$(taskset -c "$WORKLOAD_CPU" "$WL" bench-open "$count" "$MISSING_PATH")
    else
        out=$("$WL" bench-open "$count" "$MISSING_PATH")
    fi
    [[ $out =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "unexpected workload output: $out"
    echo "$out"
}

# osprey's exit summary (JSON under --output json, else the table): "emitted dropped throttled".
osprey_file_open_counts() { python3 "$REPO_ROOT/bench/summary-counts.py" "$1" files file_open; }

# Sum of "Lost N events" lines (opensnoop and bpftrace report perf-buffer losses so).
lost_events() {
    { grep -oE 'Lost [0-9]+ events' "$1" 2>/dev/null || true; } | awk '{ s += $2 } END { print s + 0 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
    if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", a - b }'; }

# ---------------------------------------------------------------------------------
# One traced measurement per configuration
# ---------------------------------------------------------------------------------
# Each sets R_NS (mean ns per openat) and R_DROPS (what the tracer lost). They set
# globals instead of printing so that they run in the main shell: a tracer started in
# a $(...) subshell would be invisible to the EXIT trap that kills leftovers.
measure_bare() { R_NS=$(run_workload "$COUNT"); R_DROPS=-; }

measure_osprey() {
    local err=$WORKDIR/osprey.err pid e d t
    start_tracer osprey "$err" "$OSPREY" files --output json || die "osprey failed to start"
    pid=$STARTED_PID
    R_NS=$(run_workload "$COUNT")
    stop_tracer "$pid"
    read -r e d t < <(osprey_file_open_counts "$err")
    R_DROPS="emitted=$e,dropped=$d,throttled=$t"
}

measure_opensnoop() {
    local err=$WORKDIR/opensnoop.err pid
    start_tracer opensnoop "$err" "$OPENSNOOP" || die "opensnoop failed to start"
    pid=$STARTED_PID
    R_NS=$(run_workload "$COUNT")
    stop_tracer "$pid"
    R_DROPS="lost=$(lost_events "$err")"
}

measure_bpftrace() {
    local err=$WORKDIR/bpftrace.err pid
    start_tracer bpftrace "$err" "$BPFTRACE" -e "$BPFTRACE_PROG" || die "bpftrace failed to start"
    pid=$STARTED_PID
    R_NS=$(run_workload "$COUNT")
    stop_tracer "$pid"
    R_DROPS="lost=$(lost_events "$err")"
}

# ---------------------------------------------------------------------------------
# Sustained rate: osprey filtered to the workload, default ring
# ---------------------------------------------------------------------------------
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }   # no fork, bash >= 5

# Paced: the workload has no rate option, so issue batches of RATE/20 opens every
# 50 ms (one short workload process per batch, ~1 ms to start). Deadlines are absolute,
# so a late batch is caught up by the next sleep rather than lowering the rate; if
# the machine cannot keep up at all, the achieved rate printed says so.
paced_stage() {
    local rate=$1 err=$WORKDIR/paced.err slice_us=50000 batch slices k start now due
    local total=0 e d t achieved
    batch=$((rate / 20))
    slices=$((PACE_SECS * 20))
    start_tracer osprey "$err" "$OSPREY" files --output json --comm "$WL_COMM" \
        || die "osprey failed to start"
    local opid=$STARTED_PID
    start=$(now_us)
    for ((k = 0; k < slices; k++)); do
        run_workload "$batch" >/dev/null
        total=$((total + batch))
        due=$((start + (k + 1) * slice_us))
        now=$(now_us)
        if ((now < due)); then
            sleep "$(awk -v us="$((due - now))" 'BEGIN { printf "%.6f", us / 1e6 }')"
        fi
    done
    now=$(now_us)
    sleep 1   # let the reader drain the ring before asking it to stop
    stop_tracer "$opid"
    achieved=$(awk -v n="$total" -v us="$((now - start))" 'BEGIN { printf "%.0f", n / (us / 1e6) }')
    read -r e d t < <(osprey_file_open_counts "$err")
    printf '  %-10s %-12s %-12s %-12s %-10s %-10s\n' "$rate" "$achieved" "$total" "$e" "$d" "$t"
    PACED_OK=0
    # Zero drops/throttles, and every open was emitted (emitted also counts each
    # workload process's own start-up opens, so >= total).
    if [[ $d == 0 && $t == 0 && $e =~ ^[0-9]+$ ]] && ((e >= total)); then PACED_OK=1; fi
    PACED_ACHIEVED=$achieved
}

# Full speed: WORKERS concurrent workloads, each SUSTAIN_COUNT opens.
sustain_stage() {
    local workers=$1 err=$WORKDIR/sustain.err i t0 t1 pids=() total e d t rate
    start_tracer osprey "$err" "$OSPREY" files --output json --comm "$WL_COMM" \
        || die "osprey failed to start"
    local opid=$STARTED_PID
    t0=$(date +%s%N)
    for ((i = 0; i < workers; i++)); do
        "$WL" bench-open "$SUSTAIN_COUNT" "$MISSING_PATH" >"$WORKDIR/sustain.$i" &
        pids+=($!)
        TRACER_PIDS+=($!)   # so an interrupted run does not leave workers behind
    done
    for i in "${pids[@]}"; do wait "$i"; forget_pid "$i"; done
    t1=$(date +%s%N)
    # Give the reader time to drain what is still in the ring before asking it to stop.
    sleep 1
    # The reader's CPU time (start-up included), per event emitted: what user space spends
    # on each event, less sensitive to a shared machine than the rates.
    local ticks
    ticks=$(awk '{ print $14 + $15 }' "/proc/$opid/stat")
    stop_tracer "$opid"
    total=$((workers * SUSTAIN_COUNT))
    rate=$(awk -v n="$total" -v ns="$((t1 - t0))" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
    read -r e d t < <(osprey_file_open_counts "$err")
    local per_event
    per_event=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v e="$e" \
        'BEGIN { if (e + 0 > 0) printf "%.0f", t / hz * 1e9 / e; else print "?" }')
    printf '  %-8s %-12s %-14s %-12s %-10s %-10s %-10s %s\n' \
        "$workers" "$total" "$rate" "$e" "$d" "$t" "$per_event" "${STAGE_LABEL:-}"
}

# ---------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || { echo "files-openat: must run as root (loads BPF programs)" >&2; exit 77; }
[[ -x $OSPREY_BIN ]] || die "no $OSPREY_BIN; run: cargo build --release --workspace"
[[ -x $WORKLOAD_BIN ]] || die "no $WORKLOAD_BIN; run: cargo build --release --workspace"
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $COUNT =~ ^[1-9][0-9]*$ ]] || die "ROUNDS and COUNT must be positive integers"

WORKDIR=$(mktemp -d /tmp/osprey-bench.XXXXXX)
# Private copies: someone may rebuild target/release while this runs. The workload
# copy gets a name unique to this run, because its file name becomes its comm and the
# sustained-rate test filters on comm: tests run by others also start processes named
# "osprey-workload", and their opens would be counted (and could cause drops).
WL_COMM="obench-$$"   # at most 15 bytes, like /proc/PID/comm
cp "$OSPREY_BIN" "$WORKDIR/osprey"
cp "$WORKLOAD_BIN" "$WORKDIR/$WL_COMM"
OSPREY=$WORKDIR/osprey
BEFORE_COPY=""
if [[ -n ${BEFORE:-} ]]; then
    [[ -x $BEFORE ]] || die "BEFORE=$BEFORE is not an executable"
    BEFORE_COPY=$WORKDIR/osprey-before
    cp "$BEFORE" "$BEFORE_COPY"
fi
WL=$WORKDIR/$WL_COMM
# The parent directory does not exist, so every openat fails with ENOENT quickly.
MISSING_PATH=$WORKDIR/missing-dir/missing-file

# Tracepoint-based tools (opensnoop via libbpf, bpftrace) look up tracepoint ids in tracefs.
if ! mountpoint -q /sys/kernel/tracing; then
    log "mounting tracefs on /sys/kernel/tracing (left mounted)"
    mount -t tracefs tracefs /sys/kernel/tracing
fi

CONFIGS=(osprey)
OPENSNOOP=""
BPFTRACE=""
if [[ -x $OPENSNOOP_BIN ]]; then
    OPENSNOOP=$OPENSNOOP_BIN; CONFIGS+=(opensnoop)
else
    log "SKIP opensnoop: not installed (apt-get install libbpf-tools); no osprey/opensnoop ratio"
fi
if [[ -x $BPFTRACE_BIN ]]; then
    BPFTRACE=$BPFTRACE_BIN; CONFIGS+=(bpftrace)
else
    log "SKIP bpftrace: not installed (apt-get install bpftrace)"
fi

echo "files-openat: $(uname -r), $(nproc) CPUs, ROUNDS=$ROUNDS COUNT=$COUNT, path $MISSING_PATH"
echo "configurations: bare ${CONFIGS[*]}${WORKLOAD_CPU:+ (workload pinned to CPU $WORKLOAD_CPU)}"
# Other BPF programs on sys_enter/sys_exit or openat tracepoints add cost to every run;
# the pairing cancels most of it, but say so, since it makes the numbers noisier.
others=$(bpftool prog show 2>/dev/null | grep -cE ' (tracing|raw_tracepoint|tracepoint|kprobe) ' || true)
((others > 0)) && echo "note: $others tracing BPF program(s) already loaded by others; results may be noisier"

# Warm-up (not counted): page in the binaries, let the CPU frequency settle.
run_workload "$COUNT" >/dev/null

declare -A NS ADDED DROPS
BARE_ALL=()
echo
printf '%-6s %-10s %12s %12s %10s  %s\n' round config bare_ns traced_ns added_ns "tracer drops"
for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order of the traced configurations each round so that no tool is
    # always measured first/last (e.g. right after a previous tracer's teardown).
    n=${#CONFIGS[@]}
    for ((k = 0; k < n; k++)); do
        cfg=${CONFIGS[$(((k + r - 1) % n))]}
        measure_bare
        bare=$R_NS
        "measure_$cfg"
        traced=$R_NS drops=$R_DROPS
        added=$(fsub "$traced" "$bare")
        BARE_ALL+=("$bare")
        NS[$cfg]+="$traced "
        ADDED[$cfg]+="$added "
        DROPS[$cfg]+="$drops "
        printf '%-6s %-10s %12s %12s %10s  %s\n' "$r" "$cfg" "$bare" "$traced" "$added" "$drops"
    done
done

echo
echo "== Medians over $ROUNDS rounds (ns per openat of a missing path) =="
printf '%-10s %14s %16s\n' config median_ns median_added
printf '%-10s %14s %16s\n' bare "$(printf '%s\n' "${BARE_ALL[@]}" | median)" "-"
declare -A MED_ADDED
for cfg in "${CONFIGS[@]}"; do
    MED_ADDED[$cfg]=$(tr ' ' '\n' <<<"${ADDED[$cfg]}" | grep . | median)
    printf '%-10s %14s %16s\n' "$cfg" "$(tr ' ' '\n' <<<"${NS[$cfg]}" | grep . | median)" "${MED_ADDED[$cfg]}"
done

echo
MISSED=0
oa=${MED_ADDED[osprey]}
if awk -v a="$oa" -v t="$TARGET_ADDED_NS" 'BEGIN { exit !(a <= t) }'; then v=PASS; else v=MISS; MISSED=1; fi
echo "osprey added:                  $oa ns (target <= $TARGET_ADDED_NS ns): $v"
if [[ -n $OPENSNOOP ]]; then
    sa=${MED_ADDED[opensnoop]}
    ratio=$(awk -v a="$oa" -v b="$sa" 'BEGIN { if (b <= 0) print "nan"; else printf "%.2f", a / b }')
    if awk -v x="$ratio" -v t="$TARGET_RATIO" 'BEGIN { exit !(x != "nan" && x + 0 <= t) }'; then v=PASS; else v=MISS; MISSED=1; fi
    echo "osprey_added / opensnoop_added: $ratio (target <= $TARGET_RATIO): $v"
else
    echo "osprey_added / opensnoop_added: skipped (opensnoop not installed)"
fi
if [[ -n $BPFTRACE ]]; then
    ba=${MED_ADDED[bpftrace]}
    echo "osprey_added / bpftrace_added:  $(awk -v a="$oa" -v b="$ba" 'BEGIN { if (b <= 0) print "nan"; else printf "%.2f", a / b }') (informational)"
fi
echo "(a tracer that reports drops/lost events did less work for those events)"

if [[ $SKIP_SUSTAIN != 1 ]]; then
    echo
    echo "== Sustained rate, paced: osprey files --comm $WL_COMM (default ring), ${PACE_SECS}s per rate =="
    printf '  %-10s %-12s %-12s %-12s %-10s %-10s\n' target/s achieved/s opens emitted dropped throttled
    best=""
    for rate in $(tr ' ' '\n' <<<"$PACE_RATES" | grep . | sort -nu); do
        paced_stage "$rate"
        if ((PACED_OK)); then
            best=$PACED_ACHIEVED
        else
            echo "  (stopping: drops at this rate; higher rates would drop too)"
            break
        fi
    done
    if [[ -n $best ]]; then
        echo "highest sustained open rate with 0 drops: $best opens/s (paced)"
    else
        echo "highest sustained open rate with 0 drops: below the lowest paced rate"
    fi

    echo
    echo "== Full speed: osprey files --comm $WL_COMM (default ring), $SUSTAIN_COUNT opens per worker =="
    printf '  %-8s %-12s %-14s %-12s %-10s %-10s %-10s\n' workers opens opens/s emitted dropped throttled reader_ns/ev
    # Deduplicate worker counts (e.g. "1 1" on a single-CPU machine).
    for w in $(tr ' ' '\n' <<<"$SUSTAIN_WORKERS" | grep . | sort -nu); do
        if [[ -n $BEFORE_COPY ]]; then
            # Assignments for the call only (not a subshell: the EXIT trap must see the
            # tracers it starts).
            OSPREY=$BEFORE_COPY STAGE_LABEL=before sustain_stage "$w"
            STAGE_LABEL=after sustain_stage "$w"
        else
            sustain_stage "$w"
        fi
    done
fi

if [[ $STRICT == 1 && $MISSED == 1 ]]; then exit 1; fi
exit 0
