/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Deny in the kernel, before the operation, where BPF LSM is available: opens and execs of
 * inodes that `deny` rules name (or of direct children of named directories) fail with EPERM.
 * The files/process capabilities then see the failed call and user space raises the alert.
 */
#include "osprey.h"

#define EPERM 1

enum deny_flags {
	DENY_OPEN = 1 << 0,
	DENY_EXEC = 1 << 1,
	DENY_CHILDREN = 1 << 2, /* a directory: deny its direct children too */
};

struct deny_key {
	__u64 ino;
	__u32 dev; /* kernel encoding of st_dev */
	__u32 _pad;
};

struct deny_value {
	__u32 flags;
	__u32 rule; /* index of the rule, for user space */
	__u64 denied; /* how often this entry denied */
};

/* Never deny Osprey itself (it hashes and reads files for its own work). */
const volatile __u32 osprey_tgid = 0;


struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct deny_key);
	__type(value, struct deny_value);
} deny_inodes SEC(".maps");

static __always_inline bool denied_inode(struct inode *inode, __u32 want)
{
	struct deny_key key = {
		.ino = BPF_CORE_READ(inode, i_ino),
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
	};
	struct deny_value *v = bpf_map_lookup_elem(&deny_inodes, &key);
	if (v && (v->flags & want) == want) {
		__sync_fetch_and_add(&v->denied, 1);
		return true;
	}
	return false;
}

static __always_inline int decide(struct file *file, __u32 want)
{
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == osprey_tgid)
		return 0;
	if (denied_inode(BPF_CORE_READ(file, f_inode), want))
		return -EPERM;
	struct inode *dir = BPF_CORE_READ(file, f_path.dentry, d_parent, d_inode);
	if (dir && denied_inode(dir, want | DENY_CHILDREN))
		return -EPERM;
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(enforce_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	return decide(file, DENY_OPEN);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(enforce_exec, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	return decide(BPF_CORE_READ(bprm, file), DENY_EXEC);
}
