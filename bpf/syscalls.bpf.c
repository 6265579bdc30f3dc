/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * `osprey syscalls`: counts, errors by errno and latency per process and syscall,
 * aggregated per CPU in the kernel (no events). Entry time is kept per thread; a call is
 * counted at exit, except exit/exit_group which never return and are counted at entry.
 */
#include "osprey.h"

#define NR_EXIT 60
#define NR_EXIT_GROUP 231
#define MAX_ERRNO 4095

struct osprey_syscall_key *const osprey_abi_syscall_key = 0;
struct osprey_syscall_stats *const osprey_abi_syscall_stats = 0;

/* Entry time by thread: task-local storage (one lookup in the task, nothing to delete)
 * where the kernel has it, else a hash by tid. 0: no call in progress. */
#ifdef OSPREY_COMPAT
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tid */
	__type(value, __u64); /* entry time, ns */
} syscall_starts SEC(".maps");

static __always_inline void start_set(__u64 pid_tgid, __u64 now)
{
	__u32 tid = (__u32)pid_tgid;
	bpf_map_update_elem(&syscall_starts, &tid, &now, BPF_ANY);
}

static __always_inline __u64 start_take(__u64 pid_tgid)
{
	__u32 tid = (__u32)pid_tgid;
	__u64 *start = bpf_map_lookup_elem(&syscall_starts, &tid);
	if (!start)
		return 0;
	__u64 t = *start;
	bpf_map_delete_elem(&syscall_starts, &tid);
	return t;
}
#else
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64); /* entry time, ns */
} syscall_starts SEC(".maps");

static __always_inline void start_set(__u64 pid_tgid, __u64 now)
{
	__u64 *start = bpf_task_storage_get(&syscall_starts, bpf_get_current_task_btf(), 0,
					    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (start)
		*start = now;
}

static __always_inline __u64 start_take(__u64 pid_tgid)
{
	__u64 *start = bpf_task_storage_get(&syscall_starts, bpf_get_current_task_btf(), 0, 0);
	if (!start)
		return 0;
	__u64 t = *start;
	*start = 0;
	return t;
}
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct osprey_syscall_key);
	__type(value, struct osprey_syscall_stats);
} syscall_counts SEC(".maps");

/* Calls not counted because a map was full: `dropped` of OSPREY_KIND_SYSCALL_COUNT. */
static __always_inline void count_lost(void)
{
	struct osprey_counters *c = osprey_counters_for(OSPREY_KIND_SYSCALL_COUNT);
	if (c)
		c->dropped++;
}

static __always_inline void count_call(__u32 pid, long nr, long ret, __u64 latency, bool timed)
{
	bool failed = ret < 0 && ret >= -MAX_ERRNO;
	struct osprey_syscall_key key = { .pid = pid, .nr = nr, .err = failed ? -ret : 0 };
	struct osprey_syscall_stats *st = bpf_map_lookup_elem(&syscall_counts, &key);
	if (!st) {
		struct osprey_syscall_stats fresh = {};
		bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
		bpf_map_update_elem(&syscall_counts, &key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&syscall_counts, &key);
		if (!st) {
			count_lost();
			return;
		}
	}
	st->count++;
	if (failed)
		st->errors++;
	if (timed) {
		st->timed++;
		st->total_ns += latency;
		if (latency > st->max_ns)
			st->max_ns = latency;
	}
}

static __always_inline int on_enter(long nr)
{
	if ((target_pid || target_uid != (__u32)-1 || target_comm_set) &&
	    !osprey_target_match(OSPREY_KIND_SYSCALL_COUNT))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (nr == NR_EXIT || nr == NR_EXIT_GROUP) {
		count_call(pid_tgid >> 32, nr, 0, 0, false);
		return 0;
	}
	start_set(pid_tgid, bpf_ktime_get_ns());
	return 0;
}

static __always_inline int on_exit(long nr, long ret)
{
	if (nr < 0) /* a syscall number the kernel rejected or a ptrace-skipped call */
		return 0;
	if ((target_pid || target_uid != (__u32)-1 || target_comm_set) &&
	    !osprey_target_match(OSPREY_KIND_SYSCALL_COUNT))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 start = start_take(pid_tgid);
	__u64 latency = 0;
	bool timed = false;
	if (start) {
		latency = bpf_ktime_get_ns() - start;
		timed = true;
	}
	count_call(pid_tgid >> 32, nr, ret, latency, timed);
	return 0;
}

/* Every syscall is counted: these run on the raw hooks, without a per-syscall filter. */
SEC("tp_btf/sys_enter")
int BPF_PROG(syscalls_enter_btf, struct pt_regs *regs, long id)
{
	return on_enter(id);
}

SEC("raw_tp/sys_enter")
int BPF_PROG(syscalls_enter_raw, struct pt_regs *regs, long id)
{
	return on_enter(id);
}

SEC("tracepoint/raw_syscalls/sys_enter")
int syscalls_enter_tp(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(ctx->id);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscalls_exit_btf, struct pt_regs *regs, long ret)
{
	return on_exit(regs->orig_ax, ret);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(syscalls_exit_raw, struct pt_regs *regs, long ret)
{
	return on_exit(BPF_CORE_READ(regs, orig_ax), ret);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int syscalls_exit_tp(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx->id, ctx->ret);
}
