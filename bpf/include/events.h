/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The event ABI: every struct that crosses a ring buffer. Rust mirrors these in
 * crates/osprey-bpf/src/abi.rs; a test checks sizes and offsets against the BTF of
 * the compiled objects, so change both sides together and bump nothing silently.
 */
#ifndef OSPREY_EVENTS_H
#define OSPREY_EVENTS_H

#define OSPREY_COMM_LEN 16
#define OSPREY_PATH_MAX 4096 /* bytes of a path as passed, like PATH_MAX */
#define OSPREY_ARGS_MAX 4096 /* bytes of argv (NUL separated) kept per exec */
#define OSPREY_DATA_CAP 16384 /* variable-length tail of one event, power of two */
#define OSPREY_MAX_KINDS 64

/* Stable kind numbers: never reuse or renumber. Ranges by capability:
 * 1-15 files/process, 16-23 profile/memory, 24-31 network, 32-63 security. */
enum osprey_kind {
	OSPREY_KIND_FILE_OPEN = 1,
	OSPREY_KIND_EXEC = 2,
	OSPREY_KIND_FORK = 3,
	OSPREY_KIND_EXIT = 4,
	OSPREY_KIND_PROFILE_SAMPLE = 16, /* counted in the kernel; only counters, no events */
	OSPREY_KIND_PROFILE_USER_STACK = 17, /* a sample with a copy of the user stack */
	OSPREY_KIND_OFFCPU = 18,         /* blocked time, counted in the kernel */
	OSPREY_KIND_PAGE_FAULT = 19,     /* counted in the kernel; only counters, no events */
	OSPREY_KIND_FAULT_MAPPING = 20,  /* first fault of a process in a mapping: its description */
	OSPREY_KIND_SEC_SYSCALL = 32, /* security-relevant syscall (security.bpf.c) */
	OSPREY_KIND_TCP_STATE = 24,
	OSPREY_KIND_TCP_CLOSE = 25,
	OSPREY_KIND_SYSCALL_COUNT = 40, /* counted in the kernel (syscalls.bpf.c); only counters */
	OSPREY_KIND_BASELINE = 41,      /* syscall baseline finding (security.bpf.c) */
	OSPREY_KIND_FIM = 42,           /* a change to a watched file (security.bpf.c, fim.h) */
};

/* Which open-family syscall produced a file event. */
enum osprey_open_op {
	OSPREY_OPEN = 1,
	OSPREY_OPENAT = 2,
	OSPREY_OPENAT2 = 3,
	OSPREY_CREAT = 4,
};

/* Bits of osprey_file_open.status and osprey_exec.status. */
enum osprey_status_bits {
	OSPREY_ST_PATH_TRUNCATED = 1 << 0,     /* path as passed longer than we copy */
	OSPREY_ST_RESOLVED_TRUNCATED = 1 << 1, /* deeper or longer than we walk */
	OSPREY_ST_RESOLVED_FROM_FILE = 1 << 2, /* resolved = the opened file's own path */
	OSPREY_ST_RESOLVED_BASE_DIR = 1 << 3,  /* resolved = directory to join with path */
	OSPREY_ST_ARGS_TRUNCATED = 1 << 4,
	OSPREY_ST_PATH_UNREADABLE = 1 << 5,    /* user pointer could not be read */
	OSPREY_ST_KILLED = 1 << 6,             /* SIGKILL sent in the kernel (enforcement) */
	OSPREY_ST_OLD_IDS = 1 << 7,            /* old_uid/old_euid known (entry, or unchanged) */
	OSPREY_ST_RESOLVED2_BASE_DIR = 1 << 8, /* fim: resolved2 = directory to join with path2 */
	OSPREY_ST_RESOLVED2_TRUNCATED = 1 << 9,
	OSPREY_ST_DENIED = 1 << 10,            /* refused in the kernel before it happened (enforcement) */
	OSPREY_ST_TARGET_SELF = 1 << 11,       /* process_vm_readv/writev: the target is the caller */
	OSPREY_ST_ENV_TRUNCATED = 1 << 12,     /* exec: the environment was not scanned to its end */
};

/* Common header of every event; 64 bytes. */
struct osprey_event_header {
	__u32 kind;  /* enum osprey_kind */
	__u32 size;  /* whole event in bytes, header included */
	__u64 ts_boot_ns; /* CLOCK_BOOTTIME */
	__u32 pid;   /* thread group id */
	__u32 tid;
	__u32 ppid;  /* real parent's thread group id */
	__u32 uid;
	__u32 gid;
	__u32 _pad;
	__u64 cgroup_id;
	char comm[OSPREY_COMM_LEN];
};

/*
 * One open-family syscall, read at syscall exit so arguments and result come together.
 * data: path as passed (path_len bytes, NUL), then resolved_len bytes of resolved
 * components, each NUL terminated, leaf first.
 */
struct osprey_file_open {
	struct osprey_event_header hdr;
	__s64 ret;       /* fd, or -errno */
	__u64 flags;     /* open flags (openat2: how.flags) */
	__u64 resolve;   /* openat2 how.resolve, else 0 */
	__u64 ino;       /* inode of the opened file, 0 on failure */
	__u32 dev;       /* st_dev (kernel encoding) of the opened file */
	__u32 mode;
	__s32 dirfd;     /* AT_FDCWD (-100) for open/creat */
	__u16 op;        /* enum osprey_open_op */
	__u16 status;    /* osprey_status_bits */
	__u16 path_len;
	__u16 resolved_len;
	__u16 resolved_depth;
	__u16 _pad;
	char data[];
};

/*
 * exec: successful (from sched_process_exec, ret 0) or failed (from execve/execveat
 * exit, ret -errno). data: filename (filename_len, NUL), argv (args_len bytes, each arg
 * NUL terminated), then the executable's resolved path components (leaf first), then
 * env_len bytes of allow-listed environment variables (successful execs only; see
 * process.bpf.c), each `NAME=value` NUL terminated.
 */
struct osprey_exec {
	struct osprey_event_header hdr;
	__s64 ret;
	__u64 ino;
	__u32 dev;
	__u32 argc;      /* arguments the program got (may exceed those copied) */
	__u32 old_tid;   /* tid that called exec (differs after de_thread) */
	__u16 status;
	__u16 stdio_sockets; /* bit i set: fd i (0..2) is a socket at exec */
	__u16 filename_len;
	__u16 args_len;
	__u16 exe_len;
	__u16 exe_depth;
	__u16 env_len;   /* allow-listed environment variables (NAME=value, each NUL terminated) */
	__u16 _pad[3];
	char data[];
};

/* A new process (not a thread); the header describes the parent. */
struct osprey_fork {
	struct osprey_event_header hdr;
	__u32 child_pid;
	__u32 child_tid;
	__u64 child_start_boot_ns;
};

/* The last thread of a process exited; the header describes it. */
struct osprey_exit {
	struct osprey_event_header hdr;
	__u64 start_boot_ns; /* process start, for lifetime */
	__u32 exit_code;     /* wait status: (code << 8) | signal | 0x80 core */
	__u32 _pad;
};

/* Key of the profile count maps: one row per process and stack pair. A stack id < 0
 * means "not collected" (filtered side, kernel thread) or a failure counted in
 * osprey_profile_errors. */
struct osprey_profile_key {
	__u32 pid;
	__s32 kernel_stack;
	__s32 user_stack;
	__u32 _pad;
	char comm[OSPREY_COMM_LEN];
};

/* Slots of the per-CPU `profile_errors` array: why a stack or a sample was lost. */
enum osprey_profile_error {
	OSPREY_PERR_KERNEL_COLLISION = 0, /* bpf_get_stackid -EEXIST: bucket held another stack */
	OSPREY_PERR_KERNEL_FAULT = 1,     /* -EFAULT */
	OSPREY_PERR_KERNEL_NOMEM = 2,     /* -ENOMEM: stack map full */
	OSPREY_PERR_USER_COLLISION = 3,
	OSPREY_PERR_USER_FAULT = 4,
	OSPREY_PERR_USER_NOMEM = 5,
	OSPREY_PERR_COUNTS_FULL = 6,      /* the count map had no room for a new key */
	OSPREY_PERR_STACK_COPY_SHORT = 7, /* user stack copy shorter than asked (top of stack) */
	OSPREY_PERR_SLOTS = 8,
};

/*
 * A CPU sample with a user stack: registers at the user-mode boundary, the frame-pointer
 * stack walked by the kernel (user_stack) and stack_len bytes of stack copied from sp:
 * a few words that fix the first frame, or a whole window for DWARF unwinding.
 */
struct osprey_profile_user_stack {
	struct osprey_event_header hdr;
	__s32 kernel_stack; /* id in the stack map, or < 0 */
	__u32 stack_len;
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__s32 user_stack; /* frame-pointer stack id in the stack map, or < 0 */
	__u32 py_frames; /* osprey_py_frame records after the stack_len bytes */
	char data[];
};

/* One frame of a CPython interpreter's frame chain, innermost first. */
struct osprey_py_frame {
	__u64 code; /* PyCodeObject address; bit 0: the frame was entered from C */
	__u64 instr; /* address of the last instruction started */
};

/* Where a CPython process keeps its frame chain: the address of the current thread state
 * pointer and the offsets of the fields followed (they depend on the version). */
struct osprey_py_proc {
	__u64 tstate_addr;
	__u16 ts_cframe;
	__u16 ts_native_tid;
	__u16 cframe_frame;
	__u16 frame_code;
	__u16 frame_previous;
	__u16 frame_instr;
	__u16 frame_entry;
	__u16 _pad;
};

/* What a faulting address belongs to, decided in the kernel at fault time. */
enum osprey_fault_class {
	OSPREY_FAULT_UNRESOLVED = 0, /* the VMA lookup failed (counted in fault_errors) */
	OSPREY_FAULT_HEAP = 1,       /* the brk heap */
	OSPREY_FAULT_STACK = 2,      /* the main thread's stack */
	OSPREY_FAULT_ANON = 3,       /* other anonymous memory (mmap, thread stacks) */
	OSPREY_FAULT_FILE = 4,       /* file-backed (shared anonymous memory is a shmem file) */
	OSPREY_FAULT_VDSO = 5,       /* the vDSO text */
	OSPREY_FAULT_SPECIAL = 6,    /* other kernel-provided mappings ([vvar], [uprobes]) */
};

/* Which counter a fault lands in: the hook that saw it decides. */
enum osprey_fault_type {
	OSPREY_FAULT_MINOR = 0,   /* perf software event minor-faults */
	OSPREY_FAULT_MAJOR = 1,   /* perf software event major-faults */
	OSPREY_FAULT_UNTYPED = 2, /* exceptions:page_fault_user fallback: every user-mode fault */
};

/* Slots of the memory capability's per-CPU `fault_errors` array. */
enum osprey_fault_error {
	OSPREY_FERR_VMA_BUSY = 0,        /* bpf_find_vma -EBUSY and no cached VMA: unresolved */
	OSPREY_FERR_VMA_BUSY_CACHED = 1, /* -EBUSY, the address was in the CPU's last VMA of
					  * this process: counted there */
	OSPREY_FERR_VMA_MISSING = 2,     /* no VMA at the address (or no mm): unresolved */
	OSPREY_FERR_VMA_OTHER = 3,
	OSPREY_FERR_COUNTS_FULL = 4,     /* fault_counts had no room for a new mapping */
	OSPREY_FERR_HEAT_FULL = 5,       /* fault_heat had no room: rates and heat map incomplete */
	OSPREY_FERR_SLOTS = 6,
};

/* A mapping of one process: key of `fault_counts`. vma_start 0: unresolved. */
struct osprey_fault_key {
	__u32 pid;
	__u32 dev;       /* device of the mapped file (kernel encoding), 0 if none */
	__u64 vma_start;
	__u64 ino;       /* inode of the mapped file, 0 if none */
};

/* Faults by enum osprey_fault_type; value of `fault_counts` and `fault_heat`. */
struct osprey_fault_counts {
	__u64 minor;
	__u64 major;
	__u64 untyped;
	__u64 vma_end;   /* end of the mapping at its latest fault (fault_counts only) */
};

/* Key of `fault_heat`: faults of one mapping in one second and one address row
 * (row r covers [start + r*size/ROWS, start + (r+1)*size/ROWS) of the VMA at fault time). */
struct osprey_fault_heat_key {
	struct osprey_fault_key mapping;
	__u32 second;    /* since the start of the run */
	__u32 row;
};

/*
 * The first fault of a process in a mapping, describing it. data: the mapped file's path
 * components, NUL terminated, leaf first (path_len bytes, path_depth components).
 */
struct osprey_fault_mapping {
	struct osprey_event_header hdr;
	struct osprey_fault_key key;
	__u64 vma_end;
	__u64 pgoff;     /* file offset of vma_start in pages */
	__u64 addr;      /* the faulting address */
	__u32 vm_flags;  /* low 32 bits of vm_flags (VM_READ 1, VM_WRITE 2, VM_EXEC 4, VM_SHARED 8) */
	__u8 class;      /* enum osprey_fault_class */
	__u8 fault_type; /* enum osprey_fault_type of this first fault */
	__u16 status;    /* osprey_status_bits (RESOLVED_TRUNCATED) */
	__u16 path_len;
	__u16 path_depth;
	__u32 _pad;
	char data[];
};

/*
 * A security-relevant syscall (setuid family, capset, ptrace, modules, bpf, chmod/chown,
 * unlink/rename/truncate/link/symlink, memfd_create, connect/bind/listen, setns/unshare,
 * mount/umount, kill, setxattr/removexattr family, socket, process_vm_readv/writev), read
 * at exit so arguments and result come together.
 * data: path as passed (path_len, NUL), second path (path2_len, NUL: rename/link target,
 * symlink contents, mount source, xattr name), resolved components leaf first
 * (resolved_len; the file itself for fd-based calls, else the directory a relative path
 * starts from, see status), then addr_len bytes of the sockaddr (connect/bind) or of the
 * attribute value (setxattr family, at most 128 bytes).
 */
struct osprey_sec_syscall {
	struct osprey_event_header hdr;
	__s64 ret;
	__u64 args[4];   /* first raw syscall arguments (the fixed part must fit 128 bytes) */
	__u32 nr;        /* x86-64 syscall number */
	__u32 old_uid;   /* real uid before the call (setid family, OSPREY_ST_OLD_IDS) */
	__u32 old_euid;
	__u16 status;    /* osprey_status_bits */
	__u16 path_len;
	__u16 path2_len;
	__u16 resolved_len;
	__u16 addr_len;  /* sockaddr (connect, bind) or xattr value (setxattr family) */
	__u8 sock_type;  /* connect/bind/listen: the socket's SOCK_* type, 0 if not a socket */
	__u8 sock_proto; /* its protocol (IPPROTO_TCP 6, IPPROTO_UDP 17, ...), low 8 bits */
	char data[];
};

/* Both ends of a TCP connection; IPv4 addresses use the first 4 bytes. */
struct osprey_tcp_endpoints {
	__u16 family;  /* AF_INET (2) or AF_INET6 (10) */
	__u16 lport;   /* host byte order */
	__u16 rport;   /* host byte order */
	__u8 active;   /* 1: we connected, 0: accepted (passive open) */
	__u8 owner_known; /* the header names the process that connected/accepted */
	__u8 laddr[16];
	__u8 raddr[16];
};

/*
 * One TCP state transition (osprey tcp --states). The header names the socket's owner
 * (recorded at connect/accept in process context), not whatever task the transition
 * ran on; pid 0 when the owner is not known yet.
 */
struct osprey_tcp_state {
	struct osprey_event_header hdr;
	__u64 sock;            /* kernel address of the socket, as an identifier */
	struct osprey_tcp_endpoints ep;
	__u32 old_state;       /* TCP_* as in the kernel (1 ESTABLISHED ... 12 NEW_SYN_RECV) */
	__u32 new_state;
};

/* A TCP connection reached CLOSE: its whole life in one record, read from tcp_sock. */
struct osprey_tcp_close {
	struct osprey_event_header hdr;
	__u64 sock;
	struct osprey_tcp_endpoints ep;
	__u64 start_boot_ns;   /* connect (SYN_SENT) or SYN_RECV; 0: before we attached */
	__u64 bytes_sent;      /* payload bytes, retransmissions included */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u32 segs_out;
	__u32 segs_in;
	__u32 data_segs_out;
	__u32 data_segs_in;
	__u32 retransmits;     /* tcp_retransmit_skb events seen for this socket */
	__u32 total_retrans;   /* the kernel's own count (tcp_sock.total_retrans) */
	__u32 srtt_us;         /* smoothed RTT */
	__u32 min_rtt_us;      /* windowed minimum RTT; ~0 when never measured */
	__u32 last_state;      /* state before CLOSE */
	__u32 _pad;
};

/*
 * Flow table of `osprey flows` (BPF map key and value, read from user space; not ring
 * events). One flow per interface and direction.
 */
enum osprey_flow_direction {
	OSPREY_FLOW_INGRESS = 0, /* XDP */
	OSPREY_FLOW_EGRESS = 1,  /* tcx / tc clsact egress */
};

struct osprey_flow_key {
	__u32 ifindex;
	__u8 direction;  /* enum osprey_flow_direction */
	__u8 family;     /* AF_INET (2) or AF_INET6 (10) */
	__u8 protocol;   /* IPPROTO_*; for IPv6 the upper-layer header after extensions */
	__u8 icmp_type;  /* ICMP/ICMPv6 only */
	__u8 icmp_code;
	__u8 _pad;
	__u16 vlan;      /* outermost 802.1Q/802.1ad VLAN id, 0 when untagged */
	__u16 sport;     /* TCP/UDP, host byte order; 0 otherwise or for non-first fragments */
	__u16 dport;
	__u8 saddr[16];  /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
};

struct osprey_flow_stats {
	__u64 packets;       /* on the wire: a GSO packet counts once per segment */
	__u64 bytes;         /* L2 bytes: Ethernet header (and VLAN tags) included, no FCS */
	__u64 payload_bytes; /* bytes after the TCP/UDP/ICMP header */
	/* CLOCK_MONOTONIC_COARSE (one tick of resolution): a precise clock read costs ~20 ns
	 * per packet on some machines, the coarse one ~2 ns */
	__u64 first_mono_ns;
	__u64 last_mono_ns;
	__u64 tcp_flags;     /* OR of every TCP flag byte seen (64 bits for atomic OR) */
	/* egress: the cgroup v2 id of the sending socket's owner, read from the flow's first
	 * packet (bpf_skb_cgroup_id); 0 at ingress and for packets without a local socket */
	__u64 cgroup_id;
};

/* Per-CPU counters of the flow table (map `flow_counters`, one entry). */
struct osprey_flow_counters {
	__u64 inserts;       /* new flow entries created by the kernel */
	__u64 insert_failed; /* an update that failed: that packet was not counted */
	__u64 non_ip;        /* frames that are neither IPv4 nor IPv6 (ARP, LLDP ...) */
	__u64 truncated;     /* IP frames whose headers we could not read */
};

/* Key of the per-CPU `syscall_counts` map (syscalls.bpf.c): one row per process, syscall
 * number and errno, so that a failed call costs one lookup like any other. */
struct osprey_syscall_key {
	__u32 pid;
	__u32 nr;
	__u32 err; /* positive errno of a failed call, 0 otherwise */
	__u32 _pad;
};

/* Value of `syscall_counts`, per CPU. Latency is known only for calls whose entry was seen
 * (timed <= count): calls already in progress at attach have none. errors == count when
 * the key has an errno, else 0. */
struct osprey_syscall_stats {
	__u64 count;
	__u64 errors;
	__u64 timed;
	__u64 total_ns;
	__u64 max_ns;
	char comm[OSPREY_COMM_LEN]; /* at the first call counted */
};


/* Syscall baselines (security.bpf.c): one `sec_baselines` entry per executable, keyed by
 * the device and inode of current->mm->exe_file. */
#define OSPREY_BASELINE_NR_MAX 512 /* syscall numbers covered, power of two */

struct osprey_baseline_key {
	__u64 ino;
	__u32 dev;  /* kernel encoding (MKDEV) */
	__u32 _pad;
};

/* Calls of one syscall in the current window (~1.07 s: boot ns >> 30). */
struct osprey_baseline_slot {
	__u32 window;
	__u32 count;
};

enum osprey_baseline_flags {
	OSPREY_BL_UNKNOWN = 1 << 0, /* detect mode: not in the baseline, inserted all-allowed */
};

struct osprey_baseline {
	__u64 allowed[OSPREY_BASELINE_NR_MAX / 64]; /* bit nr: syscall in the baseline */
	__u32 flags;  /* osprey_baseline_flags */
	__u32 _pad;
	struct osprey_baseline_slot slots[OSPREY_BASELINE_NR_MAX];
	/* learn: most calls seen in one window; detect: calls per window above which an
	 * event is sent (0: no envelope) */
	__u32 peak[OSPREY_BASELINE_NR_MAX];
};

enum osprey_baseline_op {
	OSPREY_BL_NEW_EXE = 1,     /* first syscall of an executable not in the map */
	OSPREY_BL_OUTSIDE = 2,     /* a syscall not in the executable's baseline (once each) */
	OSPREY_BL_RATE = 3,        /* calls in one window crossed the envelope */
};

/* A baseline finding, sent at syscall entry; the executable's path comes from the
 * process cache in user space. */
struct osprey_baseline_event {
	struct osprey_event_header hdr;
	__u64 ino;
	__u32 dev;
	__u32 nr;
	__u64 args[6];
	__u32 count;  /* OSPREY_BL_RATE: calls so far in the window */
	__u32 limit;  /* OSPREY_BL_RATE: the envelope */
	__u16 op;     /* osprey_baseline_op */
	__u16 _pad[3];
};

/* What a watched file went through (file integrity monitoring, osprey secure --watch). */
enum osprey_fim_op {
	OSPREY_FIM_OPEN_WRITE = 1, /* opened for writing or with O_TRUNC (arg: open flags) */
	OSPREY_FIM_CREATE = 2,     /* open(O_CREAT) made a new inode in a watched directory */
	OSPREY_FIM_WRITE = 3,      /* write family, sendfile, splice, copy_file_range, fallocate */
	OSPREY_FIM_TRUNCATE = 4,
	OSPREY_FIM_CHMOD = 5,      /* arg: mode (path-based calls) */
	OSPREY_FIM_CHOWN = 6,
	OSPREY_FIM_UNLINK = 7,     /* unlink, unlinkat, rmdir */
	OSPREY_FIM_RENAME = 8,     /* path -> path2 */
	OSPREY_FIM_LINK = 9,       /* path (existing) -> path2 (new name) */
	OSPREY_FIM_SYMLINK = 10,   /* path: the new link's name */
	OSPREY_FIM_MKDIR = 11,
	OSPREY_FIM_MKNOD = 12,
};

/*
 * A successful syscall that may touch a watched file, sent from the security object's
 * sys_exit handler only when the kernel map of watched inodes (or of watched roots, for
 * absolute paths) says so. Calls naming a file by fd (and opens) carry its inode and
 * resolved path; calls naming paths carry them as passed, with the directory each relative
 * one starts from, and user space resolves them exactly.
 * data: path (path_len, NUL), path2 (path2_len, NUL), resolved components leaf first
 * (resolved_len: the file itself with OSPREY_ST_RESOLVED_FROM_FILE, else the base directory
 * of path with OSPREY_ST_RESOLVED_BASE_DIR), then the base directory of path2
 * (resolved2_len, OSPREY_ST_RESOLVED2_BASE_DIR).
 */
struct osprey_fim_event {
	struct osprey_event_header hdr;
	__s64 ret;
	__u64 ino;       /* the file named by fd or opened; 0 for path-based calls */
	__u64 arg;       /* open flags, chmod mode, rename flags (see enum osprey_fim_op) */
	__u32 dev;       /* kernel encoding, with ino */
	__u32 nr;        /* x86-64 syscall number */
	__u16 op;        /* enum osprey_fim_op */
	__u16 status;    /* osprey_status_bits */
	__u16 path_len;
	__u16 path2_len;
	__u16 resolved_len;
	__u16 resolved2_len;
	__u32 _pad;
	char data[];
};

/* Per-kind counters kept per CPU in each object's `osprey_stats` map. */
struct osprey_counters {
	__u64 emitted;
	__u64 dropped;   /* ring buffer full */
	__u64 throttled; /* rate limiter */
	__u64 filtered;  /* reached the program but not the target filter */
};

#endif
