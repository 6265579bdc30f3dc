/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Tiny programs that `osprey check` and the loader load to learn what this kernel offers. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_ring SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(probe_tp_btf) { return 0; }

SEC("raw_tp/sys_enter")
int probe_raw_tp(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx) { return 0; }

SEC("fentry/do_sys_openat2")
int BPF_PROG(probe_fentry) { return 0; }

SEC("kprobe/do_sys_openat2")
int probe_kprobe(void *ctx) { return 0; }

SEC("lsm/file_open")
int BPF_PROG(probe_lsm, struct file *file) { return 0; }

SEC("perf_event")
int probe_perf_event(void *ctx) { return 0; }

SEC("xdp")
int probe_xdp(struct xdp_md *ctx) { return XDP_PASS; }

SEC("classifier")
int probe_tc(struct __sk_buff *skb) { return 0; }

SEC("uprobe")
int probe_uprobe(void *ctx) { return 0; }

SEC("raw_tp/sys_enter")
int probe_ringbuf(void *ctx)
{
	bpf_ringbuf_output(&probe_ring, &ctx, sizeof(ctx), BPF_RB_NO_WAKEUP);
	return 0;
}

static long probe_loop_step(__u32 i, void *ctx) { return 1; }

SEC("raw_tp/sys_enter")
int probe_bpf_loop(void *ctx)
{
	bpf_loop(1, probe_loop_step, NULL, 0);
	return 0;
}
