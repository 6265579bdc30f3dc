/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared kernel-side helpers: the ring buffer and emit(), per-kind counters, the target
 * filter, the token-bucket rate limiter, the event header and the dentry walker.
 * Every capability object includes this once; each object gets its own maps.
 */
#ifndef OSPREY_H
#define OSPREY_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- configuration, set from user space through .rodata ---- */
const volatile __u32 target_pid = 0;        /* 0: every process */
const volatile __u32 target_uid = (__u32)-1; /* -1: every user */
const volatile __u8 target_comm_set = 0;
const volatile char target_comm[OSPREY_COMM_LEN] = {};
/* Non-zero: events of cgroups in osprey_cgroup_drop are filtered (--container/--pod). */
const volatile __u8 target_cgroups_set = 0;
const volatile __u64 rate_per_process = 0;  /* events/s per process; 0: off */
const volatile __u64 rate_global = 0;       /* events/s over all processes and CPUs */
const volatile __u64 wake_threshold = 256 * 1024; /* bytes queued before a wake-up */

/* Never read: keeps every event struct in the object's BTF, so the ABI layout test
 * (crates/osprey-bpf/tests/layout.rs) can compare them with their Rust mirrors. */
struct osprey_file_open *const osprey_abi_file_open = 0;
struct osprey_exec *const osprey_abi_exec = 0;
struct osprey_fork *const osprey_abi_fork = 0;
struct osprey_exit *const osprey_abi_exit = 0;
struct osprey_profile_key *const osprey_abi_profile_key = 0;
struct osprey_profile_user_stack *const osprey_abi_profile_user_stack = 0;
struct osprey_fault_key *const osprey_abi_fault_key = 0;
struct osprey_fault_counts *const osprey_abi_fault_counts = 0;
struct osprey_fault_heat_key *const osprey_abi_fault_heat_key = 0;
struct osprey_fault_mapping *const osprey_abi_fault_mapping = 0;

/* ---- maps ---- */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} osprey_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OSPREY_MAX_KINDS);
	__type(key, __u32);
	__type(value, struct osprey_counters);
} osprey_stats SEC(".maps");

/* Non-zero while the reader sleeps without a timer (nothing was queued when it last
 * looked): the next record clears it and wakes the reader, so an idle reader costs no
 * periodic wake-ups and the first event after a quiet spell is delivered at once. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} osprey_reader_idle SEC(".maps");

struct osprey_scratch {
	/* loop state kept in memory on purpose, see osprey_walk_path */
	__u64 walk_mnt;
	__u64 walk_dentry;
	__u32 off;
	__u16 walk_depth;
	__u8 walk_done;
	__u8 _pad[1];
	__u8 fixed[128];               /* the kind's fixed part; all are smaller */
	char data[OSPREY_DATA_CAP + OSPREY_PATH_MAX]; /* masked offset + a bounded copy fit */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct osprey_scratch);
} osprey_scratch_map SEC(".maps");

/* Cgroups whose containers user space decided are not wanted (--container, --pod,
 * --namespace): keyed by cgroup id. One entry unless the loader sizes it for a filter. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, __u8);
} osprey_cgroup_drop SEC(".maps");

struct osprey_bucket {
	__u64 tokens_nano; /* tokens * 1e9, so refill needs no division by rate */
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct osprey_bucket);
} osprey_buckets SEC(".maps");

/* The machine-wide limit: events let through in the current second, over all CPUs. */
struct osprey_window {
	__u64 second; /* bpf_ktime_get_ns() / 1e9 of the second being counted */
	__u64 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct osprey_window);
} osprey_global_window SEC(".maps");

#define OSPREY_MASK(x) ((x) & (OSPREY_DATA_CAP - 1))

/* The fixed part of an event of `type`, placed so that its data[] is s->data. */
#define OSPREY_EVENT_IN(s, type) ((type *)((char *)(s)->data - sizeof(type)))

static __always_inline struct osprey_scratch *osprey_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&osprey_scratch_map, &zero);
}

static __always_inline struct osprey_counters *osprey_counters_for(__u32 kind)
{
	return bpf_map_lookup_elem(&osprey_stats, &kind);
}

/* Filter on pid/uid/comm; counts what it rejects so nothing vanishes unexplained. */
static __always_inline bool osprey_target_match(__u32 kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (target_pid && (__u32)(pid_tgid >> 32) != target_pid)
		return false;
	if (target_uid != (__u32)-1 && (__u32)bpf_get_current_uid_gid() != target_uid)
		return false;
	if (target_cgroups_set) {
		__u64 cgroup_id = bpf_get_current_cgroup_id();
		if (bpf_map_lookup_elem(&osprey_cgroup_drop, &cgroup_id))
			return false;
	}
	if (target_comm_set) {
		char comm[OSPREY_COMM_LEN];
		bpf_get_current_comm(comm, sizeof(comm));
		for (int i = 0; i < OSPREY_COMM_LEN; i++) {
			if (comm[i] != target_comm[i])
				return false;
			if (!comm[i])
				break;
		}
	}
	return true;
}

/* Token bucket: burst = one second of rate. Races between CPUs on one process only
 * make the limit approximate; every event is still counted exactly once. */
static __always_inline bool osprey_bucket_take(struct osprey_bucket *b, __u64 rate, __u64 now)
{
	const __u64 cap = rate * 1000000000ULL;
	__u64 elapsed = now - b->last_ns;
	__u64 tokens = b->tokens_nano;
	if (elapsed > 1000000000ULL)
		tokens = cap;
	else
		tokens += elapsed * rate;
	if (tokens > cap)
		tokens = cap;
	b->last_ns = now;
	if (tokens < 1000000000ULL) {
		b->tokens_nano = tokens;
		return false;
	}
	b->tokens_nano = tokens - 1000000000ULL;
	return true;
}

/* One limit for the machine (no locks in tracing programs): a counter per second that
 * every CPU adds to atomically. CPUs racing at the turn of a second or on the last
 * tokens make it approximate by a few events; every event is still counted once. */
static __always_inline bool osprey_global_allow(__u64 now)
{
	__u32 zero = 0;
	struct osprey_window *w = bpf_map_lookup_elem(&osprey_global_window, &zero);
	if (!w)
		return true;
	__u64 second = now / 1000000000ULL;
	if (*(volatile __u64 *)&w->second != second) {
		w->second = second;
		w->count = 0;
	}
	__sync_fetch_and_add(&w->count, 1);
	return *(volatile __u64 *)&w->count <= rate_global;
}

static __always_inline bool osprey_rate_allow(void)
{
	__u64 now = bpf_ktime_get_ns();
	if (rate_global && !osprey_global_allow(now))
		return false;
	if (rate_per_process) {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		struct osprey_bucket *b = bpf_map_lookup_elem(&osprey_buckets, &tgid);
		if (!b) {
			struct osprey_bucket fresh = {
				.tokens_nano = rate_per_process * 1000000000ULL - 1000000000ULL,
				.last_ns = now,
			};
			bpf_map_update_elem(&osprey_buckets, &tgid, &fresh, BPF_ANY);
			return true;
		}
		return osprey_bucket_take(b, rate_per_process, now);
	}
	return true;
}

/* Gate for kinds that may be throttled: filter, then rate limit, counting both. */
static __always_inline bool osprey_should_emit(__u32 kind)
{
	struct osprey_counters *c = osprey_counters_for(kind);
	if (!osprey_target_match(kind)) {
		if (c)
			c->filtered++;
		return false;
	}
	if ((rate_per_process || rate_global) && !osprey_rate_allow()) {
		if (c)
			c->throttled++;
		return false;
	}
	return true;
}

static __always_inline void osprey_fill_header(struct osprey_event_header *h, __u32 kind,
					       struct task_struct *task)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	h->kind = kind;
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->_pad = 0;
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/*
 * Copy `size` bytes of `event` to the ring. No wake-up per event: the reader is woken
 * when it sleeps idle (see osprey_reader_idle) or when this record makes the queue cross
 * wake_threshold; while it is busy, a short timer in user space drains the rest. A full
 * ring is counted, never silent.
 */
static __always_inline void osprey_emit(void *event, __u64 size)
{
	struct osprey_event_header *h = event;
	__u32 kind = h->kind;
	struct osprey_counters *c = osprey_counters_for(kind);
	__u32 zero = 0;
	__u32 *idle = bpf_map_lookup_elem(&osprey_reader_idle, &zero);
	bool wake = false;
	if (idle && *idle) {
		*idle = 0; /* racing CPUs may both wake it: harmless */
		wake = true;
	}
	__u64 queued = bpf_ringbuf_query(&osprey_events, BPF_RB_AVAIL_DATA);
	if (queued < wake_threshold && queued + size + 8 >= wake_threshold)
		wake = true;
	__u64 flags = wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	h->size = size;
	if (bpf_ringbuf_output(&osprey_events, event, size, flags)) {
		if (c)
			c->dropped++;
	} else if (c) {
		c->emitted++;
	}
}

/*
 * Two builds of every capability object from the same sources (bpf/Makefile):
 *   modern: needs the kernel's bpf_get_current_task_btf (5.11), atomic or/fetch
 *           instructions (5.12) and callback references (5.13), e.g. bpf_loop's;
 *   compat (OSPREY_COMPAT): none of those, for 5.10-class kernels. The task comes from
 *           bpf_get_current_task (fields read through CO-RE), walks are bounded loops,
 *           atomic ORs are plain read-modify-writes.
 * User space loads the compat object where the kernel lacks what the modern one needs
 * (crates/osprey/src/kernel/variant.rs).
 */
#ifdef OSPREY_COMPAT
#define osprey_current_task() ((struct task_struct *)bpf_get_current_task())
/* x86-64 task_pt_regs() (bpf_task_pt_regs is 5.15): the user registers sit at the top of
 * the task's 16 KiB kernel stack. Read them through CO-RE only. */
static __always_inline struct pt_regs *osprey_task_pt_regs(struct task_struct *task)
{
	char *stack = BPF_CORE_READ(task, stack);
	return (struct pt_regs *)(stack + 16384) - 1;
}
/* OR into a shared word; a racing update may be lost (callers tolerate that). */
#define OSPREY_ATOMIC_OR(ptr, bits) (*(ptr) |= (bits))
#else
#define osprey_current_task() bpf_get_current_task_btf()
#define osprey_task_pt_regs(task) ((struct pt_regs *)bpf_task_pt_regs(task))
#define OSPREY_ATOMIC_OR(ptr, bits) __sync_fetch_and_or((ptr), (bits))
#endif
#define osprey_current_pt_regs() osprey_task_pt_regs((struct task_struct *)osprey_current_task())

/* task_struct's state field: `__state` since 5.14, `state` before. */
struct task_struct___pre_5_14 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline long osprey_task_state(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return BPF_CORE_READ(task, __state);
	return BPF_CORE_READ((struct task_struct___pre_5_14 *)task, state);
}

/*
 * Bounded walks (path components, ancestor directories) run their body through bpf_loop
 * where the kernel has it (5.17+): the verifier then checks the body once instead of once
 * per iteration, which was most of the agent's start-up. Elsewhere the same body runs in
 * a bounded loop. User space sets this from the kernel's BTF. (Kernels before 5.13 refuse
 * the callback reference itself, whichever branch runs: the compat build has none.)
 */
const volatile __u8 osprey_has_bpf_loop = 0;

/* Runs step(i, ctx) for i < n until it returns non-zero. */
#define OSPREY_BOUNDED_LOOP(n, step, ctx)                                              \
	for (__u32 _i = 0; _i < (n); _i++)                                             \
		if ((step)(_i, (ctx)))                                                 \
			break;
#ifdef OSPREY_COMPAT
#define OSPREY_LOOP(n, step, ctx)                                                      \
	do {                                                                           \
		OSPREY_BOUNDED_LOOP(n, step, ctx)                                      \
	} while (0)
#else
#define OSPREY_LOOP(n, step, ctx)                                                      \
	do {                                                                           \
		if (osprey_has_bpf_loop) {                                             \
			bpf_loop((n), (step), (ctx), 0);                               \
		} else {                                                               \
			OSPREY_BOUNDED_LOOP(n, step, ctx)                              \
		}                                                                      \
	} while (0)
#endif

/*
 * Write the path of (mnt, dentry) into s->data at s->off as NUL-terminated components,
 * leaf first, crossing mount points up to the global root. Loop state lives in the
 * per-CPU map value, not in registers: in the bounded loop the verifier then sees the same
 * state at the top of every iteration whichever branch ran, so it verifies linearly.
 * Returns the depth written; sets *truncated when the walk did not reach the root.
 */
#define OSPREY_MAX_DEPTH 64
#define OSPREY_NAME_MAX 256

struct osprey_walk {
	struct osprey_scratch *s;
	__u32 limit;
};

/* One component (or one mount crossing); non-zero stops the walk. */
static long osprey_walk_step(__u32 i, void *ctx)
{
	struct osprey_walk *w = ctx;
	struct osprey_scratch *s = w->s;
	struct mount *mnt = (struct mount *)s->walk_mnt;
	struct dentry *d = (struct dentry *)s->walk_dentry;
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == mnt_root || d == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (d != mnt_root || mnt == mnt_parent) {
			s->walk_done = 1; /* reached "/" (or a detached root) */
			return 1;
		}
		s->walk_dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		s->walk_mnt = (__u64)mnt_parent;
		return 0;
	}
	__u32 off = s->off;
	if (off + OSPREY_NAME_MAX > w->limit)
		return 1;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	long n = bpf_probe_read_kernel_str(s->data + OSPREY_MASK(off), OSPREY_NAME_MAX, name);
	if (n <= 0)
		return 1;
	s->off = off + n;
	s->walk_depth++;
	s->walk_dentry = (__u64)parent;
	return 0;
}

static __always_inline __u16 osprey_walk_path(struct osprey_scratch *s, struct vfsmount *vfsmnt,
					      struct dentry *dentry, __u32 limit,
					      bool *truncated)
{
	s->walk_mnt = (__u64)container_of(vfsmnt, struct mount, mnt);
	s->walk_dentry = (__u64)dentry;
	s->walk_depth = 0;
	s->walk_done = 0;
	struct osprey_walk w = { .s = s, .limit = limit };
	OSPREY_LOOP(OSPREY_MAX_DEPTH, osprey_walk_step, &w);
	*truncated = !s->walk_done;
	return s->walk_depth;
}

static __always_inline struct file *osprey_fd_file(struct task_struct *task, long fd)
{
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	unsigned int max = BPF_CORE_READ(task, files, fdt, max_fds);
	struct file *f = NULL;
	if (fd < 0 || fd >= max)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/*
 * Hook variants for one sys_exit handler `fn(struct pt_regs *regs, long ret)`, best first:
 *   prefix_sc:  one program attached (by user space) to syscalls/sys_exit_NAME of each
 *               syscall the capability needs: the kernel tests its per-syscall bitmap
 *               before calling it, so other syscalls do not run it at all;
 *   prefix_btf, prefix_raw, prefix_tp: tp_btf, raw_tp and classic raw_syscalls hooks that
 *               run on every syscall and return at once unless prefix_nrs has its bit.
 * Arguments are read from the saved user registers at exit, so one program sees arguments
 * and result together. User space sets prefix_nrs from the capability's syscall list
 * (crates/osprey/src/kernel/hooks.rs); all bits set until it does.
 */
#define OSPREY_NR_WORDS 8 /* syscall numbers below 512 */

static __always_inline bool osprey_nr_wanted(const volatile __u64 *nrs, long nr)
{
	if ((unsigned long)nr >= OSPREY_NR_WORDS * 64)
		return false;
	return nrs[nr >> 6] & (1ULL << (nr & 63));
}

/* The record of every syscalls/sys_enter_NAME and sys_exit_NAME tracepoint (tracefs
 * events/syscalls/.../format): the same layout for every syscall. */
struct osprey_sc_enter {
	__u64 common;
	int nr;
	int _pad;
	unsigned long args[6];
};

struct osprey_sc_exit {
	__u64 common;
	int nr;
	int _pad;
	long ret;
};

/* What the raw_tp variants hand their handler: in the modern build the same registers as a
 * BTF-typed pointer (the raw argument is untyped for the verifier), so that every variant's
 * handler may read them with direct loads. */
#ifdef OSPREY_COMPAT
#define OSPREY_RAW_REGS(regs) (regs)
#else
#define OSPREY_RAW_REGS(regs) osprey_current_pt_regs()
#endif

#define OSPREY_NR_FILTER(prefix)                                                       \
	const volatile __u64 prefix##_nrs[OSPREY_NR_WORDS] = {                         \
		[0 ... OSPREY_NR_WORDS - 1] = ~0ULL                                    \
	};

/* The same for a sys_enter handler `fn(struct pt_regs *regs, long id)`. */
#define OSPREY_SYS_ENTER_PROGS(prefix, fn)                                             \
	OSPREY_NR_FILTER(prefix)                                                       \
	SEC("tracepoint/syscalls/sys_enter")                                           \
	int prefix##_sc(struct osprey_sc_enter *ctx)                                   \
	{                                                                              \
		return fn(osprey_current_pt_regs(), ctx->nr);                          \
	}                                                                              \
	SEC("tp_btf/sys_enter")                                                        \
	int BPF_PROG(prefix##_btf, struct pt_regs *regs, long id)                     \
	{                                                                              \
		if (!osprey_nr_wanted(prefix##_nrs, id))                               \
			return 0;                                                      \
		return fn(regs, id);                                                   \
	}                                                                              \
	SEC("raw_tp/sys_enter")                                                        \
	int BPF_PROG(prefix##_raw, struct pt_regs *regs, long id)                     \
	{                                                                              \
		if (!osprey_nr_wanted(prefix##_nrs, id))                               \
			return 0;                                                      \
		return fn(OSPREY_RAW_REGS(regs), id);                                  \
	}                                                                              \
	SEC("tracepoint/raw_syscalls/sys_enter")                                       \
	int prefix##_tp(struct trace_event_raw_sys_enter *ctx)                         \
	{                                                                              \
		if (!osprey_nr_wanted(prefix##_nrs, ctx->id))                          \
			return 0;                                                      \
		return fn(osprey_current_pt_regs(), ctx->id);                          \
	}

#define OSPREY_SYS_EXIT_PROGS(prefix, fn)                                              \
	OSPREY_NR_FILTER(prefix)                                                       \
	SEC("tracepoint/syscalls/sys_exit")                                            \
	int prefix##_sc(struct osprey_sc_exit *ctx)                                    \
	{                                                                              \
		return fn(osprey_current_pt_regs(), ctx->ret);                         \
	}                                                                              \
	SEC("tp_btf/sys_exit")                                                         \
	int BPF_PROG(prefix##_btf, struct pt_regs *regs, long ret)                    \
	{                                                                              \
		if (!osprey_nr_wanted(prefix##_nrs, regs->orig_ax))                    \
			return 0;                                                      \
		return fn(regs, ret);                                                  \
	}                                                                              \
	SEC("raw_tp/sys_exit")                                                         \
	int BPF_PROG(prefix##_raw, struct pt_regs *regs, long ret)                    \
	{                                                                              \
		if (!osprey_nr_wanted(prefix##_nrs, BPF_CORE_READ(regs, orig_ax)))     \
			return 0;                                                      \
		return fn(OSPREY_RAW_REGS(regs), ret);                                 \
	}                                                                              \
	SEC("tracepoint/raw_syscalls/sys_exit")                                        \
	int prefix##_tp(struct trace_event_raw_sys_exit *ctx)                          \
	{                                                                              \
		if (!osprey_nr_wanted(prefix##_nrs, ctx->id))                          \
			return 0;                                                      \
		return fn(osprey_current_pt_regs(), ctx->ret);                         \
	}

/*
 * The syscall number and arguments from the saved user registers (x86-64: the block from
 * r10 to orig_ax of struct pt_regs, a fixed ABI), read at once instead of one read per
 * register.
 */
struct osprey_sys_regs {
	unsigned long r10, r9, r8, ax, cx, dx, si, di, orig_ax;
};

/* Modern build: `regs` must be the kernel's BTF-typed pointer (every OSPREY_SYS_*_PROGS
 * variant passes one there), read with direct loads; compat: one probe read. */
static __always_inline void osprey_read_sys_regs(struct pt_regs *regs, struct osprey_sys_regs *out)
{
#ifdef OSPREY_COMPAT
	if (bpf_probe_read_kernel(out, sizeof(*out),
				  (char *)regs + bpf_core_field_offset(struct pt_regs, r10)))
		__builtin_memset(out, 0, sizeof(*out));
#else
	out->r10 = regs->r10;
	out->r9 = regs->r9;
	out->r8 = regs->r8;
	out->ax = regs->ax;
	out->cx = regs->cx;
	out->dx = regs->dx;
	out->si = regs->si;
	out->di = regs->di;
	out->orig_ax = regs->orig_ax;
#endif
}

#define OSPREY_SYS_ARG1(r) ((r)->di)
#define OSPREY_SYS_ARG2(r) ((r)->si)
#define OSPREY_SYS_ARG3(r) ((r)->dx)
#define OSPREY_SYS_ARG4(r) ((r)->r10)

/*
 * osprey_fill_header(h, kind, the current task), cheaper where the kernel allows: the
 * modern build reads the task's fields with direct (BTF) loads instead of a helper call
 * or probe read per field; the values are the same.
 */
static __always_inline void osprey_fill_header_current(struct osprey_event_header *h,
						       __u32 kind)
{
#ifdef OSPREY_COMPAT
	osprey_fill_header(h, kind, (struct task_struct *)bpf_get_current_task());
#else
	struct task_struct *task = bpf_get_current_task_btf();
	const struct cred *cred = task->cred;
	h->kind = kind;
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	h->pid = task->tgid;
	h->tid = task->pid;
	h->ppid = task->real_parent->tgid;
	h->uid = cred->uid.val;
	h->gid = cred->gid.val;
	h->_pad = 0;
	h->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	__u64 *comm = (__u64 *)task->comm;
	((__u64 *)h->comm)[0] = comm[0];
	((__u64 *)h->comm)[1] = comm[1];
#endif
}

#endif
