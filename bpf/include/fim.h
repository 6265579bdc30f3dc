/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * File integrity monitoring (osprey secure --watch), run from security.bpf.c's sys_exit
 * handler (included there, after its syscall numbers and walk_base).
 *
 * User space fills two maps before attaching:
 *  - fim_inodes: (dev, ino) of every watched file and directory, plus the ancestors of the
 *    watched roots. A call naming a file by fd (write family, ftruncate, fchmod, fchown)
 *    or opening one for writing costs one lookup of the file's inode.
 *  - fim_roots: the watched roots as path strings, in an LPM trie. A call naming an
 *    absolute path costs one longest-prefix lookup of that string.
 * This kernel has no kprobes/LSM, so a path cannot be resolved to an inode here. A relative
 * path passes when the directory it starts from (dirfd or cwd) is watched or is an ancestor
 * of a watched root (or when it starts with ".."). User space then resolves every path
 * exactly and drops what is not watched: the kernel may let a few extra calls through,
 * never fewer, except for the cases docs/events.md lists (absolute paths spelt with "..",
 * relative paths climbing out with ".." after their first component, mmap writes).
 */
#ifndef OSPREY_FIM_H
#define OSPREY_FIM_H

#define FIM_WATCHED_FILE 1
#define FIM_WATCHED_DIR 2
#define FIM_ANCESTOR 4 /* a directory above a watched root */
#define FIM_ROOT_MAX 256
/* One write event per (process, file) per window: a writer in a loop does not flood, and
 * user space settles a change only after a longer quiet time anyway. */
#define FIM_WRITE_WINDOW_NS (100ULL * 1000 * 1000)

#define NR_WRITE 1
#define NR_OPEN 2
#define NR_PWRITE64 18
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_MKDIR 83
#define NR_RMDIR 84
#define NR_CREAT 85
#define NR_MKNOD 133
#define NR_OPENAT 257
#define NR_MKDIRAT 258
#define NR_MKNODAT 259
#define NR_SPLICE 275
#define NR_FALLOCATE 285
#define NR_PWRITEV 296
#define NR_COPY_FILE_RANGE 326
#define NR_PWRITEV2 328
#define NR_OPENAT2 437

#define FIM_O_ACCMODE 03
#define FIM_O_CREAT 0100
#define FIM_O_TRUNC 01000

const volatile __u8 fim_enabled = 0;
const volatile __u32 fim_self_tgid = 0; /* osprey itself writes its state, not an alert */

struct osprey_fim_event *const osprey_abi_fim_event = 0;

struct fim_inode_key {
	__u64 ino;
	__u32 dev; /* kernel encoding (MKDEV) */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fim_inode_key);
	__type(value, __u8); /* FIM_WATCHED_* | FIM_ANCESTOR */
} fim_inodes SEC(".maps");

struct fim_root_key {
	__u32 prefixlen; /* bits */
	char path[FIM_ROOT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fim_root_key);
	__type(value, __u8);
} fim_roots SEC(".maps");

struct fim_write_key {
	__u64 ino;
	__u32 dev;
	__u32 tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct fim_write_key);
	__type(value, __u64); /* last event, ns */
} fim_write_seen SEC(".maps");

/* The LPM key is too large for the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fim_root_key);
} fim_root_scratch SEC(".maps");

/* Where a call's operands are: argument indexes, -1 for none; a missing dirfd means the
 * path is relative to the cwd. */
struct fim_call {
	__s8 fd;
	__s8 dirfd;
	__s8 path;
	__s8 dirfd2;
	__s8 path2;
	__s8 arg;
	__u16 op;
};

static __always_inline bool fim_call_of(long nr, struct fim_call *c)
{
	*c = (struct fim_call){ -1, -1, -1, -1, -1, -1, 0 };
	switch (nr) {
	case NR_WRITE: case NR_PWRITE64: case NR_WRITEV: case NR_SENDFILE: case NR_PWRITEV:
	case NR_PWRITEV2: case NR_FALLOCATE:
		c->fd = 0;
		c->op = OSPREY_FIM_WRITE;
		return true;
	case NR_SPLICE: case NR_COPY_FILE_RANGE:
		c->fd = 2;
		c->op = OSPREY_FIM_WRITE;
		return true;
	case NR_FTRUNCATE:
		c->fd = 0;
		c->op = OSPREY_FIM_TRUNCATE;
		return true;
	case NR_FCHMOD:
		c->fd = 0;
		c->arg = 1;
		c->op = OSPREY_FIM_CHMOD;
		return true;
	case NR_FCHOWN:
		c->fd = 0;
		c->op = OSPREY_FIM_CHOWN;
		return true;
	case NR_OPEN: case NR_CREAT: case NR_OPENAT: case NR_OPENAT2:
		c->op = OSPREY_FIM_OPEN_WRITE;
		return true;
	case NR_TRUNCATE:
		c->path = 0;
		c->op = OSPREY_FIM_TRUNCATE;
		return true;
	case NR_CHMOD:
		c->path = 0;
		c->arg = 1;
		c->op = OSPREY_FIM_CHMOD;
		return true;
	case NR_CHOWN: case NR_LCHOWN:
		c->path = 0;
		c->op = OSPREY_FIM_CHOWN;
		return true;
	case NR_FCHMODAT: case NR_FCHMODAT2:
		c->dirfd = 0;
		c->path = 1;
		c->arg = 2;
		c->op = OSPREY_FIM_CHMOD;
		return true;
	case NR_FCHOWNAT:
		c->dirfd = 0;
		c->path = 1;
		c->op = OSPREY_FIM_CHOWN;
		return true;
	case NR_UNLINK: case NR_RMDIR:
		c->path = 0;
		c->op = OSPREY_FIM_UNLINK;
		return true;
	case NR_UNLINKAT:
		c->dirfd = 0;
		c->path = 1;
		c->arg = 2;
		c->op = OSPREY_FIM_UNLINK;
		return true;
	case NR_RENAME: case NR_LINK:
		c->path = 0;
		c->path2 = 1;
		c->op = nr == NR_RENAME ? OSPREY_FIM_RENAME : OSPREY_FIM_LINK;
		return true;
	case NR_RENAMEAT: case NR_RENAMEAT2: case NR_LINKAT:
		c->dirfd = 0;
		c->path = 1;
		c->dirfd2 = 2;
		c->path2 = 3;
		c->op = nr == NR_LINKAT ? OSPREY_FIM_LINK : OSPREY_FIM_RENAME;
		return true;
	case NR_SYMLINK:
		c->path = 1;
		c->op = OSPREY_FIM_SYMLINK;
		return true;
	case NR_SYMLINKAT:
		c->dirfd = 1;
		c->path = 2;
		c->op = OSPREY_FIM_SYMLINK;
		return true;
	case NR_MKDIR: case NR_MKNOD:
		c->path = 0;
		c->op = nr == NR_MKDIR ? OSPREY_FIM_MKDIR : OSPREY_FIM_MKNOD;
		return true;
	case NR_MKDIRAT: case NR_MKNODAT:
		c->dirfd = 0;
		c->path = 1;
		c->op = nr == NR_MKDIRAT ? OSPREY_FIM_MKDIR : OSPREY_FIM_MKNOD;
		return true;
	}
	return false;
}

static __always_inline __u8 fim_inode_flags(struct inode *inode, struct fim_inode_key *key)
{
	key->ino = BPF_CORE_READ(inode, i_ino);
	key->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key->_pad = 0;
	__u8 *v = bpf_map_lookup_elem(&fim_inodes, key);
	return v ? *v : 0;
}

static __always_inline bool fim_write_due(struct fim_inode_key *k, __u32 tgid)
{
	struct fim_write_key wk = { .ino = k->ino, .dev = k->dev, .tgid = tgid };
	__u64 now = bpf_ktime_get_ns();
	__u64 *last = bpf_map_lookup_elem(&fim_write_seen, &wk);
	if (last && now - *last < FIM_WRITE_WINDOW_NS) {
		struct osprey_counters *c = osprey_counters_for(OSPREY_KIND_FIM);
		if (c)
			c->throttled++;
		return false;
	}
	bpf_map_update_elem(&fim_write_seen, &wk, &now, BPF_ANY);
	return true;
}

/* Flags of an open-family call, which has already succeeded. */
static __always_inline __u64 fim_open_flags(long nr, __u64 *args)
{
	if (nr == NR_OPEN)
		return args[1];
	if (nr == NR_CREAT)
		return FIM_O_CREAT | FIM_O_TRUNC | 1;
	if (nr == NR_OPENAT)
		return args[2];
	__u64 flags = 0; /* openat2: struct open_how starts with flags */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)args[2]);
	return flags;
}

/* May the path `copied` (as passed, at `upath` in user memory), looked up from dirfd,
 * name something watched? */
static __always_inline bool fim_path_relevant(struct task_struct *task, long dirfd,
					      const char *upath, const char *copied)
{
	if (copied[0] == '/') {
		__u32 zero = 0;
		struct fim_root_key *k = bpf_map_lookup_elem(&fim_root_scratch, &zero);
		if (!k)
			return false;
		long n = bpf_probe_read_user_str(k->path, FIM_ROOT_MAX, upath);
		if (n <= 1)
			return false;
		k->prefixlen = (n - 1) * 8;
		return bpf_map_lookup_elem(&fim_roots, k) != NULL;
	}
	if (copied[0] == '.' && copied[1] == '.')
		return true;
	struct dentry *base = NULL;
	if (dirfd == AT_FDCWD) {
		base = BPF_CORE_READ(task, fs, pwd.dentry);
	} else {
		struct file *dir = osprey_fd_file(task, dirfd);
		if (dir)
			base = BPF_CORE_READ(dir, f_path.dentry);
	}
	if (!base)
		return false;
	struct fim_inode_key key;
	return fim_inode_flags(BPF_CORE_READ(base, d_inode), &key) != 0;
}

static __always_inline long fim_dirfd(__s8 index, __u64 *args)
{
	return index >= 0 && index < 4 ? (long)(int)args[index] : AT_FDCWD;
}

/* Reads the user string at `p` into s->data at `off`; returns its length (0 if unreadable). */
static __always_inline long fim_copy_path(struct osprey_scratch *s, __u32 off, const void *p)
{
	long n = bpf_probe_read_user_str(s->data + (off & (OSPREY_PATH_MAX * 2 - 1)),
					 OSPREY_PATH_MAX, p);
	if (n <= 0) {
		s->data[off & (OSPREY_PATH_MAX * 2 - 1)] = 0;
		return 0;
	}
	return n - 1;
}

static __always_inline void fim_on_exit(struct pt_regs *regs, long nr, long ret)
{
	struct fim_call c;
	if (ret < 0 || !fim_call_of(nr, &c))
		return;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == fim_self_tgid)
		return;
	__u64 args[4];
	args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fim_inode_key key = {};
	struct file *file = NULL;
	__u16 op = c.op;
	__u64 arg = c.arg >= 0 && c.arg < 4 ? args[c.arg] : 0;

	if (op == OSPREY_FIM_OPEN_WRITE) {
		__u64 flags = fim_open_flags(nr, args);
		if (!(flags & (FIM_O_ACCMODE | FIM_O_CREAT | FIM_O_TRUNC)))
			return;
		file = osprey_fd_file(task, ret);
		if (!file)
			return;
		__u8 watched = fim_inode_flags(BPF_CORE_READ(file, f_inode), &key);
		if (!watched) {
			if (!(flags & FIM_O_CREAT))
				return;
			struct fim_inode_key dir;
			struct inode *parent = BPF_CORE_READ(file, f_path.dentry, d_parent, d_inode);
			if (!(fim_inode_flags(parent, &dir) & FIM_WATCHED_DIR))
				return;
			/* Watched from now on, so its first writes are seen too. */
			__u8 f = FIM_WATCHED_FILE;
			bpf_map_update_elem(&fim_inodes, &key, &f, BPF_NOEXIST);
			op = OSPREY_FIM_CREATE;
		} else if (!(watched & FIM_WATCHED_FILE)) {
			return;
		}
		arg = flags;
	} else if (c.fd >= 0) {
		if (op == OSPREY_FIM_WRITE && ret == 0 && nr != NR_FALLOCATE)
			return; /* nothing written */
		file = osprey_fd_file(task, (long)(int)args[c.fd & 3]);
		if (!file)
			return;
		if (!(fim_inode_flags(BPF_CORE_READ(file, f_inode), &key) &
		      (FIM_WATCHED_FILE | FIM_WATCHED_DIR)))
			return;
		if (op == OSPREY_FIM_WRITE && !fim_write_due(&key, tgid))
			return;
	}

	struct osprey_scratch *s = osprey_scratch();
	if (!s)
		return;
	struct osprey_fim_event *ev = OSPREY_EVENT_IN(s, struct osprey_fim_event);
	long n = 0, m = 0;
	if (c.path >= 0 && c.path < 4)
		n = fim_copy_path(s, 0, (void *)args[c.path]);
	__u32 off2 = n + 1;
	if (c.path2 >= 0 && c.path2 < 4)
		m = fim_copy_path(s, off2, (void *)args[c.path2]);
	else
		s->data[off2 & (OSPREY_PATH_MAX * 2 - 1)] = 0;
	if (!file) {
		bool hit = c.path >= 0 && c.path < 4 &&
			   fim_path_relevant(task, fim_dirfd(c.dirfd, args), (void *)args[c.path & 3],
					     s->data);
		if (!hit && c.path2 >= 0 && c.path2 < 4)
			hit = fim_path_relevant(task, fim_dirfd(c.dirfd2, args),
						(void *)args[c.path2 & 3],
						s->data + (off2 & (OSPREY_PATH_MAX * 2 - 1)));
		if (!hit)
			return;
	}

	osprey_fill_header(&ev->hdr, OSPREY_KIND_FIM, task);
	ev->ret = ret;
	ev->ino = key.ino;
	ev->dev = key.dev;
	ev->arg = arg;
	ev->nr = nr;
	ev->op = op;
	ev->status = 0;
	ev->path_len = n;
	ev->path2_len = m;
	ev->resolved_len = 0;
	ev->resolved2_len = 0;
	ev->_pad = 0;
	__u32 start = off2 + m + 1;
	s->off = start;
	bool truncated = false;
	if (file) {
		osprey_walk_path(s, BPF_CORE_READ(file, f_path.mnt), BPF_CORE_READ(file, f_path.dentry),
				 OSPREY_DATA_CAP - OSPREY_NAME_MAX, &truncated);
		ev->status |= OSPREY_ST_RESOLVED_FROM_FILE;
		if (truncated)
			ev->status |= OSPREY_ST_RESOLVED_TRUNCATED;
	} else if (n == 0 || s->data[0] != '/') {
		walk_base(s, task, fim_dirfd(c.dirfd, args), &truncated);
		ev->status |= OSPREY_ST_RESOLVED_BASE_DIR;
		if (truncated)
			ev->status |= OSPREY_ST_RESOLVED_TRUNCATED;
	}
	__u32 mid = s->off;
	ev->resolved_len = mid - start;
	if (!file && c.path2 >= 0 && (m == 0 || s->data[off2 & (OSPREY_PATH_MAX * 2 - 1)] != '/')) {
		truncated = false;
		walk_base(s, task, fim_dirfd(c.dirfd2, args), &truncated);
		ev->status |= OSPREY_ST_RESOLVED2_BASE_DIR;
		if (truncated)
			ev->status |= OSPREY_ST_RESOLVED2_TRUNCATED;
	}
	__u32 end = s->off;
	ev->resolved2_len = end - mid;
	osprey_emit(ev, sizeof(*ev) + OSPREY_MASK(end));
}

#endif
