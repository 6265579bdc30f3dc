//! Osprey's compiled BPF objects (built by `make -C bpf`, committed) and the `#[repr(C)]`
//! mirror of the event ABI in `bpf/include/events.h`.

pub mod abi;
pub mod btf;

/// One compiled capability object, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    pub name: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! object {
    ($name:literal) => {
        Object {
            name: $name,
            bytes: aya::include_bytes_aligned!(concat!("../objects/", $name, ".bpf.o")),
        }
    };
}

pub const FILES: Object = object!("files");
pub const PROCESS: Object = object!("process");
pub const PROBE: Object = object!("probe");
pub const PROFILE: Object = object!("profile");
pub const MEMORY: Object = object!("memory");
pub const SECURITY: Object = object!("security");
pub const ENFORCE: Object = object!("enforce");
pub const TCP: Object = object!("tcp");
pub const FLOWS: Object = object!("flows");
/// Test-only: drops the first two data segments to port 4242 (retransmission tests).
pub const TEST_DROP: Object = object!("test_drop");
/// Test and benchmark only: do-nothing XDP and tc programs (bench/net.sh, tests/net_edge.rs).
pub const TEST_PASS: Object = object!("test_pass");
pub const SYSCALLS: Object = object!("syscalls");
/// Test fixture: a CO-RE relocation no kernel satisfies (never attached).
#[doc(hidden)]
pub const BROKEN_CORE: Object = object!("broken_core");

/// Every embedded object, for tests that check them all.
pub const ALL: &[Object] = &[
    FILES,
    PROCESS,
    PROBE,
    PROFILE,
    MEMORY,
    SECURITY,
    ENFORCE,
    TCP,
    FLOWS,
    TEST_DROP,
    TEST_PASS,
    SYSCALLS,
    BROKEN_CORE,
];
