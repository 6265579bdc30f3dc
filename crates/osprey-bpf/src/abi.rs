//! Rust mirror of `bpf/include/events.h`. `tests/layout.rs` checks every size and field
//! offset against the BTF inside the compiled objects.

pub const COMM_LEN: usize = 16;
pub const PATH_MAX: usize = 4096;
pub const ARGS_MAX: usize = 4096;
pub const MAX_KINDS: u32 = 64;

/// Stable event kind numbers (`enum osprey_kind`).
pub mod kind {
    pub const FILE_OPEN: u32 = 1;
    pub const EXEC: u32 = 2;
    pub const FORK: u32 = 3;
    pub const EXIT: u32 = 4;
    pub const PROFILE_SAMPLE: u32 = 16;
    pub const PROFILE_USER_STACK: u32 = 17;
    pub const OFFCPU: u32 = 18;
    pub const PAGE_FAULT: u32 = 19;
    pub const FAULT_MAPPING: u32 = 20;
    pub const SEC_SYSCALL: u32 = 32;
    pub const TCP_STATE: u32 = 24;
    pub const TCP_CLOSE: u32 = 25;
    pub const SYSCALL_COUNT: u32 = 40;
    pub const BASELINE: u32 = 41;
    pub const FIM: u32 = 42;
}

/// `enum osprey_fim_op`.
pub mod fim_op {
    pub const OPEN_WRITE: u16 = 1;
    pub const CREATE: u16 = 2;
    pub const WRITE: u16 = 3;
    pub const TRUNCATE: u16 = 4;
    pub const CHMOD: u16 = 5;
    pub const CHOWN: u16 = 6;
    pub const UNLINK: u16 = 7;
    pub const RENAME: u16 = 8;
    pub const LINK: u16 = 9;
    pub const SYMLINK: u16 = 10;
    pub const MKDIR: u16 = 11;
    pub const MKNOD: u16 = 12;
}

/// `enum osprey_baseline_op`.
pub mod baseline_op {
    pub const NEW_EXE: u16 = 1;
    pub const OUTSIDE: u16 = 2;
    pub const RATE: u16 = 3;
}

/// `enum osprey_baseline_flags`.
pub mod baseline_flags {
    pub const UNKNOWN: u32 = 1 << 0;
}

/// `OSPREY_BASELINE_NR_MAX`: syscall numbers a baseline covers.
pub const BASELINE_NR_MAX: usize = 512;

/// `enum osprey_profile_error`: slots of the profile's `profile_errors` array.
pub mod profile_error {
    pub const KERNEL_COLLISION: u32 = 0;
    pub const KERNEL_FAULT: u32 = 1;
    pub const KERNEL_NOMEM: u32 = 2;
    pub const USER_COLLISION: u32 = 3;
    pub const USER_FAULT: u32 = 4;
    pub const USER_NOMEM: u32 = 5;
    pub const COUNTS_FULL: u32 = 6;
    pub const STACK_COPY_SHORT: u32 = 7;
    pub const SLOTS: u32 = 8;
    /// C enumerator names with their slots, for reports and the layout test.
    pub const ALL: &[(&str, u32)] = &[
        ("OSPREY_PERR_KERNEL_COLLISION", KERNEL_COLLISION),
        ("OSPREY_PERR_KERNEL_FAULT", KERNEL_FAULT),
        ("OSPREY_PERR_KERNEL_NOMEM", KERNEL_NOMEM),
        ("OSPREY_PERR_USER_COLLISION", USER_COLLISION),
        ("OSPREY_PERR_USER_FAULT", USER_FAULT),
        ("OSPREY_PERR_USER_NOMEM", USER_NOMEM),
        ("OSPREY_PERR_COUNTS_FULL", COUNTS_FULL),
        ("OSPREY_PERR_STACK_COPY_SHORT", STACK_COPY_SHORT),
        ("OSPREY_PERR_SLOTS", SLOTS),
    ];
}

/// `enum osprey_flow_direction`.
pub mod flow_direction {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// `enum osprey_fault_class`: what a faulting address belongs to.
pub mod fault_class {
    pub const UNRESOLVED: u8 = 0;
    pub const HEAP: u8 = 1;
    pub const STACK: u8 = 2;
    pub const ANON: u8 = 3;
    pub const FILE: u8 = 4;
    pub const VDSO: u8 = 5;
    pub const SPECIAL: u8 = 6;
}

/// `enum osprey_fault_type`: which counter a fault lands in.
pub mod fault_type {
    pub const MINOR: u8 = 0;
    pub const MAJOR: u8 = 1;
    pub const UNTYPED: u8 = 2;
}

/// `enum osprey_fault_error`: slots of the memory capability's `fault_errors` array.
pub mod fault_error {
    pub const VMA_BUSY: u32 = 0;
    pub const VMA_BUSY_CACHED: u32 = 1;
    pub const VMA_MISSING: u32 = 2;
    pub const VMA_OTHER: u32 = 3;
    pub const COUNTS_FULL: u32 = 4;
    pub const HEAT_FULL: u32 = 5;
    pub const SLOTS: u32 = 6;
}

/// `enum osprey_open_op`.
pub mod open_op {
    pub const OPEN: u16 = 1;
    pub const OPENAT: u16 = 2;
    pub const OPENAT2: u16 = 3;
    pub const CREAT: u16 = 4;
}

/// `enum osprey_status_bits`.
pub mod status {
    pub const PATH_TRUNCATED: u16 = 1 << 0;
    pub const RESOLVED_TRUNCATED: u16 = 1 << 1;
    pub const RESOLVED_FROM_FILE: u16 = 1 << 2;
    pub const RESOLVED_BASE_DIR: u16 = 1 << 3;
    pub const ARGS_TRUNCATED: u16 = 1 << 4;
    pub const PATH_UNREADABLE: u16 = 1 << 5;
    pub const KILLED: u16 = 1 << 6;
    pub const OLD_IDS: u16 = 1 << 7;
    pub const RESOLVED2_BASE_DIR: u16 = 1 << 8;
    pub const RESOLVED2_TRUNCATED: u16 = 1 << 9;
    pub const DENIED: u16 = 1 << 10;
    pub const TARGET_SELF: u16 = 1 << 11;
    pub const ENV_TRUNCATED: u16 = 1 << 12;
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EventHeader {
    pub kind: u32,
    pub size: u32,
    pub ts_boot_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FileOpen {
    pub hdr: EventHeader,
    pub ret: i64,
    pub flags: u64,
    pub resolve: u64,
    pub ino: u64,
    pub dev: u32,
    pub mode: u32,
    pub dirfd: i32,
    pub op: u16,
    pub status: u16,
    pub path_len: u16,
    pub resolved_len: u16,
    pub resolved_depth: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Exec {
    pub hdr: EventHeader,
    pub ret: i64,
    pub ino: u64,
    pub dev: u32,
    pub argc: u32,
    pub old_tid: u32,
    pub status: u16,
    pub stdio_sockets: u16,
    pub filename_len: u16,
    pub args_len: u16,
    pub exe_len: u16,
    pub exe_depth: u16,
    pub env_len: u16,
    pub _pad: [u16; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Fork {
    pub hdr: EventHeader,
    pub child_pid: u32,
    pub child_tid: u32,
    pub child_start_boot_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Exit {
    pub hdr: EventHeader,
    pub start_boot_ns: u64,
    pub exit_code: u32,
    pub _pad: u32,
}

/// Key of the profile count maps.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    pub pid: u32,
    pub kernel_stack: i32,
    pub user_stack: i32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

// SAFETY: integers and a byte array, any bit pattern is valid.
unsafe impl aya::Pod for ProfileKey {}
// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for PyProc {}

/// Key of the `syscall_counts` map: process, syscall and the errno of failed calls (0
/// for the others).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    pub pid: u32,
    pub nr: u32,
    pub err: u32,
    pub _pad: u32,
}

// SAFETY: integers, no implicit padding.
unsafe impl aya::Pod for SyscallKey {}

/// Per-CPU value of `syscall_counts` (`errors` equals `count` when the key has an errno).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SyscallStats {
    pub count: u64,
    pub errors: u64,
    pub timed: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub comm: [u8; COMM_LEN],
}

// SAFETY: integers and a byte array, any bit pattern is valid.
unsafe impl aya::Pod for SyscallStats {}

/// Key of `sec_baselines`: the executable's inode and device (kernel encoding).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BaselineKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

// SAFETY: integers, no implicit padding.
unsafe impl aya::Pod for BaselineKey {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct BaselineSlot {
    pub window: u32,
    pub count: u32,
}

/// Value of `sec_baselines`: allowed syscalls, window counters and peaks or limits.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub allowed: [u64; BASELINE_NR_MAX / 64],
    pub flags: u32,
    pub _pad: u32,
    pub slots: [BaselineSlot; BASELINE_NR_MAX],
    pub peak: [u32; BASELINE_NR_MAX],
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline {
            allowed: [0; BASELINE_NR_MAX / 64],
            flags: 0,
            _pad: 0,
            slots: [BaselineSlot::default(); BASELINE_NR_MAX],
            peak: [0; BASELINE_NR_MAX],
        }
    }
}

// SAFETY: integers only, no implicit padding.
unsafe impl aya::Pod for Baseline {}

/// A baseline finding (kind 41).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct BaselineEvent {
    pub hdr: EventHeader,
    pub ino: u64,
    pub dev: u32,
    pub nr: u32,
    pub args: [u64; 6],
    pub count: u32,
    pub limit: u32,
    pub op: u16,
    pub _pad: [u16; 3],
}

/// A syscall that may have touched a watched file (kind 42); the paths follow.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FimEvent {
    pub hdr: EventHeader,
    pub ret: i64,
    pub ino: u64,
    pub arg: u64,
    pub dev: u32,
    pub nr: u32,
    pub op: u16,
    pub status: u16,
    pub path_len: u16,
    pub path2_len: u16,
    pub resolved_len: u16,
    pub resolved2_len: u16,
    pub _pad: u32,
}

/// A sample with a user stack: the kernel's frame-pointer walk (`user_stack` id) and a
/// copy of `stack_len` bytes from sp (a few words, or a DWARF window), which follow.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfileUserStack {
    pub hdr: EventHeader,
    pub kernel_stack: i32,
    pub stack_len: u32,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub user_stack: i32,
    pub py_frames: u32,
}

/// One CPython frame: code object (bit 0: entered from C) and last instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PyFrame {
    pub code: u64,
    pub instr: u64,
}

/// Where a CPython process keeps its frame chain (value of `py_procs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PyProc {
    pub tstate_addr: u64,
    pub ts_cframe: u16,
    pub ts_native_tid: u16,
    pub cframe_frame: u16,
    pub frame_code: u16,
    pub frame_previous: u16,
    pub frame_instr: u16,
    pub frame_entry: u16,
    pub _pad: u16,
}

/// A mapping of one process: key of `fault_counts`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultKey {
    pub pid: u32,
    pub dev: u32,
    pub vma_start: u64,
    pub ino: u64,
}

/// Faults by type; value of `fault_counts` and `fault_heat`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub minor: u64,
    pub major: u64,
    pub untyped: u64,
    pub vma_end: u64,
}

/// Key of `fault_heat`: one mapping, one second, one address row.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FaultHeatKey {
    pub mapping: FaultKey,
    pub second: u32,
    pub row: u32,
}

// SAFETY: integers only, any bit pattern is valid.
unsafe impl aya::Pod for FaultKey {}
// SAFETY: integers only.
unsafe impl aya::Pod for FaultCounts {}
// SAFETY: integers only.
unsafe impl aya::Pod for FaultHeatKey {}

/// The first fault of a process in a mapping; `path_len` bytes of path components follow.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultMapping {
    pub hdr: EventHeader,
    pub key: FaultKey,
    pub vma_end: u64,
    pub pgoff: u64,
    pub addr: u64,
    pub vm_flags: u32,
    pub class: u8,
    pub fault_type: u8,
    pub status: u16,
    pub path_len: u16,
    pub path_depth: u16,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SecSyscall {
    pub hdr: EventHeader,
    pub ret: i64,
    pub args: [u64; 4],
    pub nr: u32,
    pub old_uid: u32,
    pub old_euid: u32,
    pub status: u16,
    pub path_len: u16,
    pub path2_len: u16,
    pub resolved_len: u16,
    pub addr_len: u16,
    pub sock_type: u8,
    pub sock_proto: u8,
}
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpEndpoints {
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    pub active: u8,
    pub owner_known: u8,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpState {
    pub hdr: EventHeader,
    pub sock: u64,
    pub ep: TcpEndpoints,
    pub old_state: u32,
    pub new_state: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpClose {
    pub hdr: EventHeader,
    pub sock: u64,
    pub ep: TcpEndpoints,
    pub start_boot_ns: u64,
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub data_segs_out: u32,
    pub data_segs_in: u32,
    pub retransmits: u32,
    pub total_retrans: u32,
    pub srtt_us: u32,
    pub min_rtt_us: u32,
    pub last_state: u32,
    pub _pad: u32,
}

/// Key of the `flows` map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub ifindex: u32,
    pub direction: u8,
    pub family: u8,
    pub protocol: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: u8,
    pub vlan: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Value of the `flows` map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    pub payload_bytes: u64,
    pub first_mono_ns: u64,
    pub last_mono_ns: u64,
    pub tcp_flags: u64,
    /// Egress: the cgroup of the sending socket's owner (first packet); 0 when none.
    pub cgroup_id: u64,
}

/// Per-CPU counters of the flow table (`flow_counters`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowCounters {
    pub inserts: u64,
    pub insert_failed: u64,
    pub non_ip: u64,
    pub truncated: u64,
}

// SAFETY: plain integers and byte arrays, any bit pattern is valid.
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowStats {}
unsafe impl aya::Pod for FlowCounters {}

/// Per-kind counters, one per CPU, in each object's `osprey_stats` map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub emitted: u64,
    pub dropped: u64,
    pub throttled: u64,
    pub filtered: u64,
}

// SAFETY: plain integers, any bit pattern is valid.
unsafe impl aya::Pod for Counters {}

/// Marker for ABI structs that may be read from any correctly sized byte slice.
///
/// # Safety
/// Implementors are `#[repr(C)]` and made of integers and byte arrays only.
pub unsafe trait Plain: Copy + Default {}
unsafe impl Plain for EventHeader {}
unsafe impl Plain for FileOpen {}
unsafe impl Plain for Exec {}
unsafe impl Plain for Fork {}
unsafe impl Plain for Exit {}
unsafe impl Plain for ProfileUserStack {}
unsafe impl Plain for PyFrame {}
unsafe impl Plain for PyProc {}
unsafe impl Plain for FaultMapping {}
unsafe impl Plain for SecSyscall {}
unsafe impl Plain for TcpState {}
unsafe impl Plain for TcpClose {}
unsafe impl Plain for BaselineEvent {}
unsafe impl Plain for FimEvent {}

/// Reads a `T` from the front of `bytes`; `None` if there are too few bytes.
pub fn read<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; read_unaligned copes with ring alignment; T is Plain.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}
