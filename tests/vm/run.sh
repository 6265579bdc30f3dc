#!/usr/bin/env bash
# Boots a Debian kernel under QEMU (software emulation) with the same osprey binary, the same
# embedded BPF objects and a representative subset of the real-BPF tests, and fails when any of
# them fails or the VM does not finish in time.
#
#   tests/vm/run.sh [KERNEL_PACKAGE]     default: the newest linux-image-6.1.*-cloud-amd64
#
# Needs (installed by .ci/run): qemu-system-x86, busybox-static, cpio, and apt lists for
# `apt-get download`. Everything it builds or downloads stays under target/vm/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
pkg=${1:-$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' \
    | awk '{print $1}' | sort -V | tail -1)}
[ -n "$pkg" ] || { echo "vm: no linux-image-6.1 cloud package known to apt (apt-get update?)" >&2; exit 2; }
work=$repo/target/vm/$pkg
timeout_secs=${OSPREY_VM_TIMEOUT:-1200}
mkdir -p "$work"

# --- the kernel --------------------------------------------------------------------------
if ! ls "$work"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
    (cd "$work" && rm -f ./*.deb && apt-get download "$pkg" >/dev/null)
    dpkg -x "$work"/*.deb "$work/kernel"
fi
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* | head -1)

# --- the binaries: the host's test build, unchanged -------------------------------------
cd "$repo"
cargo build --workspace --bins
mapfile -t test_bins < <(cargo test --workspace --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and m["target"]["kind"] == ["test"] and m["target"]["name"] in ("files", "exec", "cli", "secure"):
        print(m["target"]["name"] + "=" + m["executable"])
')
[ "${#test_bins[@]}" -eq 4 ] || { echo "vm: expected 4 test binaries, got: ${test_bins[*]}" >&2; exit 1; }

# --- the initramfs ----------------------------------------------------------------------
root=$work/root
rm -rf "$root"
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,proc,sys,dev,tmp,etc,root,run}
ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"; ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"

# Copies a file to the same absolute path inside the VM, with its shared libraries.
install_with_libs() {
    local src=$1 dest=${2:-$1}
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$src" "$root$dest"
    strip --strip-debug "$root$dest" 2>/dev/null || true
    ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
}
install_with_libs "$repo/target/debug/osprey"
install_with_libs "$repo/target/debug/osprey-workload"
declare -A bin
for entry in "${test_bins[@]}"; do
    bin[${entry%%=*}]=${entry#*=}
    install_with_libs "${entry#*=}"
done
# The exec test runs real programs, as on the host: dash as /bin/sh, coreutils echo/true.
install_with_libs /usr/bin/dash /usr/bin/sh
install_with_libs /usr/bin/echo
install_with_libs /usr/bin/true
install_with_libs /usr/bin/cat
cp /bin/busybox "$root/usr/bin/busybox"
# tc clsact (flows' egress hook before tcx, Linux 6.6) needs sch_ingress and cls_bpf, modules
# on Debian: loaded by hand, as there is no modprobe or module tree in the initramfs.
for module in sch_ingress cls_bpf; do
    cp "$(find "$work/kernel/lib/modules" -name "$module.ko" | head -1)" "$root/$module.ko"
done
for applet in mount mkdir poweroff sleep env grep ls uname ip insmod; do
    ln -s busybox "$root/usr/bin/$applet"
done

cat > "$root/init" <<INIT
#!/usr/bin/busybox sh
export PATH=/usr/bin:/usr/sbin HOME=/root OSPREY_REQUIRE_BPF=1 RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
# /tmp stays on the initramfs (already in RAM): a tmpfs there would hide a checkout under /tmp.
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
insmod /sch_ingress.ko
insmod /cls_bpf.ko
echo "OSPREY-VM: kernel \$(uname -r)"
${repo}/target/debug/osprey check
run() {
    name=\$1; shift
    echo "OSPREY-VM: RUN \$name"
    if "\$@"; then echo "OSPREY-VM: PASS \$name"; else echo "OSPREY-VM: FAIL \$name"; fi
}
T="--test-threads=1"
# The loader picks the best hooks this kernel has; check holds it to that.
run check-picks-fentry env OSPREY_EXPECT_FILES_HOOK=fexit/do_sys_openat2 \
    OSPREY_EXPECT_FEATURES=fentry,kprobe,lsm,tp_btf,raw_tp \
    ${bin[cli]} \$T --exact check_reports_chosen_hooks_and_features
run missing-hook ${bin[cli]} \$T --exact a_missing_hook_degrades_only_its_capability
run bad-input ${bin[cli]} \$T --exact bad_input_exits_2_with_a_clear_message
# The same file assertions through each hook (the flood test is left to the host: emulation
# is ~20x slower and it would measure QEMU, not Osprey).
FILES="${bin[files]} \$T --skip two_hundred_thousand"
run files-via-fexit env OSPREY_EXPECT_TRACING_VIA=fexit/do_sys_openat2 \$FILES
run files-via-tp_btf env OSPREY_DENY_PROGRAMS=files_open_fexit \
    OSPREY_EXPECT_TRACING_VIA=tp_btf/sys_exit \$FILES
run files-via-kretprobe env OSPREY_DENY_PROGRAMS=files_open_fexit,files_open_btf,files_open_raw \
    OSPREY_EXPECT_TRACING_VIA=kretprobe/do_sys_openat2 \$FILES
run exec ${bin[exec]} \$T
# Enforcement through BPF LSM: the deny rule's open fails with EPERM before it happens.
run deny-via-bpf-lsm env "OSPREY_EXPECT_DENY_BACKEND=BPF LSM" \
    ${bin[secure]} \$T --exact deny_rule_blocks_the_open_with_eperm
# Deny on connect through cgroup connect4/connect6, as on the host.
run deny-connect ${bin[secure]} \$T --exact deny_rule_refuses_the_connect_before_any_packet
echo "OSPREY-VM: DONE"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initramfs.gz")
echo "vm: booting $pkg ($(du -h "$work/initramfs.gz" | cut -f1) initramfs) under QEMU TCG"

# --- boot and judge ---------------------------------------------------------------------
log=$work/serial.log
set +e
timeout "$timeout_secs" qemu-system-x86_64 -accel tcg -m 3072 -smp 2 -nographic -no-reboot \
    -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet lsm=lockdown,capability,yama,apparmor,bpf" \
    </dev/null >"$log" 2>&1
qemu_rc=$?
set -e
grep -a "OSPREY-VM:\|test result\|panicked\|FAILED\|^CAPABILITY\|^files\|^process\|^fentry\|^kprobe\|^lsm" "$log" || true
if [ "$qemu_rc" -eq 124 ]; then echo "vm: FAIL: timed out after ${timeout_secs}s (log: $log)"; exit 1; fi
if ! grep -aq "OSPREY-VM: DONE" "$log"; then echo "vm: FAIL: the VM did not finish (log: $log)"; exit 1; fi
if grep -aq "OSPREY-VM: FAIL" "$log"; then echo "vm: FAIL (log: $log)"; exit 1; fi
echo "vm: all passed on $pkg"
