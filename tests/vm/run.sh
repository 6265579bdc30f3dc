#!/usr/bin/env bash
# Boots Debian kernels under QEMU with the same osprey binary, the same embedded BPF
# objects and the real-BPF tests of every capability, and fails when any of them fails on
# any kernel or a VM does not finish in time.
#
#   tests/vm/run.sh [KERNEL_PACKAGE...]
#
# Default: the matrix, the newest cloud kernel of Debian 11 (5.10), 12 (6.1) and 13 (6.12).
# Prints one line per kernel, `vm: all passed on PACKAGE` or `vm: FAIL on PACKAGE (why)`,
# and exits 1 when any kernel failed. OSPREY_VM_TESTS=core runs only the core tests on every
# kernel (the 6.1 kernel otherwise also runs the further tests listed in FULL_TESTS);
# OSPREY_VM_FILTER=REGEX runs only the tests whose name matches; OSPREY_VM_ENV="VAR=VALUE ..."
# is exported in the VM (e.g. OSPREY_VERIFIER_LOG=1, to see why a program is refused).
#
# Kernels come from Debian's archive through apt with a sources list and package lists of
# this script's own (the host's apt configuration is not touched). Needs (installed by
# .ci/run): qemu-system-x86, busybox-static, cpio, iproute2, debian-archive-keyring, xz-utils,
# zstd, prometheus (promtool), bpftool. Uses KVM when /dev/kvm works,
# else software emulation (about 20 times slower). Everything stays under target/vm/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
vm=$repo/target/vm
timeout_secs=${OSPREY_VM_TIMEOUT:-1500}
mkdir -p "$vm"

# --- Debian's archive, with lists of our own ---------------------------------------------
apt_dir=$vm/apt
mkdir -p "$apt_dir"/lists/partial "$apt_dir"/cache/archives/partial "$apt_dir"/parts
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$apt_dir/sources.list" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian bullseye main
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian trixie main
EOF
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/parts"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Architecture=amd64" -o "Acquire::Languages=none" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
# Refreshed once a day: kernels of old releases rarely change.
if [ -z "$(find "$apt_dir/lists" -maxdepth 1 -name '*_Packages' -mmin -1440 2>/dev/null)" ]; then
    apt-get "${apt_opts[@]}" update >/dev/null
fi
newest() {
    apt-cache "${apt_opts[@]}" search --names-only "$1" | awk '{print $1}' | sort -V | tail -1
}
if [ $# -gt 0 ]; then
    packages=("$@")
else
    packages=(
        "$(newest '^linux-image-5\.10\.0-[0-9]+-cloud-amd64$')"
        "$(newest '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$')"
        "$(newest '^linux-image-6\.12\.[0-9]+\+deb13-cloud-amd64$')"
    )
fi
for pkg in "${packages[@]}"; do
    [ -n "$pkg" ] || { echo "vm: a kernel of the matrix is not in Debian's lists" >&2; exit 2; }
done

# --- KVM or software emulation -----------------------------------------------------------
# /dev/kvm may exist without working (nested virtualisation off): KVM is used only when a
# kernel boots under it, checked once with the first kernel (no root fs: it panics and exits).
accel_for() {
    local vmlinuz=$1
    if [ -z "${accel_name:-}" ]; then
        if [ -w /dev/kvm ] && timeout 60 qemu-system-x86_64 -accel kvm -cpu host -m 512 -nographic \
                -no-reboot -kernel "$vmlinuz" -append "console=ttyS0 panic=-1" </dev/null 2>&1 \
                | grep -aq "Linux version"; then
            accel=(-accel kvm -cpu host); accel_name=KVM; slowdown=2
        else
            accel=(-accel tcg); accel_name="TCG (KVM unusable here)"; slowdown=12
        fi
    fi
}

# --- the binaries: the host's test build, unchanged --------------------------------------
cd "$repo"
cargo build --workspace --bins
test_names=(cli files exec secure memory syscalls net agent)
mapfile -t test_bins < <(cargo test --workspace --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
names = set(sys.argv[1:])
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and m["target"]["kind"] == ["test"] and m["target"]["name"] in names:
        print(m["target"]["name"] + "=" + m["executable"])
' "${test_names[@]}")
[ "${#test_bins[@]}" -eq "${#test_names[@]}" ] \
    || { echo "vm: expected ${#test_names[@]} test binaries, got: ${test_bins[*]}" >&2; exit 1; }
declare -A bin
for entry in "${test_bins[@]}"; do bin[${entry%%=*}]=${entry#*=}; done

# The tests run in the VM. Core: every capability's real-BPF test on every kernel.
T="--test-threads=1"
CORE_TESTS=$(cat <<EOF
run check-all-available ${repo}/target/debug/osprey check
run check-hooks env OSPREY_EXPECT_FEATURES=tp_btf,raw_tp,lsm ${bin[cli]} $T --exact check_reports_chosen_hooks_and_features
run missing-hook ${bin[cli]} $T --exact a_missing_hook_degrades_only_its_capability
run files ${bin[files]} $T --exact open_of_a_unique_path_and_a_failed_open relative_opens_resolve
run exec ${bin[exec]} $T --exact exec_argv_exit_codes_signals_forks_and_ancestry
run secure-default-rules ${bin[secure]} $T --exact every_default_rule_fires_on_its_trigger
run secure-deny-open env "OSPREY_EXPECT_DENY_BACKEND=BPF LSM" ${bin[secure]} $T --exact deny_rule_blocks_the_open_with_eperm
run secure-deny-connect ${bin[secure]} $T --exact deny_rule_refuses_the_connect_before_any_packet
run profile profile_spin
run memory ${bin[memory]} $T --exact fresh_anonymous_pages_give_one_minor_fault_each_in_their_mapping
run syscalls ${bin[syscalls]} $T --exact counts_errnos_and_latency_of_a_known_workload_are_exact
run tcp ${bin[net]} $T --exact tcp_transfer_gives_one_exact_record_per_side
run flows-veth ${bin[net]} $T --exact flows_count_udp_tcp_and_ping_exactly_in_both_directions
run agent ${bin[agent]} $T --exact metrics_are_served_valid_and_move_with_activity
EOF
)
# Further tests where the budget allows (the 6.1 kernel): whole binaries but for what needs
# tools the VM lacks (compilers, tmux, useradd, a PMU) or measures the emulator (the flood,
# per-second fault rates) or needs a disk (page cache dropped under a file on the initramfs).
FULL_TESTS=$(cat <<EOF
run files-all ${bin[files]} $T --skip two_hundred_thousand
run files-via-kretprobe env OSPREY_DENY_PROGRAMS=files_open_fexit,files_open_sc,files_open_btf,files_open_raw OSPREY_EXPECT_TRACING_VIA=kretprobe/do_sys_openat2 ${bin[files]} $T --exact open_of_a_unique_path_and_a_failed_open
run exec-all ${bin[exec]} $T
run memory-all ${bin[memory]} $T --skip cache_misses --skip rates_and_heat_map --skip a_file_read_through_mmap
run syscalls-all ${bin[syscalls]} $T
run net-all ${bin[net]} $T
run cli-bounded-loops ${bin[cli]} $T --exact without_bpf_loop_every_capability_still_loads_with_bounded_loops
run secure-kill ${bin[secure]} $T --exact kill_rule_kills_the_process_with_sigkill_after_the_syscall
run agent-ctl ${bin[agent]} $T --exact ctl_disables_and_enables_a_module_and_bad_reloads_are_rejected
EOF
)

# --- one kernel --------------------------------------------------------------------------
# Copies a file to the same absolute path inside the VM, with its shared libraries.
install_with_libs() {
    local root=$1 src=$2 dest=${3:-$2}
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$src" "$root$dest"
    strip --strip-debug "$root$dest" 2>/dev/null || true
    ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
}

# Modules the tests need that Debian builds as modules (tc clsact: flows' egress hook before
# tcx, Linux 6.6; veth: the flows test's pair), uncompressed for busybox insmod.
copy_module() {
    local work=$1 root=$2 module=$3 found
    found=$(find "$work/kernel" -path "*/modules/*" -name "$module.ko*" | head -1)
    [ -n "$found" ] || return 0 # built in
    case $found in
        *.ko.xz) xz -dc "$found" > "$root/modules/$module.ko" ;;
        *.ko.zst) zstd -qdc "$found" > "$root/modules/$module.ko" ;;
        *) cp "$found" "$root/modules/$module.ko" ;;
    esac
}

build_initramfs() {
    local pkg=$1 work=$2 tests=$3 root=$2/root
    rm -rf "$root"
    mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,proc,sys,dev,tmp,root,run,modules}
    mkdir -p "$root"/etc/{cron.d,systemd/system} "$root"/var/log "$root$repo/target/tmp"
    ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"
    ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >> "$root/etc/passwd"
    echo 'root:x:0:' > "$root/etc/group"; echo 'nogroup:x:65534:' >> "$root/etc/group"
    echo 'root:*:19000:0:99999:7:::' > "$root/etc/shadow"
    install_with_libs "$root" "$repo/target/debug/osprey"
    install_with_libs "$root" "$repo/target/debug/osprey-workload"
    for name in "${test_names[@]}"; do install_with_libs "$root" "${bin[$name]}"; done
    # The tests run real programs, as on the host: dash as /bin/sh, coreutils, iproute2.
    install_with_libs "$root" /usr/bin/dash /usr/bin/sh
    for tool in echo true cat cp rm chmod id truncate sha256sum setpriv; do
        install_with_libs "$root" "/usr/bin/$tool"
    done
    install_with_libs "$root" "$(command -v ip)" /usr/bin/ip
    install_with_libs "$root" "$(command -v tc)" /usr/bin/tc
    # The agent tests check the metrics with promtool and list programs with bpftool.
    for tool in promtool bpftool; do
        ! command -v "$tool" >/dev/null || install_with_libs "$root" "$(command -v "$tool")" "/usr/bin/$tool"
    done
    cp /bin/busybox "$root/usr/bin/busybox"
    for applet in mount mkdir poweroff sleep env grep ls uname insmod kill wc; do
        ln -s busybox "$root/usr/bin/$applet"
    done
    # The retransmission test drops segments with a tc filter from this object, by path.
    mkdir -p "$root$repo/crates/osprey-bpf/objects" "$root$repo/crates/osprey-cli"
    cp "$repo/crates/osprey-bpf/objects/test_drop.bpf.o" "$root$repo/crates/osprey-bpf/objects/"
    for module in sch_ingress cls_bpf veth; do copy_module "$work" "$root" "$module"; done

    cat > "$root/init" <<INIT
#!/usr/bin/busybox sh
# Emulation runs (and verifies) programs many times slower than the host: test time limits
# scale with OSPREY_TEST_SLOWDOWN.
export PATH=/usr/bin:/usr/sbin HOME=/root OSPREY_REQUIRE_BPF=1 RUST_BACKTRACE=1 OSPREY_TEST_SLOWDOWN=${slowdown} ${OSPREY_VM_ENV:-}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
# /tmp stays on the initramfs (already in RAM): a tmpfs there would hide a checkout under /tmp.
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
for m in /modules/*.ko; do [ -e "\$m" ] && insmod "\$m"; done
echo "OSPREY-VM: kernel \$(uname -r)"
${repo}/target/debug/osprey check
run() {
    name=\$1; shift
    echo "OSPREY-VM: RUN \$name"
    if "\$@"; then echo "OSPREY-VM: PASS \$name"; else echo "OSPREY-VM: FAIL \$name"; fi
}
# A busy shell loop profiled for three seconds must give samples of its stacks.
profile_spin() {
    busybox sh -c 'while :; do :; done' &
    spin=\$!
    ${repo}/target/debug/osprey profile --pid \$spin --duration 3 --folded /tmp/spin.folded
    rc=\$?
    kill \$spin
    [ \$rc -eq 0 ] && grep -q busybox /tmp/spin.folded
}
$tests
echo "OSPREY-VM: DONE"
poweroff -f
INIT
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initramfs.gz")
}

# Prints the kernel's verdict line; returns non-zero when it failed.
run_kernel() {
    local pkg=$1 work=$vm/$1 tests=$CORE_TESTS
    case $pkg in linux-image-6.1.*) [ "${OSPREY_VM_TESTS:-}" = core ] || tests+=$'\n'$FULL_TESTS ;; esac
    # OSPREY_VM_FILTER=REGEX: only the tests whose name matches (to iterate on one kernel).
    [ -z "${OSPREY_VM_FILTER:-}" ] || tests=$(grep -E "^run ($OSPREY_VM_FILTER) " <<<"$tests" || true)
    mkdir -p "$work"
    if ! ls "$work"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
        rm -f "$work"/*.deb
        (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg" >/dev/null) \
            || { echo "vm: FAIL on $pkg (apt-get download failed)"; return 1; }
        dpkg -x "$work"/*.deb "$work/kernel"
    fi
    local vmlinuz log=$work/serial.log qemu_rc
    vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* | head -1)
    accel_for "$vmlinuz"
    build_initramfs "$pkg" "$work" "$tests"
    echo "vm: booting $pkg ($(du -h "$work/initramfs.gz" | cut -f1) initramfs) under $accel_name"
    # no_timer_check: a loaded host can make the emulated timer look broken at boot (panic).
    # A VM that panics before the init runs is booted once more.
    local attempt
    for attempt in 1 2; do
        set +e
        timeout "$timeout_secs" qemu-system-x86_64 "${accel[@]}" -m 3072 -smp 2 -nographic \
            -no-reboot -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
            -append "console=ttyS0 panic=-1 quiet no_timer_check lsm=lockdown,capability,yama,apparmor,bpf" \
            </dev/null >"$log" 2>&1
        qemu_rc=$?
        set -e
        ! grep -aq "OSPREY-VM: kernel" "$log" || break
        echo "vm: $pkg did not reach the init (attempt $attempt; log: $log)"
    done
    grep -a "OSPREY-VM:\|test result\|panicked\|FAILED\|^CAPABILITY\|object  \|unavailable" "$log" || true
    local failed
    failed=$(grep -a "OSPREY-VM: FAIL" "$log" | sed 's/.*FAIL //' | tr '\n' ' ' | sed 's/ $//')
    local verdict="vm: all passed on $pkg"
    if [ "$qemu_rc" -eq 124 ]; then
        verdict="vm: FAIL on $pkg (timed out after ${timeout_secs}s${failed:+; failed: $failed}; log: $log)"
    elif ! grep -aq "OSPREY-VM: DONE" "$log"; then
        verdict="vm: FAIL on $pkg (the VM did not finish; log: $log)"
    elif [ -n "$failed" ]; then
        verdict="vm: FAIL on $pkg ($failed; log: $log)"
    fi
    echo "$verdict" | tee -a "$verdicts"
    [ "$verdict" = "vm: all passed on $pkg" ]
}

verdicts=$vm/verdicts.$$
: > "$verdicts"
status=0
for pkg in "${packages[@]}"; do
    run_kernel "$pkg" || status=1
done
cat "$verdicts"; rm -f "$verdicts"
exit $status
