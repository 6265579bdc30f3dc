/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * CPU profile: cpu-clock samples counted per (process, kernel stack, user stack) in the
 * kernel; user stacks of frame-pointer-less code copied to the ring for unwinding in user
 * space; off-CPU time per stack from sched_switch. Every lost stack is counted.
 */
#include "osprey.h"

#define EFAULT 14
#define ENOMEM 12
#define EEXIST 17
#define TASK_RUNNING 0
#define STACK_DEPTH 127
#define COPY_CHUNK 512
#define COPY_TAIL_CHUNK 64
#define STACK_COPY_MAX 65536 /* largest user stack window, power of two */

const volatile __u8 collect_kernel = 1;
const volatile __u8 collect_user = 1;
const volatile __u8 filter_pids = 0;        /* only processes in profile_pids */
const volatile __u64 target_cgroup_id = 0;  /* 0: any cgroup */
const volatile __u32 target_cgroup_level = 0;
const volatile __u8 unwind_all_dwarf = 0;   /* copy user stacks of every process */
/* 0 (frame pointers only): the verifier then drops the stack copy, which dominates the
 * program's load time. */
const volatile __u8 dwarf_unwinding = 1;
const volatile __u32 user_stack_bytes = 8192; /* window of processes without their own */

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, STACK_DEPTH * sizeof(__u64));
} profile_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 40960);
	__type(key, struct osprey_profile_key);
	__type(value, __u64);
} profile_counts SEC(".maps");

/* Nanoseconds blocked per key (--off-cpu). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 40960);
	__type(key, struct osprey_profile_key);
	__type(value, __u64);
} offcpu_times SEC(".maps");

/* The --pid set, grown by fork when --children is given. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} profile_pids SEC(".maps");

/*
 * Processes whose user stacks are copied for DWARF unwinding, with the bytes of stack to
 * copy (set from user space, which widens the window of a process whose stacks get cut).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} dwarf_pids SEC(".maps");

/*
 * One user stack event per CPU, built in place: up to 64 KiB does not fit the shared
 * scratch, nor a per-CPU array value (32 KiB at most). Indexed by CPU; user space sizes
 * it to the number of possible CPUs. The extra chunk keeps masked copies in bounds.
 */
struct stack_copy {
	char bytes[sizeof(struct osprey_profile_user_stack) + STACK_COPY_MAX + COPY_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_copy);
} stack_copies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OSPREY_PERR_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} profile_errors SEC(".maps");

struct offcpu_start {
	__u64 ts;
	struct osprey_profile_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct offcpu_start);
} offcpu_starts SEC(".maps");

static __always_inline void count_error(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&profile_errors, &slot);
	if (v)
		(*v)++;
}

/* Stack id, or the negative error after counting it under `first_slot` + 0/1/2. */
static __always_inline __s32 stack_id(void *ctx, __u64 flags, __u32 first_slot)
{
	long id = bpf_get_stackid(ctx, &profile_stacks, flags);
	if (id >= 0)
		return id;
	if (id == -EEXIST)
		count_error(first_slot);
	else if (id == -EFAULT)
		count_error(first_slot + 1);
	else if (id == -ENOMEM)
		count_error(first_slot + 2);
	return id;
}

static __always_inline bool profile_target(__u32 tgid, __u32 kind)
{
	if (tgid == 0) /* the idle task */
		return false;
	if (filter_pids && !bpf_map_lookup_elem(&profile_pids, &tgid))
		return false;
	if (target_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(target_cgroup_level) != target_cgroup_id)
		return false;
	return osprey_target_match(kind);
}

static __always_inline void count_add(void *map, struct osprey_profile_key *key, __u64 n,
				      struct osprey_counters *c)
{
	__u64 *v = bpf_map_lookup_elem(map, key);
	if (!v) {
		__u64 init = n;
		if (!bpf_map_update_elem(map, key, &init, BPF_NOEXIST)) {
			if (c)
				c->emitted++;
			return;
		}
		v = bpf_map_lookup_elem(map, key); /* another CPU inserted it meanwhile */
		if (!v) {
			count_error(OSPREY_PERR_COUNTS_FULL);
			if (c)
				c->dropped++;
			return;
		}
	}
	__sync_fetch_and_add(v, n);
	if (c)
		c->emitted++;
}

static __always_inline bool has_user_memory(struct task_struct *task)
{
	return collect_user && BPF_CORE_READ(task, mm) != NULL;
}

/* Registers at the user-mode boundary and `window` bytes of the user stack, to the ring. */
static __always_inline int emit_user_stack(struct bpf_perf_event_data *ctx,
					   struct task_struct *task, bool in_kernel, __u32 window)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct stack_copy *s = bpf_map_lookup_elem(&stack_copies, &cpu);
	if (!s)
		return 0;
	struct osprey_profile_user_stack *ev = (struct osprey_profile_user_stack *)s->bytes;
	osprey_fill_header(&ev->hdr, OSPREY_KIND_PROFILE_USER_STACK, task);
	ev->kernel_stack = (collect_kernel && in_kernel)
				   ? stack_id(ctx, 0, OSPREY_PERR_KERNEL_COLLISION)
				   : -1;
	if (in_kernel) {
		struct pt_regs *regs = osprey_current_pt_regs();
		ev->ip = BPF_CORE_READ(regs, ip);
		ev->sp = BPF_CORE_READ(regs, sp);
		ev->bp = BPF_CORE_READ(regs, bp);
	} else {
		ev->ip = ctx->regs.ip;
		ev->sp = ctx->regs.sp;
		ev->bp = ctx->regs.bp;
	}
	__u32 len = 0;
	for (int i = 0; i < STACK_COPY_MAX / COPY_CHUNK; i++) {
		if (len + COPY_CHUNK > window)
			break;
		if (bpf_probe_read_user(ev->data + (len & (STACK_COPY_MAX - 1)), COPY_CHUNK,
					(void *)(ev->sp + len)))
			break;
		len += COPY_CHUNK;
	}
	/* Near the top of the stack a big chunk fails: finish with small ones. */
	for (int i = 0; i < COPY_CHUNK / COPY_TAIL_CHUNK; i++) {
		if (len + COPY_TAIL_CHUNK > window)
			break;
		if (bpf_probe_read_user(ev->data + (len & (STACK_COPY_MAX - 1)), COPY_TAIL_CHUNK,
					(void *)(ev->sp + len)))
			break;
		len += COPY_TAIL_CHUNK;
	}
	if (len < window && len < 1024)
		count_error(OSPREY_PERR_STACK_COPY_SHORT);
	if (len > STACK_COPY_MAX)
		len = STACK_COPY_MAX;
	ev->stack_len = len;
	osprey_emit(ev, sizeof(*ev) + len);
	return 0;
}

SEC("perf_event")
int profile_cpu(struct bpf_perf_event_data *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct osprey_counters *c = osprey_counters_for(OSPREY_KIND_PROFILE_SAMPLE);
	if (!profile_target(tgid, OSPREY_KIND_PROFILE_SAMPLE)) {
		if (c)
			c->filtered++;
		return 0;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	/* The context only allows 8-byte register reads; cs is 16 bits on newer kernels. */
	__u64 cs = *(volatile __u64 *)((char *)&ctx->regs + offsetof(struct pt_regs, cs));
	bool in_kernel = (cs & 3) == 0;
	bool user = has_user_memory(task);
	if (!collect_kernel && !user) {
		if (c)
			c->filtered++; /* --user-only and a kernel thread */
		return 0;
	}
	if (!collect_user && !in_kernel) {
		if (c)
			c->filtered++; /* --kernel-only and a sample in user mode */
		return 0;
	}
	if (user && dwarf_unwinding) {
		__u32 *window = bpf_map_lookup_elem(&dwarf_pids, &tgid);
		if (window)
			return emit_user_stack(ctx, task, in_kernel, *window);
		if (unwind_all_dwarf)
			return emit_user_stack(ctx, task, in_kernel, user_stack_bytes);
	}

	struct osprey_profile_key key = {};
	key.pid = tgid;
	key.kernel_stack = (collect_kernel && in_kernel)
				   ? stack_id(ctx, 0, OSPREY_PERR_KERNEL_COLLISION)
				   : -1;
	key.user_stack = user ? stack_id(ctx, BPF_F_USER_STACK, OSPREY_PERR_USER_COLLISION) : -1;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	count_add(&profile_counts, &key, 1, c);
	return 0;
}

/* Switch-out of a blocking task records its stacks; switch-in adds the time it waited. */
static __always_inline int on_switch(void *ctx, bool preempt, struct task_struct *prev,
				     struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 prev_tgid = BPF_CORE_READ(prev, tgid);
	long state = osprey_task_state(prev);
	struct osprey_counters *c = osprey_counters_for(OSPREY_KIND_OFFCPU);
	if (!preempt && state != TASK_RUNNING) {
		if (profile_target(prev_tgid, OSPREY_KIND_OFFCPU)) {
			struct offcpu_start st = {};
			__u32 prev_tid = BPF_CORE_READ(prev, pid);
			st.ts = now;
			st.key.pid = prev_tgid;
			st.key.kernel_stack =
				collect_kernel ? stack_id(ctx, 0, OSPREY_PERR_KERNEL_COLLISION) : -1;
			st.key.user_stack = has_user_memory(prev)
						    ? stack_id(ctx, BPF_F_USER_STACK,
							       OSPREY_PERR_USER_COLLISION)
						    : -1;
			bpf_get_current_comm(st.key.comm, sizeof(st.key.comm));
			bpf_map_update_elem(&offcpu_starts, &prev_tid, &st, BPF_ANY);
		} else if (c && prev_tgid) {
			c->filtered++;
		}
	}
	__u32 next_tid = BPF_CORE_READ(next, pid);
	struct offcpu_start *st = bpf_map_lookup_elem(&offcpu_starts, &next_tid);
	if (st) {
		struct osprey_profile_key key = st->key;
		__u64 blocked = now - st->ts;
		bpf_map_delete_elem(&offcpu_starts, &next_tid);
		count_add(&offcpu_times, &key, blocked, c);
	}
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(profile_offcpu_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(ctx, preempt, prev, next);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(profile_offcpu_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(ctx, preempt, prev, next);
}

static __always_inline int follow_fork(struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	__u8 one = 1;
	if (bpf_map_lookup_elem(&profile_pids, &parent_tgid))
		bpf_map_update_elem(&profile_pids, &child_tgid, &one, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(profile_children_btf, struct task_struct *parent, struct task_struct *child)
{
	return follow_fork(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(profile_children_raw, struct task_struct *parent, struct task_struct *child)
{
	return follow_fork(parent, child);
}
