/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Process lifecycle: exec (successful and failed), fork of new processes, exit. */
#include "osprey.h"

#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define S_IFMT 0170000
#define S_IFSOCK 0140000
#define MAX_FAILED_ARGS 32

static __always_inline __u16 stdio_socket_bits(struct task_struct *task)
{
	__u16 bits = 0;
	for (int fd = 0; fd < 3; fd++) {
		struct file *f = osprey_fd_file(task, fd);
		if (!f)
			continue;
		umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
		if ((mode & S_IFMT) == S_IFSOCK)
			bits |= 1 << fd;
	}
	return bits;
}

static __always_inline struct osprey_exec *exec_begin(struct osprey_scratch *s,
						      struct task_struct *task)
{
	struct osprey_exec *ev = OSPREY_EVENT_IN(s, struct osprey_exec);
	osprey_fill_header(&ev->hdr, OSPREY_KIND_EXEC, task);
	ev->status = 0;
	ev->ino = 0;
	ev->dev = 0;
	ev->exe_len = 0;
	ev->exe_depth = 0;
	ev->env_len = 0;
	ev->_pad[0] = ev->_pad[1] = ev->_pad[2] = 0;
	ev->stdio_sockets = stdio_socket_bits(task);
	return ev;
}

/*
 * Allow-listed environment variables, copied at a successful exec when a rule asks for
 * them (user space sets exec_env_enabled). A variable is copied when its first 8 bytes
 * are one of ENV_PREFIXES; user space keeps the exact names (process::env::ALLOWED).
 */
#define ENV_VARS_MAX 128  /* variables looked at per exec */
#define ENV_VAR_MAX 512   /* bytes of one copied variable, NUL included */
#define ENV_BYTES_MAX 2048 /* bytes of all copied variables */
const volatile __u8 exec_env_enabled = 0;

#define P8(a, b, c, d, e, f, g, h)                                                         \
	((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 |               \
	 (__u64)(e) << 32 | (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)

static __always_inline bool env_wanted(__u64 head)
{
	return head == P8('L', 'D', '_', 'P', 'R', 'E', 'L', 'O') ||
	       head == P8('L', 'D', '_', 'L', 'I', 'B', 'R', 'A') ||
	       head == P8('L', 'D', '_', 'A', 'U', 'D', 'I', 'T') ||
	       head == P8('P', 'Y', 'T', 'H', 'O', 'N', 'P', 'A') ||
	       head == P8('P', 'Y', 'T', 'H', 'O', 'N', 'H', 'O') ||
	       head == P8('P', 'Y', 'T', 'H', 'O', 'N', 'S', 'T') ||
	       head == P8('P', 'E', 'R', 'L', '5', 'L', 'I', 'B') ||
	       head == P8('P', 'E', 'R', 'L', '5', 'O', 'P', 'T') ||
	       head == P8('R', 'U', 'B', 'Y', 'L', 'I', 'B', '=') ||
	       head == P8('R', 'U', 'B', 'Y', 'O', 'P', 'T', '=') ||
	       head == P8('N', 'O', 'D', 'E', '_', 'O', 'P', 'T') ||
	       head == P8('J', 'A', 'V', 'A', '_', 'T', 'O', 'O') ||
	       head == P8('B', 'A', 'S', 'H', '_', 'E', 'N', 'V') ||
	       head == P8('G', 'C', 'O', 'N', 'V', '_', 'P', 'A') ||
	       head == P8('G', 'L', 'I', 'B', 'C', '_', 'T', 'U') ||
	       head == P8('H', 'T', 'T', 'P', '_', 'P', 'R', 'O') ||
	       head == P8('H', 'T', 'T', 'P', 'S', '_', 'P', 'R') ||
	       head == P8('h', 't', 't', 'p', '_', 'p', 'r', 'o') ||
	       head == P8('h', 't', 't', 'p', 's', '_', 'p', 'r');
}

struct env_scan {
	struct osprey_scratch *s;
	__u64 cur;
	__u64 end;
	__u32 start; /* s->off where the copied variables begin */
};

/* One variable: read it where the next kept one would go, keep it if wanted. */
static long env_step(__u32 i, void *ctx)
{
	struct env_scan *e = ctx;
	struct osprey_scratch *s = e->s;
	if (e->cur >= e->end)
		return 1;
	__u32 off = s->off;
	if (off - e->start + ENV_VAR_MAX > ENV_BYTES_MAX || off + ENV_VAR_MAX > OSPREY_DATA_CAP)
		return 1;
	char *var = s->data + OSPREY_MASK(off);
	long n = bpf_probe_read_user_str(var, ENV_VAR_MAX, (void *)e->cur);
	if (n <= 0)
		return 1;
	/* One helper call per variable: the name is compared where it was copied to. */
	__u64 head;
	__builtin_memcpy(&head, var, sizeof(head));
	if (n > (long)sizeof(head) && env_wanted(head))
		s->off = off + n;
	/* A longer variable was cut: the rest is skipped as if it were the next one. */
	e->cur += n == ENV_VAR_MAX ? n - 1 : n;
	return 0;
}

static __always_inline void copy_env(struct osprey_scratch *s, struct osprey_exec *ev,
				     struct mm_struct *mm)
{
	struct env_scan e = {
		.s = s,
		.cur = BPF_CORE_READ(mm, env_start),
		.end = BPF_CORE_READ(mm, env_end),
		.start = s->off,
	};
	OSPREY_LOOP(ENV_VARS_MAX, env_step, &e);
	if (e.cur < e.end)
		ev->status |= OSPREY_ST_ENV_TRUNCATED;
	ev->env_len = s->off - e.start;
}

/* Successful exec: the new image is in place, so argv comes from its mm. */
static __always_inline int on_exec(struct task_struct *task, __u32 old_tid,
				   struct linux_binprm *bprm)
{
	struct osprey_scratch *s = osprey_scratch();
	if (!s)
		return 0;
	struct osprey_exec *ev = exec_begin(s, task);
	ev->ret = 0;
	ev->old_tid = old_tid;
	ev->argc = BPF_CORE_READ(bprm, argc);

	long n = bpf_probe_read_kernel_str(s->data, OSPREY_PATH_MAX,
					   BPF_CORE_READ(bprm, filename));
	if (n <= 0) {
		n = 1;
		s->data[0] = 0;
	}
	ev->filename_len = n - 1;
	__u32 off = n;

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	__u64 start = BPF_CORE_READ(mm, arg_start);
	__u64 end = BPF_CORE_READ(mm, arg_end);
	__u64 len = end - start;
	if (len > OSPREY_ARGS_MAX - 1) {
		len = OSPREY_ARGS_MAX - 1;
		ev->status |= OSPREY_ST_ARGS_TRUNCATED;
	}
	if (bpf_probe_read_user(s->data + OSPREY_MASK(off), len & (OSPREY_ARGS_MAX - 1), (void *)start))
		len = 0;
	ev->args_len = len;
	off += len;
	s->off = off;

	struct file *exe = BPF_CORE_READ(bprm, file);
	if (exe) {
		bool truncated = false;
		struct inode *inode = BPF_CORE_READ(exe, f_inode);
		ev->ino = BPF_CORE_READ(inode, i_ino);
		ev->dev = BPF_CORE_READ(inode, i_sb, s_dev);
		ev->exe_depth = osprey_walk_path(s, BPF_CORE_READ(exe, f_path.mnt),
						 BPF_CORE_READ(exe, f_path.dentry), OSPREY_DATA_CAP,
						 &truncated);
		ev->exe_len = s->off - off;
		if (truncated)
			ev->status |= OSPREY_ST_RESOLVED_TRUNCATED;
	}
	if (exec_env_enabled)
		copy_env(s, ev, mm);
	off = s->off;
	osprey_emit(ev, sizeof(*ev) + OSPREY_MASK(off));
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(process_exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec((struct task_struct *)bpf_get_current_task(), old_pid, bprm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(process_exec_raw, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec((struct task_struct *)bpf_get_current_task(), old_pid, bprm);
}

/* Failed exec: the old image is still there, so argv is read from the caller's array. */
static __always_inline int on_exec_exit(struct pt_regs *regs, long ret)
{
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (ret >= 0 || (nr != NR_EXECVE && nr != NR_EXECVEAT))
		return 0;
	struct osprey_scratch *s = osprey_scratch();
	if (!s)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct osprey_exec *ev = exec_begin(s, task);
	ev->ret = ret;
	ev->old_tid = ev->hdr.tid;
	const char *filename;
	const char *const *argv;
	if (nr == NR_EXECVE) {
		filename = (const char *)PT_REGS_PARM1_CORE_SYSCALL(regs);
		argv = (const char *const *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	} else {
		filename = (const char *)PT_REGS_PARM2_CORE_SYSCALL(regs);
		argv = (const char *const *)PT_REGS_PARM3_CORE_SYSCALL(regs);
	}
	long n = bpf_probe_read_user_str(s->data, OSPREY_PATH_MAX, filename);
	if (n <= 0) {
		n = 1;
		s->data[0] = 0;
	}
	ev->filename_len = n - 1;
	/* offsets and counts in map memory, for the same reason as osprey_walk_path */
	s->off = n;
	s->walk_depth = 0;
	for (int i = 0; i < MAX_FAILED_ARGS; i++) {
		const char *arg = NULL;
		if (!argv || bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			break;
		__u32 off = s->off;
		if (off + OSPREY_NAME_MAX > n + OSPREY_ARGS_MAX) {
			ev->status |= OSPREY_ST_ARGS_TRUNCATED;
			break;
		}
		long m = bpf_probe_read_user_str(s->data + OSPREY_MASK(off), OSPREY_NAME_MAX, arg);
		if (m <= 0)
			break;
		if (m == OSPREY_NAME_MAX)
			ev->status |= OSPREY_ST_ARGS_TRUNCATED;
		s->off = off + m;
		s->walk_depth++;
	}
	if (s->walk_depth == MAX_FAILED_ARGS)
		ev->status |= OSPREY_ST_ARGS_TRUNCATED;
	__u32 off = s->off;
	ev->argc = s->walk_depth;
	ev->args_len = off - n;
	osprey_emit(ev, sizeof(*ev) + OSPREY_MASK(off));
	return 0;
}

OSPREY_SYS_EXIT_PROGS(process_exec_failed, on_exec_exit)

static __always_inline int on_fork(struct task_struct *child)
{
	__u32 child_pid = BPF_CORE_READ(child, tgid);
	__u32 child_tid = BPF_CORE_READ(child, pid);
	if (child_pid != child_tid)
		return 0; /* a new thread, not a new process */
	struct osprey_fork ev = {};
	osprey_fill_header(&ev.hdr, OSPREY_KIND_FORK, (struct task_struct *)bpf_get_current_task());
	ev.child_pid = child_pid;
	ev.child_tid = child_tid;
	ev.child_start_boot_ns = BPF_CORE_READ(child, start_boottime);
	osprey_emit(&ev, sizeof(ev));
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(process_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(process_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(child);
}

static __always_inline int on_exit(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* other threads of the process live on */
	struct osprey_exit ev = {};
	osprey_fill_header(&ev.hdr, OSPREY_KIND_EXIT, task);
	ev.start_boot_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	ev.exit_code = BPF_CORE_READ(task, exit_code);
	osprey_emit(&ev, sizeof(ev));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(process_exit_btf)
{
	return on_exit();
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(process_exit_raw)
{
	return on_exit();
}
