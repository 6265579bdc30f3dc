#!/usr/bin/env bash
# Memory of `osprey agent` with its default modules: peak RSS (VmHWM, start-up included),
# steady RSS a few seconds after start, and the kernel memory its BPF maps are charged
# (the memlock of every bpf-map fd it holds, from /proc/PID/fdinfo). Also start-to-attached.
# Prints each round, then medians, and the largest maps of the last round.
# Targets (issue 13): peak RSS <= 30 MiB, map memory <= 24 MiB.
#
# Environment (all optional):
#   ROUNDS=3           agent runs
#   SETTLE=4           seconds after "started" before reading steady RSS and maps
#   OSPREY_BIN         the binary (default: target/release/osprey of this checkout, built)
#   CONFIG             an agent config file (default: none, the embedded defaults)
#   BEFORE             another osprey binary (e.g. a copy of the previous release build):
#                      each round then runs both, in alternating order, and medians are
#                      printed for each (a before/after comparison on a shared machine)
# Root required (loads BPF programs).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-4}
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${OSPREY_BIN:-} ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin osprey
    OSPREY_BIN=$repo/target/release/osprey
fi
[[ $(id -u) -eq 0 ]] || { echo "agent-memory: must run as root" >&2; exit 77; }
work=$(mktemp -d /tmp/osprey-agent-memory.XXXXXX)
cp "$OSPREY_BIN" "$work/osprey"   # someone may rebuild target/release meanwhile
labels=(osprey)
if [[ -n ${BEFORE:-} ]]; then
    cp "$BEFORE" "$work/before"
    labels=(before osprey)
fi
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
config=${CONFIG:-$work/default.toml}
[[ -n ${CONFIG:-} ]] || : >"$config"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# "id name memlock" of every BPF map the process holds an fd of, once each.
maps_of() {
    local p=$1 fd id bytes
    for fd in /proc/"$p"/fd/*; do
        [[ $(readlink "$fd" 2>/dev/null) == anon_inode:bpf-map ]] || continue
        id=$(awk '/^map_id:/ {print $2}' "/proc/$p/fdinfo/${fd##*/}")
        bytes=$(awk '/^memlock:/ {print $2}' "/proc/$p/fdinfo/${fd##*/}")
        echo "$id $bytes"
    done | sort -un -k1,1 | while read -r id bytes; do
        echo "$id $(bpftool map show id "$id" 2>/dev/null | awk 'NR==1 {for (i=1;i<=NF;i++) if ($i=="name") print $(i+1)}') $bytes"
    done
}

# One agent run of binary $work/$1: appends its figures to $work/$1.{peak,steady,maps,attach}.
measure() {
    local label=$1 deadline peak steady anon file bytes attach
    rm -rf "$work/state"
    "$work/$label" agent --config "$config" --state-dir "$work/state" --log "$work/events.jsonl" \
        --control-socket "$work/ctl.sock" --metrics-listen "127.0.0.1:$port" 2>"$work/err" &
    pid=$!
    deadline=$((SECONDS + 60))
    until grep -q '"started"' "$work/err" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "agent did not start within 60 s" >&2; exit 1; }
        sleep 0.05
    done
    sleep "$SETTLE"
    peak=$(awk '/^VmHWM:/ {print $2 * 1024}' "/proc/$pid/status")
    steady=$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$pid/status")
    # Of the steady RSS: private memory, and file-backed pages: the binary's code and data
    # that it touched (the page cache holds them whether or not the agent maps them) and the
    # BPF rings it reads, mapped twice their size (kernel memory, also in the map memory).
    anon=$(awk '/^RssAnon:/ {print $2 * 1024}' "/proc/$pid/status")
    file=$(awk '/^RssFile:/ {print $2 * 1024}' "/proc/$pid/status")
    rings=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {ring = ($6 == "anon_inode:bpf-map")}
        ring && /^Rss:/ {s += $2 * 1024} END {print s + 0}' "/proc/$pid/smaps")
    maps_of "$pid" >"$work/maps.last"
    bytes=$(awk '{s += $3} END {print s + 0}' "$work/maps.last")
    attach=$(grep -o '"attached_ms":[0-9]*' "$work/err" | cut -d: -f2)
    echo "$peak" >>"$work/$label.peak"; echo "$steady" >>"$work/$label.steady"
    echo "$bytes" >>"$work/$label.maps"; echo "$attach" >>"$work/$label.attach"
    echo "$anon" >>"$work/$label.anon"; echo "$file" >>"$work/$label.file"
    echo "$rings" >>"$work/$label.rings"
    echo "round $round ($label): peak RSS $(mib "$peak") MiB, steady RSS $(mib "$steady") MiB (anon $(mib "$anon"), file $(mib "$file") of which rings $(mib "$rings")), $(wc -l <"$work/maps.last") maps $(mib "$bytes") MiB, attached in $attach ms"
    kill -TERM "$pid"; wait "$pid" || true; pid=
}

echo "agent-memory: $(uname -r), $(nproc) CPUs, ROUNDS=$ROUNDS; note: the machine may be shared, RSS and timings vary"
for round in $(seq "$ROUNDS"); do
    # Alternate the order, so that neither binary always runs first.
    if ((round % 2 == 0)); then order=("${labels[@]}"); else order=($(printf '%s\n' "${labels[@]}" | tac)); fi
    for label in "${order[@]}"; do measure "$label"; done
done
for label in "${labels[@]}"; do
    [[ ${#labels[@]} -gt 1 ]] && echo "== $label"
    echo "median peak RSS:   $(mib "$(median <"$work/$label.peak")") MiB (target <= 30)"
    echo "median steady RSS: $(mib "$(median <"$work/$label.steady")") MiB (anon $(mib "$(median <"$work/$label.anon")"), file $(mib "$(median <"$work/$label.file")") of which rings $(mib "$(median <"$work/$label.rings")"))"
    echo "median map memory: $(mib "$(median <"$work/$label.maps")") MiB (target <= 24)"
    echo "median start-to-attached: $(median <"$work/$label.attach") ms"
done
echo "largest maps (last round): id name bytes"
sort -k3,3nr "$work/maps.last" | head -"${TOP:-15}" | sed 's/^/  /'
