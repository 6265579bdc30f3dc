/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* File opens: open, openat, openat2, creat, seen once at syscall exit. */
#include "osprey.h"

#define NR_OPEN 2
#define NR_CREAT 85
#define NR_OPENAT 257
#define NR_OPENAT2 437
#define AT_FDCWD -100
#define ERR_EPERM 1
#define O_CREAT_WRONLY_TRUNC (0100 | 01 | 01000)

struct open_how_user {
	__u64 flags;
	__u64 mode;
	__u64 resolve;
};

/*
 * Optional prefilter (off unless user space sets prefilter_enabled, e.g. `osprey secure`):
 * only successful opens with any of prefilter_open_flags (O_CREAT, O_WRONLY, ...) or of a
 * file whose own inode, or any ancestor directory's, is in files_prefilter_inodes, or
 * whose name is in files_prefilter_names, reach the ring. Failed opens pass only with
 * EPERM (a deny); everything else is counted as filtered.
 */
#define PREFILTER_NAME_LEN 32
const volatile __u8 prefilter_enabled = 0;
const volatile __u32 prefilter_open_flags = 0;

struct prefilter_inode {
	__u64 ino;
	__u32 dev; /* kernel encoding (MKDEV: major << 20 | minor) */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct prefilter_inode);
	__type(value, __u8);
} files_prefilter_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, char[PREFILTER_NAME_LEN]);
	__type(value, __u8);
} files_prefilter_names SEC(".maps");

static __always_inline bool prefilter_inode_hit(struct dentry *d)
{
	struct prefilter_inode key = {
		.ino = BPF_CORE_READ(d, d_inode, i_ino),
		.dev = BPF_CORE_READ(d, d_sb, s_dev),
	};
	return bpf_map_lookup_elem(&files_prefilter_inodes, &key) != NULL;
}

/* One directory of the walk from the opened file up to the root (crossing mounts), state
 * in map memory as in osprey_walk_path; non-zero stops it. */
static long prefilter_step(__u32 i, void *ctx)
{
	struct osprey_scratch *s = ((struct osprey_walk *)ctx)->s;
	struct mount *mnt = (struct mount *)s->walk_mnt;
	struct dentry *d = (struct dentry *)s->walk_dentry;
	if (prefilter_inode_hit(d)) {
		s->walk_done = 1;
		return 1;
	}
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == mnt_root || d == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (d != mnt_root || mnt == mnt_parent)
			return 1;
		s->walk_dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		s->walk_mnt = (__u64)mnt_parent;
		return 0;
	}
	s->walk_dentry = (__u64)parent;
	return 0;
}

static __always_inline bool prefilter_pass(struct osprey_scratch *s, struct file *f)
{
	char name[PREFILTER_NAME_LEN] = {};
	struct dentry *leaf = BPF_CORE_READ(f, f_path.dentry);
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(leaf, d_name.name));
	if (bpf_map_lookup_elem(&files_prefilter_names, name))
		return true;
	s->walk_mnt = (__u64)container_of(BPF_CORE_READ(f, f_path.mnt), struct mount, mnt);
	s->walk_dentry = (__u64)leaf;
	s->walk_done = 0;
	struct osprey_walk w = { .s = s };
	OSPREY_LOOP(OSPREY_MAX_DEPTH, prefilter_step, &w);
	return s->walk_done;
}

/* The open flags of syscall `op` (creat's are implied). */
static __always_inline __u32 open_flags_of(struct osprey_sys_regs *regs, __u16 op)
{
	if (op == OSPREY_OPEN)
		return (__u32)OSPREY_SYS_ARG2(regs);
	if (op == OSPREY_CREAT)
		return O_CREAT_WRONLY_TRUNC;
	if (op == OSPREY_OPENAT)
		return (__u32)OSPREY_SYS_ARG3(regs);
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)OSPREY_SYS_ARG3(regs));
	return (__u32)flags;
}

static __always_inline int on_open_exit(struct pt_regs *user_regs, long ret)
{
	struct osprey_sys_regs r;
	struct osprey_sys_regs *regs = &r;
	osprey_read_sys_regs(user_regs, regs);
	long nr = regs->orig_ax;
	__u16 op;
	if (nr == NR_OPENAT)
		op = OSPREY_OPENAT;
	else if (nr == NR_OPEN)
		op = OSPREY_OPEN;
	else if (nr == NR_OPENAT2)
		op = OSPREY_OPENAT2;
	else if (nr == NR_CREAT)
		op = OSPREY_CREAT;
	else
		return 0;
	if (!osprey_should_emit(OSPREY_KIND_FILE_OPEN))
		return 0;

	struct osprey_scratch *s = osprey_scratch();
	if (!s)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (prefilter_enabled) {
		struct file *opened = ret >= 0 ? osprey_fd_file(task, ret) : NULL;
		/* EPERM on open is what a deny (BPF LSM, fanotify) returns: always worth a look. */
		bool by_flags = opened && prefilter_open_flags &&
				(open_flags_of(regs, op) & prefilter_open_flags);
		if (ret != -ERR_EPERM && !by_flags && (!opened || !prefilter_pass(s, opened))) {
			struct osprey_counters *c = osprey_counters_for(OSPREY_KIND_FILE_OPEN);
			if (c)
				c->filtered++;
			return 0;
		}
	}
	struct osprey_file_open *ev = OSPREY_EVENT_IN(s, struct osprey_file_open);
	osprey_fill_header_current(&ev->hdr, OSPREY_KIND_FILE_OPEN);

	const char *path;
	ev->op = op;
	ev->ret = ret;
	ev->resolve = 0;
	ev->status = 0;
	ev->ino = 0;
	ev->dev = 0;
	ev->_pad = 0;
	if (op == OSPREY_OPEN || op == OSPREY_CREAT) {
		ev->dirfd = AT_FDCWD;
		path = (const char *)OSPREY_SYS_ARG1(regs);
		if (op == OSPREY_OPEN) {
			ev->flags = (__u32)OSPREY_SYS_ARG2(regs);
			ev->mode = OSPREY_SYS_ARG3(regs);
		} else {
			ev->flags = O_CREAT_WRONLY_TRUNC;
			ev->mode = OSPREY_SYS_ARG2(regs);
		}
	} else {
		ev->dirfd = OSPREY_SYS_ARG1(regs);
		path = (const char *)OSPREY_SYS_ARG2(regs);
		if (op == OSPREY_OPENAT) {
			ev->flags = (__u32)OSPREY_SYS_ARG3(regs);
			ev->mode = OSPREY_SYS_ARG4(regs);
		} else {
			struct open_how_user how = {};
			bpf_probe_read_user(&how, sizeof(how),
					    (void *)OSPREY_SYS_ARG3(regs));
			ev->flags = how.flags;
			ev->mode = how.mode;
			ev->resolve = how.resolve;
		}
	}
	ev->mode &= 07777;

	long n = bpf_probe_read_user_str(s->data, OSPREY_PATH_MAX, path);
	if (n <= 0) {
		n = 1;
		s->data[0] = 0;
		ev->status |= OSPREY_ST_PATH_UNREADABLE;
	} else if (n == OSPREY_PATH_MAX) {
		ev->status |= OSPREY_ST_PATH_TRUNCATED;
	}
	ev->path_len = n - 1;

	/* Resolve: the opened file's own path when it succeeded, else the directory the
	 * relative path was looked up from, for user space to join. */
	s->off = n;
	bool truncated = false;
	__u16 depth = 0;
	if (ret >= 0) {
		struct file *f = osprey_fd_file(task, ret);
		if (f) {
			struct inode *inode = BPF_CORE_READ(f, f_inode);
			ev->ino = BPF_CORE_READ(inode, i_ino);
			ev->dev = BPF_CORE_READ(inode, i_sb, s_dev);
			depth = osprey_walk_path(s, BPF_CORE_READ(f, f_path.mnt),
						 BPF_CORE_READ(f, f_path.dentry), OSPREY_DATA_CAP,
						 &truncated);
			ev->status |= OSPREY_ST_RESOLVED_FROM_FILE;
		}
	} else if (s->data[0] != '/' && !(ev->status & OSPREY_ST_PATH_UNREADABLE)) {
		struct vfsmount *mnt = NULL;
		struct dentry *dentry = NULL;
		if (ev->dirfd == AT_FDCWD) {
			mnt = BPF_CORE_READ(task, fs, pwd.mnt);
			dentry = BPF_CORE_READ(task, fs, pwd.dentry);
		} else {
			struct file *dir = osprey_fd_file(task, ev->dirfd);
			if (dir) {
				mnt = BPF_CORE_READ(dir, f_path.mnt);
				dentry = BPF_CORE_READ(dir, f_path.dentry);
			}
		}
		if (mnt && dentry) {
			depth = osprey_walk_path(s, mnt, dentry, OSPREY_DATA_CAP, &truncated);
			ev->status |= OSPREY_ST_RESOLVED_BASE_DIR;
		}
	}
	if (truncated)
		ev->status |= OSPREY_ST_RESOLVED_TRUNCATED;
	ev->resolved_depth = depth;
	__u32 off = s->off;
	ev->resolved_len = off - n;
	osprey_emit(ev, sizeof(*ev) + OSPREY_MASK(off));
	return 0;
}

/* With the prefilter on, an open that failed (other than with EPERM) is counted as
 * filtered before anything is read: the cheapest way out for most opens the rules never see. */
static __always_inline int on_open_exit_gated(struct pt_regs *regs, long ret)
{
	if (prefilter_enabled && ret < 0 && ret != -ERR_EPERM) {
		struct osprey_counters *c = osprey_counters_for(OSPREY_KIND_FILE_OPEN);
		if (c)
			c->filtered++;
		return 0;
	}
	return on_open_exit(regs, ret);
}

/* Best where allowed: runs only for opens, not for every syscall exit. The user registers
 * still hold the syscall's arguments, so the same handler serves. */
SEC("fexit/do_sys_openat2")
int BPF_PROG(files_open_fexit, int dfd, const char *filename, struct open_how *how, long ret)
{
	return on_open_exit_gated(osprey_current_pt_regs(), ret);
}

SEC("kretprobe/do_sys_openat2")
int BPF_KRETPROBE(files_open_kretprobe, long ret)
{
	return on_open_exit_gated(osprey_current_pt_regs(), ret);
}

OSPREY_SYS_EXIT_PROGS(files_open, on_open_exit_gated)
