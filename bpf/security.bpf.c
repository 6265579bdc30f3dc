/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Security-relevant syscalls, one event each at syscall exit (arguments and result
 * together), plus in-kernel enforcement by SIGKILL for `kill` rules (the syscall has
 * already completed when the signal is sent: this kernel offers no way to block it).
 */
#include "osprey.h"

#define AT_FDCWD -100
#define SIGKILL 9

/* x86-64 syscall numbers */
#define NR_SOCKET 41
#define NR_CONNECT 42
#define NR_BIND 49
#define NR_LISTEN 50
#define NR_KILL 62
#define NR_TRUNCATE 76
#define NR_FTRUNCATE 77
#define NR_RENAME 82
#define NR_LINK 86
#define NR_UNLINK 87
#define NR_SYMLINK 88
#define NR_CHMOD 90
#define NR_FCHMOD 91
#define NR_CHOWN 92
#define NR_FCHOWN 93
#define NR_LCHOWN 94
#define NR_PTRACE 101
#define NR_SETUID 105
#define NR_SETGID 106
#define NR_SETREUID 113
#define NR_SETREGID 114
#define NR_SETRESUID 117
#define NR_SETRESGID 119
#define NR_SETFSUID 122
#define NR_SETFSGID 123
#define NR_CAPSET 126
#define NR_MOUNT 165
#define NR_SETXATTR 188
#define NR_LSETXATTR 189
#define NR_FSETXATTR 190
#define NR_REMOVEXATTR 197
#define NR_LREMOVEXATTR 198
#define NR_FREMOVEXATTR 199
#define NR_UMOUNT2 166
#define NR_INIT_MODULE 175
#define NR_DELETE_MODULE 176
#define NR_TKILL 200
#define NR_TGKILL 234
#define NR_FCHOWNAT 260
#define NR_UNLINKAT 263
#define NR_RENAMEAT 264
#define NR_LINKAT 265
#define NR_SYMLINKAT 266
#define NR_FCHMODAT 268
#define NR_UNSHARE 272
#define NR_SETNS 308
#define NR_PROCESS_VM_READV 310
#define NR_PROCESS_VM_WRITEV 311
#define NR_FINIT_MODULE 313
#define NR_RENAMEAT2 316
#define NR_MEMFD_CREATE 319
#define NR_BPF 321
#define NR_FCHMODAT2 452
#define NR_SETXATTRAT 463
#define NR_REMOVEXATTRAT 466

#define S_IFMT 0170000
#define S_IFSOCK 0140000

#define SOCKADDR_MAX 128

/* The fixed part lives in osprey_scratch.fixed, right before data[]. */
_Static_assert(sizeof(struct osprey_sec_syscall) <= 128, "fixed part larger than the scratch slot");

/* Never read: keeps the event struct in this object's BTF for the ABI layout test. */
struct osprey_sec_syscall *const osprey_abi_sec_syscall = 0;

/* Which arguments of a syscall are paths, directory fds, fds or socket addresses.
 * -1: none. A path is resolved against dirfd (or the cwd when dirfd is -1). */
struct arg_layout {
	__s8 path;
	__s8 dirfd;
	__s8 path2;
	__s8 fd;   /* fd whose file's own path is resolved */
	__s8 addr; /* sockaddr or xattr value pointer; its length is the next argument */
	__u8 setid;
};

static __always_inline bool layout_of(long nr, struct arg_layout *l)
{
	*l = (struct arg_layout){ -1, -1, -1, -1, -1, 0 };
	switch (nr) {
	case NR_SETUID: case NR_SETGID: case NR_SETREUID: case NR_SETREGID:
	case NR_SETRESUID: case NR_SETRESGID: case NR_SETFSUID: case NR_SETFSGID:
	case NR_CAPSET:
		l->setid = 1;
		return true;
	case NR_PTRACE: case NR_INIT_MODULE: case NR_SETNS: case NR_UNSHARE:
	case NR_KILL: case NR_TKILL: case NR_TGKILL: case NR_BPF:
	case NR_SOCKET: case NR_PROCESS_VM_READV: case NR_PROCESS_VM_WRITEV:
		return true;
	case NR_FINIT_MODULE: case NR_FCHMOD: case NR_FCHOWN: case NR_FTRUNCATE:
	case NR_LISTEN:
		l->fd = 0;
		return true;
	/* xattr calls: path2 holds the attribute name (not a path), addr the value */
	case NR_SETXATTR: case NR_LSETXATTR:
		l->path = 0;
		l->path2 = 1;
		l->addr = 2;
		return true;
	case NR_FSETXATTR:
		l->fd = 0;
		l->path2 = 1;
		l->addr = 2;
		return true;
	case NR_REMOVEXATTR: case NR_LREMOVEXATTR:
		l->path = 0;
		l->path2 = 1;
		return true;
	case NR_FREMOVEXATTR:
		l->fd = 0;
		l->path2 = 1;
		return true;
	case NR_SETXATTRAT: case NR_REMOVEXATTRAT: /* value of setxattrat: see xattrat_value */
		l->dirfd = 0;
		l->path = 1;
		l->path2 = 3;
		return true;
	case NR_DELETE_MODULE: case NR_MEMFD_CREATE:
		l->path = 0;
		l->dirfd = -2; /* a name, not a path: nothing to resolve */
		return true;
	case NR_CHMOD: case NR_CHOWN: case NR_LCHOWN: case NR_UNLINK: case NR_TRUNCATE:
	case NR_UMOUNT2:
		l->path = 0;
		return true;
	case NR_FCHMODAT: case NR_FCHMODAT2: case NR_FCHOWNAT: case NR_UNLINKAT:
		l->dirfd = 0;
		l->path = 1;
		return true;
	case NR_RENAME: case NR_LINK:
		l->path = 0;
		l->path2 = 1;
		return true;
	case NR_RENAMEAT: case NR_RENAMEAT2: case NR_LINKAT:
		l->dirfd = 0;
		l->path = 1;
		l->path2 = 3;
		return true;
	case NR_SYMLINK:
		l->path = 1;
		l->path2 = 0;
		return true;
	case NR_SYMLINKAT:
		l->dirfd = 1;
		l->path = 2;
		l->path2 = 0;
		return true;
	case NR_MOUNT:
		l->path = 1;
		l->path2 = 0;
		return true;
	case NR_CONNECT: case NR_BIND:
		l->addr = 1;
		return true;
	}
	return false;
}

/* Only bpf() commands that create or attach programs and maps (not lookups). */
static __always_inline bool bpf_cmd_wanted(__u64 cmd)
{
	return cmd == 0 /* MAP_CREATE */ || cmd == 5 /* PROG_LOAD */ ||
	       cmd == 8 /* PROG_ATTACH */ || cmd == 17 /* RAW_TRACEPOINT_OPEN */ ||
	       cmd == 18 /* BTF_LOAD */ || cmd == 28 /* LINK_CREATE */;
}

/* Real and effective uid at entry of a setid-family call, by thread. */
struct old_ids {
	__u32 uid;
	__u32 euid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct old_ids);
} sec_old_ids SEC(".maps");

/* `kill` rules compiled for the kernel: (syscall, comm) → rule index; an all-zero comm
 * matches every process. Filled from user space only with --enforce. */
struct kill_key {
	__u32 nr;
	char comm[OSPREY_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct kill_key);
	__type(value, __u32);
} sec_kill_rules SEC(".maps");

const volatile __u8 kill_rules_enabled = 0;

/* The setid-family calls that can change the real or effective uid: their old ids are
 * remembered at entry. The others (the gid calls, setfsuid, capset) leave both as they
 * were, so the ids at exit are the old ones. */
static __always_inline bool changes_uids(long nr)
{
	return nr == NR_SETUID || nr == NR_SETREUID || nr == NR_SETRESUID;
}

/* ---- per-executable syscall baselines ---- */
#define BASELINE_OFF 0
#define BASELINE_LEARN 1
#define BASELINE_DETECT 2
const volatile __u8 baseline_mode = BASELINE_OFF;
const volatile __u32 baseline_self_tgid = 0; /* osprey itself: neither learned nor judged */

struct osprey_baseline_event *const osprey_abi_baseline_event = 0;
struct osprey_baseline_key *const osprey_abi_baseline_key = 0;
struct osprey_baseline *const osprey_abi_baseline = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* 6 KiB values: allocate only what is used */
	__type(key, struct osprey_baseline_key);
	__type(value, struct osprey_baseline);
} sec_baselines SEC(".maps");

/* A zeroed value to insert from (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct osprey_baseline);
} sec_baseline_template SEC(".maps");

static __always_inline void baseline_emit(struct pt_regs *regs, struct osprey_baseline_key *key,
					  long nr, __u16 op, __u32 count, __u32 limit)
{
	struct osprey_baseline_event ev = {};
	osprey_fill_header(&ev.hdr, OSPREY_KIND_BASELINE,
			   (struct task_struct *)bpf_get_current_task());
	/* New executables and syscalls come once each per run; rates may repeat. */
	if (op == OSPREY_BL_RATE && !osprey_should_emit(OSPREY_KIND_BASELINE))
		return;
	ev.ino = key->ino;
	ev.dev = key->dev;
	ev.nr = nr;
	ev.args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	ev.args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	ev.args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	ev.args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	ev.args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
	ev.args[5] = BPF_CORE_READ(regs, r9);
	ev.count = count;
	ev.limit = limit;
	ev.op = op;
	osprey_emit(&ev, sizeof(ev));
}

/* An executable seen for the first time: learn starts an empty set for it; detect
 * allows everything from then on (it is reported once, not per syscall). */
static __always_inline struct osprey_baseline *baseline_insert(struct pt_regs *regs,
							       struct osprey_baseline_key *key,
							       long nr)
{
	__u32 zero = 0;
	struct osprey_baseline *t = bpf_map_lookup_elem(&sec_baseline_template, &zero);
	if (!t)
		return NULL;
	__u64 fill = baseline_mode == BASELINE_DETECT ? ~0ULL : 0;
	for (int i = 0; i < OSPREY_BASELINE_NR_MAX / 64; i++)
		t->allowed[i] = fill;
	t->flags = baseline_mode == BASELINE_DETECT ? OSPREY_BL_UNKNOWN : 0;
	if (bpf_map_update_elem(&sec_baselines, key, t, BPF_NOEXIST) == 0)
		baseline_emit(regs, key, nr, OSPREY_BL_NEW_EXE, 0, 0);
	if (baseline_mode == BASELINE_DETECT)
		return NULL;
	return bpf_map_lookup_elem(&sec_baselines, key);
}

/* The hot path: one hash lookup by executable, a bit test and a window counter. */
static __always_inline void baseline_check(struct pt_regs *regs, long nr)
{
	if (nr < 0 || nr >= OSPREY_BASELINE_NR_MAX)
		return;
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == baseline_self_tgid)
		return;
	struct task_struct *task = osprey_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (!mm) /* kernel thread */
		return;
	struct file *exe = BPF_CORE_READ(mm, exe_file);
	if (!exe)
		return;
	struct inode *inode = BPF_CORE_READ(exe, f_inode);
	struct osprey_baseline_key key = {
		.ino = BPF_CORE_READ(inode, i_ino),
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
	};
	struct osprey_baseline *b = bpf_map_lookup_elem(&sec_baselines, &key);
	if (!b) {
		b = baseline_insert(regs, &key, nr);
		if (!b)
			return;
	}
	__u32 idx = nr & (OSPREY_BASELINE_NR_MAX - 1);
	__u64 bit = 1ULL << (idx & 63);
	__u64 *word = &b->allowed[idx >> 6];
	if (!(*word & bit)) {
		OSPREY_ATOMIC_OR(word, bit);
		if (baseline_mode == BASELINE_DETECT)
			baseline_emit(regs, &key, nr, OSPREY_BL_OUTSIDE, 0, 0);
	}
	__u32 limit = b->peak[idx];
	if (baseline_mode == BASELINE_DETECT && !limit)
		return;
	__u32 window = bpf_ktime_get_boot_ns() >> 30;
	struct osprey_baseline_slot *slot = &b->slots[idx];
	if (slot->window != window) {
		/* Racing CPUs may each restart the window: counts are approximate, never high. */
		if (baseline_mode == BASELINE_LEARN && slot->count > limit)
			b->peak[idx] = slot->count;
		slot->window = window;
		slot->count = 1;
		return;
	}
	/* Not atomic (the fetch-add result needs -mcpu=v3): a racing increment may be lost or
	 * repeated, but the count never skips a value, so crossing the limit is always seen. */
	__u32 count = slot->count + 1;
	slot->count = count;
	if (baseline_mode == BASELINE_DETECT && count == limit + 1)
		baseline_emit(regs, &key, nr, OSPREY_BL_RATE, count, limit);
}

static __always_inline int on_sec_enter(struct pt_regs *regs, long nr)
{
	if (baseline_mode != BASELINE_OFF)
		baseline_check(regs, nr);
	if (!changes_uids(nr))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct old_ids ids = {
		.uid = (__u32)bpf_get_current_uid_gid(),
		.euid = BPF_CORE_READ(task, cred, euid.val),
	};
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&sec_old_ids, &tid, &ids, BPF_ANY);
	return 0;
}

OSPREY_SYS_ENTER_PROGS(security_enter, on_sec_enter)

static __always_inline bool kill_rule_matches(long nr, const char *comm)
{
	struct kill_key key = { .nr = nr };
	__builtin_memcpy(key.comm, comm, OSPREY_COMM_LEN);
	if (bpf_map_lookup_elem(&sec_kill_rules, &key))
		return true;
	__builtin_memset(key.comm, 0, OSPREY_COMM_LEN);
	return bpf_map_lookup_elem(&sec_kill_rules, &key) != NULL;
}

/* The directory a relative path is looked up from: dirfd's file, or the cwd. */
static __always_inline __u16 walk_base(struct osprey_scratch *s, struct task_struct *task,
				       long dirfd, bool *truncated)
{
	struct vfsmount *mnt = NULL;
	struct dentry *dentry = NULL;
	if (dirfd == AT_FDCWD || dirfd == -1) {
		mnt = BPF_CORE_READ(task, fs, pwd.mnt);
		dentry = BPF_CORE_READ(task, fs, pwd.dentry);
	} else {
		struct file *dir = osprey_fd_file(task, dirfd);
		if (dir) {
			mnt = BPF_CORE_READ(dir, f_path.mnt);
			dentry = BPF_CORE_READ(dir, f_path.dentry);
		}
	}
	if (!mnt || !dentry)
		return 0;
	return osprey_walk_path(s, mnt, dentry, OSPREY_DATA_CAP - SOCKADDR_MAX, truncated);
}

#include "fim.h"

/* The socket behind fd: its SOCK_* type and protocol (0, 0 when fd is not a socket). */
static __always_inline void sock_of_fd(struct task_struct *task, long fd,
				       struct osprey_sec_syscall *ev)
{
	struct file *f = osprey_fd_file(task, fd);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return;
	ev->sock_type = BPF_CORE_READ(sk, sk_type);
	ev->sock_proto = BPF_CORE_READ(sk, sk_protocol);
}

/* The number of `pid` in its own (innermost) namespace: what the caller's pids mean. */
static __always_inline int ns_nr(struct pid *pid)
{
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid up = {};
	if (level > 32)
		return -1;
	bpf_probe_read_kernel(&up, sizeof(up),
			      (char *)pid + bpf_core_field_offset(struct pid, numbers) +
				      level * sizeof(struct upid));
	return up.nr;
}

/* process_vm_readv/writev naming the caller itself (its process or thread id as it sees them). */
static __always_inline bool targets_self(struct task_struct *task, long pid)
{
	return pid == ns_nr(BPF_CORE_READ(task, thread_pid)) ||
	       pid == ns_nr(BPF_CORE_READ(task, group_leader, thread_pid));
}

/* The value buffer of a setxattr-family call (connect/bind: the sockaddr) and its length. */
static __always_inline __u64 user_buffer(long nr, struct arg_layout *l, __u64 *args, __u64 *len)
{
	*len = 0;
	if (l->addr >= 0 && l->addr < 5) {
		*len = args[l->addr + 1];
		return args[l->addr];
	}
	if (nr == NR_SETXATTRAT) {
		struct {
			__u64 value;
			__u32 size;
			__u32 flags;
		} xa = {};
		if (bpf_probe_read_user(&xa, sizeof(xa), (void *)args[4]))
			return 0;
		*len = xa.size;
		return xa.value;
	}
	return 0;
}

static __always_inline int on_sec_exit(struct pt_regs *regs, long ret)
{
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (fim_enabled)
		fim_on_exit(regs, nr, ret);
	struct arg_layout l;
	if (!layout_of(nr, &l))
		return 0;
	__u64 args[6];
	args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
	args[5] = BPF_CORE_READ(regs, r9);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	/* Signals to oneself and existence probes (signal 0) are not "kill of another". */
	if (nr == NR_KILL && ((__u32)args[0] == tgid || args[1] == 0 || (long)args[0] <= 0))
		return 0;
	if ((nr == NR_TKILL && args[1] == 0) || (nr == NR_TGKILL && (args[2] == 0 || (__u32)args[0] == tgid)))
		return 0;
	if (nr == NR_BPF && !bpf_cmd_wanted(args[0]))
		return 0;

	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct old_ids *old = NULL;
	if (l.setid && changes_uids(nr))
		old = bpf_map_lookup_elem(&sec_old_ids, &tid);

	struct osprey_scratch *s = osprey_scratch();
	if (!s)
		return 0;
	struct osprey_sec_syscall *ev = OSPREY_EVENT_IN(s, struct osprey_sec_syscall);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	osprey_fill_header(&ev->hdr, OSPREY_KIND_SEC_SYSCALL, task);
	ev->status = 0;
	if (kill_rules_enabled && kill_rule_matches(nr, ev->hdr.comm)) {
		bpf_send_signal(SIGKILL);
		ev->status |= OSPREY_ST_KILLED;
	} else if (!osprey_should_emit(OSPREY_KIND_SEC_SYSCALL)) {
		if (old)
			bpf_map_delete_elem(&sec_old_ids, &tid);
		return 0;
	}
	ev->ret = ret;
	ev->nr = nr;
	for (int i = 0; i < 4; i++)
		ev->args[i] = args[i];
	ev->old_uid = ev->hdr.uid;
	ev->old_euid = BPF_CORE_READ(task, cred, euid.val);
	if (old) {
		ev->old_uid = old->uid;
		ev->old_euid = old->euid;
		ev->status |= OSPREY_ST_OLD_IDS;
		bpf_map_delete_elem(&sec_old_ids, &tid);
	} else if (l.setid && !changes_uids(nr)) {
		ev->status |= OSPREY_ST_OLD_IDS; /* the call left them as they are */
	}
	ev->sock_type = 0;
	ev->sock_proto = 0;
	if (nr == NR_CONNECT || nr == NR_BIND || nr == NR_LISTEN)
		sock_of_fd(task, (long)(int)args[0], ev);
	if ((nr == NR_PROCESS_VM_READV || nr == NR_PROCESS_VM_WRITEV) &&
	    targets_self(task, (long)(int)args[0]))
		ev->status |= OSPREY_ST_TARGET_SELF;
	ev->path_len = 0;
	ev->path2_len = 0;
	ev->resolved_len = 0;
	ev->addr_len = 0;

	/* path, NUL, path2, NUL, resolved components, sockaddr */
	long n = 0;
	if (l.path >= 0 && l.path < 6) {
		n = bpf_probe_read_user_str(s->data, OSPREY_PATH_MAX, (void *)args[l.path]);
		if (n <= 0) {
			n = 0;
			ev->status |= OSPREY_ST_PATH_UNREADABLE;
		} else {
			if (n == OSPREY_PATH_MAX)
				ev->status |= OSPREY_ST_PATH_TRUNCATED;
			n -= 1;
		}
	}
	s->data[n & (OSPREY_PATH_MAX - 1)] = 0;
	ev->path_len = n;
	__u32 off = n + 1;
	long m = 0;
	if (l.path2 >= 0 && l.path2 < 6) {
		m = bpf_probe_read_user_str(s->data + (off & (OSPREY_PATH_MAX * 2 - 1)),
					    OSPREY_PATH_MAX, (void *)args[l.path2]);
		if (m <= 0)
			m = 0;
		else
			m -= 1;
	}
	s->data[(off + m) & (OSPREY_DATA_CAP - 1)] = 0;
	ev->path2_len = m;
	off += m + 1;
	s->off = off;

	/* Read here, on every path: a read hoisted into the branch below loads a stack slot
	 * that other paths leave unwritten, which verifiers before 6.3 refuse. */
	long dirfd = l.dirfd >= 0 && l.dirfd < 6 ? (long)(int)args[l.dirfd] : AT_FDCWD;
	barrier_var(dirfd);
	bool truncated = false;
	__u16 depth = 0;
	if (l.fd >= 0 && l.fd < 6) {
		struct file *f = osprey_fd_file(task, (long)args[l.fd]);
		if (f) {
			depth = osprey_walk_path(s, BPF_CORE_READ(f, f_path.mnt),
						 BPF_CORE_READ(f, f_path.dentry),
						 OSPREY_DATA_CAP - SOCKADDR_MAX, &truncated);
			ev->status |= OSPREY_ST_RESOLVED_FROM_FILE;
		}
	} else if (l.path >= 0 && l.dirfd != -2 && n > 0 && s->data[0] != '/') {
		depth = walk_base(s, task, dirfd, &truncated);
		ev->status |= OSPREY_ST_RESOLVED_BASE_DIR;
	}
	if (truncated)
		ev->status |= OSPREY_ST_RESOLVED_TRUNCATED;
	(void)depth;
	__u32 end = s->off;
	ev->resolved_len = end - off;
	__u64 len;
	__u64 ubuf = user_buffer(nr, &l, args, &len);
	if (ubuf) {
		if (len > SOCKADDR_MAX)
			len = SOCKADDR_MAX;
		/* Clang drops a plain `& 0xff` here (it knows len <= 128) and older verifiers lose
		 * the bound through a stack spill: keep the mask in the instruction stream. */
		asm volatile("%[len] &= 0xff" : [len] "+r"(len));
		end = OSPREY_MASK(end);
		if (end + SOCKADDR_MAX <= OSPREY_DATA_CAP &&
		    !bpf_probe_read_user(s->data + end, len & 0xff, (void *)ubuf)) {
			ev->addr_len = len;
			end += len;
		}
	}
	osprey_emit(ev, sizeof(*ev) + OSPREY_MASK(end));
	return 0;
}

OSPREY_SYS_EXIT_PROGS(security_exit, on_sec_exit)
