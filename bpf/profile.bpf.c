/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * CPU profile: every sample with a user stack goes to the ring with the kernel's
 * frame-pointer walk and a copy of the stack from sp: a few words that let user space fix
 * the first frame (a frameless leaf, a prologue or an epilogue hides its caller from the
 * frame-pointer walk), or a whole window for DWARF unwinding. Samples without a user stack
 * are counted per (process, kernel stack) in the kernel; off-CPU time per stack from
 * sched_switch. Every lost stack is counted.
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
#define LEAF_BYTES 128 /* copied for the first frame: return address and saved registers */
#define LEAF_MIN_BYTES 16 /* near the top of the stack: return address and one word */
#define PY_MAX_FRAMES 64 /* CPython frames read per sample, innermost first */

/* Anchors the BTF of a type only written through a cast, for the ABI layout test. */
struct osprey_py_frame *const osprey_abi_py_frame = 0;

const volatile __u8 collect_kernel = 1;
const volatile __u8 collect_user = 1;
const volatile __u8 filter_pids = 0;        /* only processes in profile_pids */
const volatile __u64 target_cgroup_id = 0;  /* 0: any cgroup */
const volatile __u32 target_cgroup_level = 0;
/* Processes not in dwarf_pids get a user_stack_bytes window (--unwind dwarf, and the
 * first samples of auto mode, which also walk frame pointers to compare the two). */
const volatile __u8 unwind_all_dwarf = 0;
const volatile __u8 auto_unwind = 0;
/* 0: frame-pointer user stacks are counted in the kernel as walked (no ring traffic, the
 * first frame unchecked); 1: they go to the ring with the words that fix the first frame. */
const volatile __u8 fix_first_frame = 1;
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
 * Bytes of user stack to copy per process (set from user space, which widens the window
 * of a process whose stacks get cut). At most LEAF_BYTES: frame pointers, with the words
 * that fix the first frame; more: a DWARF window.
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
	char bytes[sizeof(struct osprey_profile_user_stack) + STACK_COPY_MAX + COPY_CHUNK +
		   PY_MAX_FRAMES * sizeof(struct osprey_py_frame)];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_copy);
} stack_copies SEC(".maps");

/* CPython processes: where their frame chain is (set from user space). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct osprey_py_proc);
} py_procs SEC(".maps");

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

/* Copies `window` bytes of user stack from sp (up to STACK_COPY_MAX), in chunks; fewer
 * near the top of the stack. */
static __always_inline __u32 copy_window(char *data, __u64 sp, __u32 window)
{
	__u32 len = 0;
	for (int i = 0; i < STACK_COPY_MAX / COPY_CHUNK; i++) {
		if (len + COPY_CHUNK > window)
			break;
		if (bpf_probe_read_user(data + (len & (STACK_COPY_MAX - 1)), COPY_CHUNK,
					(void *)(sp + len)))
			break;
		len += COPY_CHUNK;
	}
	/* Near the top of the stack a big chunk fails: finish with small ones. */
	for (int i = 0; i < COPY_CHUNK / COPY_TAIL_CHUNK; i++) {
		if (len + COPY_TAIL_CHUNK > window)
			break;
		if (bpf_probe_read_user(data + (len & (STACK_COPY_MAX - 1)), COPY_TAIL_CHUNK,
					(void *)(sp + len)))
			break;
		len += COPY_TAIL_CHUNK;
	}
	if (len < window && len < 1024)
		count_error(OSPREY_PERR_STACK_COPY_SHORT);
	return len > STACK_COPY_MAX ? STACK_COPY_MAX : len;
}

static __always_inline __u64 read_user_u64(__u64 addr)
{
	__u64 v = 0;
	if (bpf_probe_read_user(&v, sizeof(v), (void *)addr))
		return 0;
	return v;
}

/*
 * The CPython frame chain of the current thread, if it runs Python code (it holds the
 * GIL: the thread state current in the runtime is its own), written `at` bytes into this
 * CPU's event data. A global function: the verifier checks it once, not once per path
 * of the stack copy before it.
 */
__attribute__((noinline)) int read_py_frames(__u32 at)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct osprey_py_proc *py = bpf_map_lookup_elem(&py_procs, &tgid);
	if (!py)
		return 0;
	__u32 cpu = bpf_get_smp_processor_id();
	struct stack_copy *s = bpf_map_lookup_elem(&stack_copies, &cpu);
	/* After a full 64 KiB window there is no room left: no Python frames then. */
	if (!s || at >= STACK_COPY_MAX)
		return 0;
	asm volatile("" : "+r"(at)); /* keep the mask below for the verifier */
	at &= STACK_COPY_MAX - 1;
	struct osprey_py_frame *out =
		(struct osprey_py_frame *)(s->bytes + sizeof(struct osprey_profile_user_stack) + at);
	__u64 tstate = read_user_u64(py->tstate_addr);
	if (!tstate)
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if ((__u32)read_user_u64(tstate + py->ts_native_tid) != tid)
		return 0;
	__u64 cframe = read_user_u64(tstate + py->ts_cframe);
	__u64 frame = cframe ? read_user_u64(cframe + py->cframe_frame) : 0;
	__u32 n = 0;
	for (int i = 0; i < PY_MAX_FRAMES; i++) {
		if (!frame)
			break;
		__u64 code = read_user_u64(frame + py->frame_code);
		__u8 entry = 0;
		bpf_probe_read_user(&entry, 1, (void *)(frame + py->frame_entry));
		out[i].code = code | (entry ? 1 : 0);
		out[i].instr = read_user_u64(frame + py->frame_instr);
		n = i + 1;
		frame = read_user_u64(frame + py->frame_previous);
	}
	return n;
}

/* Registers at the user-mode boundary, the frame-pointer stack when `fp_walk`, and
 * `window` bytes of the user stack, to the ring. */
static __always_inline int emit_user_stack(struct bpf_perf_event_data *ctx,
					   struct task_struct *task, bool in_kernel, __u32 window,
					   bool fp_walk)
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
	ev->user_stack = fp_walk ? stack_id(ctx, BPF_F_USER_STACK, OSPREY_PERR_USER_COLLISION)
				 : -1;
	ev->py_frames = 0;
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
	if (dwarf_unwinding && window > LEAF_BYTES) {
		len = copy_window(ev->data, ev->sp, window);
	} else if (!bpf_probe_read_user(ev->data, LEAF_BYTES, (void *)ev->sp)) {
		len = LEAF_BYTES;
	} else if (!bpf_probe_read_user(ev->data, LEAF_MIN_BYTES, (void *)ev->sp)) {
		len = LEAF_MIN_BYTES;
	}
	if (len > STACK_COPY_MAX)
		len = STACK_COPY_MAX;
	ev->stack_len = len;
	__u32 py = read_py_frames(len);
	if (py > PY_MAX_FRAMES)
		return 0;
	ev->py_frames = py;
	__u64 size = len + py * sizeof(struct osprey_py_frame);
	asm volatile("" : "+r"(size)); /* keep the bound below for the verifier */
	if (size > STACK_COPY_MAX + PY_MAX_FRAMES * sizeof(struct osprey_py_frame))
		return 0;
	osprey_emit(ev, sizeof(*ev) + size);
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
	if (user) {
		__u32 *window = dwarf_unwinding ? bpf_map_lookup_elem(&dwarf_pids, &tgid) : NULL;
		if (window)
			return emit_user_stack(ctx, task, in_kernel, *window, *window <= LEAF_BYTES);
		if (dwarf_unwinding && unwind_all_dwarf)
			return emit_user_stack(ctx, task, in_kernel, user_stack_bytes, auto_unwind);
		if (fix_first_frame)
			return emit_user_stack(ctx, task, in_kernel, LEAF_BYTES, true);
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
