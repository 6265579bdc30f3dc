#!/usr/bin/env bash
# Cost of container enrichment: osprey's user-space CPU per event while containers start and
# stop at a high rate, against a baseline run with the same event flow and no container starts.
#
# A benchmark, not a test: it prints numbers and ratios and exits 0.
#
# What it does (each stage runs DURATION seconds; the stages alternate over ROUNDS rounds):
#   load      WORKERS `osprey-workload bench-open` loops at full speed (openat of a missing
#             path: host processes, the event flow)
#   tracer    `osprey files --output json --path-prefix /osprey-bench-churn`: every open is
#             decoded and given its process and container context (the cost measured), only
#             the churn processes' opens are written
#   churn     (churn stage only) STARTS_PER_MIN container starts per minute: a cgroup named as
#             docker names a container (`docker/<64 hex>` in the v2 hierarchy), one process
#             moved into it that opens /osprey-bench-churn/<n> OPENS times, then the cgroup is
#             removed (the container stops). Each new cgroup is a first sight for osprey: its
#             path is read and identified, and the id asked of the Docker Engine API, which a
#             stub on a Unix socket answers (DOCKER_HOST points there), so every container gets
#             its name in the background.
#   steady    (steady stage only) the same open loops, each in a docker-named container of its
#             own: every event is a container's, its metadata cached after the first
# Printed per stage (medians over rounds): events/s decoded by osprey, osprey CPU ns per
# decoded event (utime+stime from /proc over the stage / pipeline.decoded; the lookup thread
# included), container starts achieved; the ratios to the baseline; osprey CPU per container
# start beyond the baseline's per-event cost; from the churn stages' output, how many starts
# osprey saw and how many of their events carried the name.
#
# Environment (all optional):
#   ROUNDS=3 DURATION=10 WORKERS=2 STARTS_PER_MIN=1000 OPENS=20 LIFETIME=1 (seconds a
#   container lives)
#   OSPREY_BIN, WORKLOAD_BIN   (default: target/release of this checkout)
#
# Requires root, python3. Build first: cargo build --release -p osprey-cli -p osprey-workload
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-2}
STARTS_PER_MIN=${STARTS_PER_MIN:-1000}
OPENS=${OPENS:-20}
LIFETIME=${LIFETIME:-1}
OSPREY_BIN=${OSPREY_BIN:-$REPO_ROOT/target/release/osprey}
WL=${WORKLOAD_BIN:-$REPO_ROOT/target/release/osprey-workload}

die() { echo "container-enrich: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

[[ $(id -u) == 0 ]] || die "needs root"
[[ -x $OSPREY_BIN && -x $WL ]] || die "build first: cargo build --release -p osprey-cli -p osprey-workload"
CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[[ -n $CG2 ]] || die "no cgroup v2 hierarchy mounted"

WORKDIR=$(mktemp -d /tmp/osprey-container-enrich.XXXXXX)
CGROOT=$CG2/docker
MADE_CGROOT=0
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # Only the cgroups this script made (their names carry its marker).
    for d in "$CGROOT"/0000eeee*; do [[ -d $d ]] && rmdir "$d" 2>/dev/null || true; done
    [[ $MADE_CGROOT == 1 ]] && rmdir "$CGROOT" 2>/dev/null || true
    rm -rf "$WORKDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A Docker Engine API stub: every container is "bench-<first 12 digits>" from image bench:1.
cat >"$WORKDIR/stub.py" <<'EOF'
import http.server, json, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        cid = self.path.split("/")[2] if self.path.startswith("/containers/") else ""
        body = json.dumps({"Id": cid, "Name": "/bench-" + cid[:12], "Image": "sha256:" + "0" * 64,
                           "Config": {"Image": "bench:1", "Labels": {}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
    def address_string(self):
        return "stub"
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
S(sys.argv[1], H).serve_forever()
EOF
python3 "$WORKDIR/stub.py" "$WORKDIR/docker.sock" &
PIDS+=($!)
for _ in $(seq 50); do [[ -S $WORKDIR/docker.sock ]] && break; sleep 0.1; done
[[ -S $WORKDIR/docker.sock ]] || die "the Docker API stub did not start"
MADE_CGROOT=0
[[ -d $CGROOT ]] || { mkdir "$CGROOT"; MADE_CGROOT=1; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# One container start, in the background: a cgroup, a shell moved into it that opens the
# churn path OPENS times and lives LIFETIME seconds, then the cgroup's removal (the stop).
start_container() {
    local n=$1 dir
    dir=$CGROOT/$(printf '0000eeee%056x' "$n")
    (
        mkdir "$dir"
        sh -c "echo \$\$ > '$dir/cgroup.procs' && '$WL' open $OPENS /osprey-bench-churn/$n && sleep $LIFETIME"
        rmdir "$dir"
    ) >/dev/null 2>&1 &
}

# Starts at STARTS_PER_MIN until the file $1 appears; prints how many were made.
churn() {
    local stop=$1 n=$2 made=0 gap_ns next now
    gap_ns=$((60000000000 / STARTS_PER_MIN))
    next=$(date +%s%N)
    while [[ ! -e $stop ]]; do
        start_container $((n + made))
        made=$((made + 1))
        next=$((next + gap_ns))
        now=$(date +%s%N)
        ((next > now)) && sleep "$(awk -v d=$((next - now)) 'BEGIN { printf "%.4f", d / 1e9 }')"
    done
    echo "$made"
}

# stage NAME ROUND: prints "events_per_s ns_per_event starts decoded cpu_ns".
stage() {
    local name=$1 round=$2 out=$WORKDIR/$1.$2 pid t0 t1 c0 c1 w dir starts=0 wpids=()
    DOCKER_HOST=unix://$WORKDIR/docker.sock "$OSPREY_BIN" files --output json \
        --path-prefix /osprey-bench-churn >"$out.jsonl" 2>"$out.err" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 300); do grep -q "osprey: tracing" "$out.err" && break; sleep 0.1; done
    grep -q "osprey: tracing" "$out.err" || die "osprey did not start: $(cat "$out.err")"
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s%N)
    for w in $(seq "$WORKERS"); do
        if [[ $name == steady ]]; then
            # Each loop in a container of its own, named before the stage's clock starts.
            dir=$CGROOT/$(printf '0000eeef%048x%08x' "$round" "$w")
            mkdir -p "$dir"
            sh -c "echo \$\$ > '$dir/cgroup.procs' && exec timeout $DURATION '$WL' bench-open 2000000000 /osprey-bench-miss" >/dev/null 2>&1 &
        else
            timeout "$DURATION" "$WL" bench-open 2000000000 /osprey-bench-miss >/dev/null 2>&1 &
        fi
        wpids+=($!)
    done
    if [[ $name == churn ]]; then
        (sleep "$DURATION"; touch "$WORKDIR/stop.$round") &
        starts=$(churn "$WORKDIR/stop.$round" $((round * 1000000)))
    fi
    for w in "${wpids[@]}"; do wait "$w" 2>/dev/null || true; done
    t1=$(date +%s%N)
    for dir in "$CGROOT"/0000eeef*; do [[ -d $dir ]] && rmdir "$dir" 2>/dev/null || true; done
    [[ $name == churn ]] && sleep $((LIFETIME + 1))  # the last containers stop
    c1=$(cpu_ticks "$pid")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$out.err" "$t0" "$t1" "$c0" "$c1" "$(getconf CLK_TCK)" "$starts" <<'EOF'
import json, sys
err, t0, t1, c0, c1, hz, starts = sys.argv[1:]
summary = next(json.loads(l) for l in open(err) if l.startswith("{") and '"summary"' in l)
decoded = summary["pipeline"]["decoded"]
secs = (int(t1) - int(t0)) / 1e9
cpu_ns = (int(c1) - int(c0)) / int(hz) * 1e9
print(f"{decoded / secs:.0f} {cpu_ns / max(decoded, 1):.1f} {starts} {decoded} {cpu_ns:.0f}")
EOF
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

STAGES=(baseline steady churn)
declare -A RATE NS STARTS EXTRA
for round in $(seq "$ROUNDS"); do
    for name in "${STAGES[@]}"; do
        read -r rate ns starts decoded cpu < <(stage "$name" "$round")
        log "round $round $name: $rate events/s, $ns ns/event (osprey CPU), $starts container starts"
        RATE[$name]+="$rate "
        NS[$name]+="$ns "
        STARTS[$name]+="$starts "
        [[ $name == baseline ]] && base_ns=$ns
        # osprey CPU beyond the baseline's per-event cost, per container start.
        [[ $name == churn ]] && EXTRA[churn]+="$(awk -v c="$cpu" -v d="$decoded" -v b="$base_ns" -v s="$starts" \
            'BEGIN { printf "%.0f", (c - d * b) / (s > 0 ? s : 1) / 1000 }') "
    done
done

# What osprey made of the churn: containers seen, their events, how many named; events whose
# cgroup was gone before osprey looked carry no container.
read -r seen named total unresolved < <(cat "$WORKDIR"/churn.*.jsonl | python3 -c '
import json, sys
ids, named, total, unresolved = set(), 0, 0, 0
for line in sys.stdin:
    c = json.loads(line).get("process", {}).get("container")
    if c is None:
        unresolved += 1
        continue
    if c["id"] == "host":
        continue
    ids.add(c["id"]); total += 1; named += "name" in c
print(len(ids), named, total, unresolved)')

printf '\n%-10s %14s %16s %18s\n' stage events/s "ns/event (CPU)" "starts/min" >&2
for name in "${STAGES[@]}"; do
    r=$(tr ' ' '\n' <<<"${RATE[$name]}" | grep . | median)
    n=$(tr ' ' '\n' <<<"${NS[$name]}" | grep . | median)
    s=$(tr ' ' '\n' <<<"${STARTS[$name]}" | grep . | median)
    printf '%-10s %14s %16s %18s\n' "$name" "$r" "$n" "$(awk -v s="$s" -v d="$DURATION" 'BEGIN { printf "%.0f", s * 60 / d }')"
    eval "MED_RATE_$name=$r MED_NS_$name=$n"
done
extra=$(tr ' ' '\n' <<<"${EXTRA[churn]}" | grep . | median)
awk -v s="$MED_NS_steady" -v c="$MED_NS_churn" -v b="$MED_NS_baseline" \
    'BEGIN { printf "ratios to baseline, osprey CPU per event: steady (every event from a known container) %.3f, churn %.3f\n", s / b, c / b }'
echo "osprey CPU per container start beyond the baseline's per-event cost (median): $extra us"
echo "churn containers seen by osprey: $seen; their events: $total, with the runtime's name: $named; events of cgroups already gone: $unresolved"
