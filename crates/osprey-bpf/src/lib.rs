//! Osprey's compiled BPF objects (built by `make -C bpf`, committed) and the `#[repr(C)]`
//! mirror of the event ABI in `bpf/include/events.h`.

pub mod abi;
pub mod btf;

/// One compiled capability object, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    pub name: &'static str,
    /// The modern build: needs the kernel functions in `needs`.
    pub bytes: &'static [u8],
    /// The same source built with `-DOSPREY_COMPAT` (no BTF task pointer, callbacks or
    /// atomic or/fetch; see bpf/include/osprey.h), for kernels that lack any of `needs`.
    /// `None`: the modern build needs nothing beyond Linux 5.10.
    pub compat: Option<&'static [u8]>,
    /// BPF helpers (by their kernel function, as named in the kernel BTF) whose absence
    /// makes the verifier refuse the modern build as a whole.
    pub needs: &'static [&'static str],
}

/// What every modern build with a compat twin needs: the BTF task pointer (5.11), callback
/// references such as bpf_loop's (5.13, which also has the atomic or/fetch of 5.12), and
/// bpf_task_pt_regs (5.15, in the classic tracepoint fallbacks of OSPREY_SYS_*_PROGS).
pub const MODERN_NEEDS: &[&str] = &[
    "bpf_get_current_task_btf",
    "bpf_for_each_map_elem",
    "bpf_task_pt_regs",
];

/// An object file's bytes, 32-byte aligned (as aya wants them), in a `static`: in a `const`
/// the bytes would be copied into every codegen unit that uses it (the binary held several
/// objects twice).
macro_rules! object_bytes {
    ($file:expr) => {{
        #[repr(C, align(32))]
        struct Aligned<T>(T);
        static BYTES: Aligned<[u8; include_bytes!(concat!("../objects/", $file)).len()]> =
            Aligned(*include_bytes!(concat!("../objects/", $file)));
        &BYTES.0
    }};
}

macro_rules! object {
    ($name:literal) => {
        Object {
            name: $name,
            bytes: object_bytes!(concat!($name, ".bpf.o")),
            compat: None,
            needs: &[],
        }
    };
    ($name:literal, compat, needs: $needs:expr) => {
        Object {
            name: $name,
            bytes: object_bytes!(concat!($name, ".bpf.o")),
            compat: Some(object_bytes!(concat!($name, ".compat.bpf.o"))),
            needs: $needs,
        }
    };
}

pub const FILES: Object = object!("files", compat, needs: MODERN_NEEDS);
pub const PROCESS: Object = object!("process", compat, needs: MODERN_NEEDS);
pub const PROBE: Object = object!("probe");
pub const PROFILE: Object = object!("profile", compat, needs: MODERN_NEEDS);
pub const MEMORY: Object = object!(
    "memory",
    compat,
    needs: &[
        "bpf_get_current_task_btf",
        "bpf_for_each_map_elem",
        "bpf_task_pt_regs",
        "bpf_find_vma"
    ]
);
pub const SECURITY: Object = object!("security", compat, needs: MODERN_NEEDS);
pub const ENFORCE: Object = object!("enforce");
pub const TCP: Object = object!("tcp", compat, needs: MODERN_NEEDS);
pub const FLOWS: Object = object!("flows", compat, needs: MODERN_NEEDS);
/// Test-only: drops the first two data segments to port 4242 (retransmission tests).
pub const TEST_DROP: Object = object!("test_drop");
/// Test and benchmark only: do-nothing XDP and tc programs (bench/net.sh, tests/net_edge.rs).
pub const TEST_PASS: Object = object!("test_pass");
pub const SYSCALLS: Object = object!("syscalls", compat, needs: MODERN_NEEDS);
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
