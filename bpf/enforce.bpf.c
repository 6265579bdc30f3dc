/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Deny in the kernel, before the operation, where BPF LSM is available: opens and execs of
 * inodes that `deny` rules name (or of direct children of named directories) fail with EPERM.
 * The files/process capabilities then see the failed call and user space raises the alert.
 *
 * Deny on connect, on every kernel with cgroup v2: cgroup/connect4 and connect6 programs on
 * the root cgroup refuse connects to the (address, port) pairs `deny` rules name. connect()
 * fails with EPERM before any packet is sent; each refusal is reported on the ring as a
 * security event (nr connect, ret -EPERM, status DENIED) so user space raises the alert.
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

#define NR_CONNECT 42
#define AF_INET 2
#define AF_INET6 10

/* port 0: any port; addr all zero: any address (v4 uses the first 4 bytes). */
struct connect_deny_key {
	__u16 family;
	__u16 port; /* network byte order */
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct connect_deny_key);
	__type(value, struct deny_value);
} connect_denies SEC(".maps");

static __always_inline struct deny_value *connect_rule(struct connect_deny_key *key)
{
	struct deny_value *v = bpf_map_lookup_elem(&connect_denies, key);
	if (v)
		return v;
	__u16 port = key->port;
	key->port = 0;
	v = bpf_map_lookup_elem(&connect_denies, key);
	if (v)
		return v;
	key->port = port;
	__builtin_memset(key->addr, 0, sizeof(key->addr));
	return bpf_map_lookup_elem(&connect_denies, key);
}

/* The refusal as the security capability would have seen the failed connect: the sockaddr
 * follows the empty path, second path and resolved parts of data[]. */
static __always_inline void report_denied_connect(struct connect_deny_key *key)
{
	if (!osprey_should_emit(OSPREY_KIND_SEC_SYSCALL))
		return;
	struct osprey_scratch *s = osprey_scratch();
	if (!s)
		return;
	struct osprey_sec_syscall *ev = OSPREY_EVENT_IN(s, struct osprey_sec_syscall);
	__builtin_memset(ev, 0, sizeof(*ev));
	osprey_fill_header(&ev->hdr, OSPREY_KIND_SEC_SYSCALL,
			   (struct task_struct *)bpf_get_current_task());
	ev->nr = NR_CONNECT;
	ev->ret = -EPERM;
	ev->status = OSPREY_ST_DENIED;
	__u8 *sa = (__u8 *)s->data + 2; /* after the NULs of path and path2 */
	s->data[0] = 0;
	s->data[1] = 0;
	__builtin_memset(sa, 0, 28);
	*(__u16 *)sa = key->family;
	*(__u16 *)(sa + 2) = key->port;
	if (key->family == AF_INET) {
		__builtin_memcpy(sa + 4, key->addr, 4);
		ev->addr_len = 16;
	} else {
		__builtin_memcpy(sa + 8, key->addr, 16);
		ev->addr_len = 28;
	}
	osprey_emit(ev, sizeof(*ev) + 2 + ev->addr_len);
}

static __always_inline int decide_connect(struct connect_deny_key *key)
{
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == osprey_tgid)
		return 1;
	struct connect_deny_key probe = *key; /* the lookups overwrite it with wildcards */
	struct deny_value *v = connect_rule(&probe);
	if (!v)
		return 1;
	__sync_fetch_and_add(&v->denied, 1);
	report_denied_connect(key);
	return 0; /* connect() fails with EPERM */
}

SEC("cgroup/connect4")
int enforce_connect4(struct bpf_sock_addr *ctx)
{
	struct connect_deny_key key = {
		.family = AF_INET,
		.port = (__u16)ctx->user_port,
	};
	__u32 ip = ctx->user_ip4;
	__builtin_memcpy(key.addr, &ip, 4);
	return decide_connect(&key);
}

SEC("cgroup/connect6")
int enforce_connect6(struct bpf_sock_addr *ctx)
{
	struct connect_deny_key key = {
		.family = AF_INET6,
		.port = (__u16)ctx->user_port,
	};
	__u32 ip[4];
	ip[0] = ctx->user_ip6[0];
	ip[1] = ctx->user_ip6[1];
	ip[2] = ctx->user_ip6[2];
	ip[3] = ctx->user_ip6[3];
	__builtin_memcpy(key.addr, ip, 16);
	return decide_connect(&key);
}
