//! Where a capability's programs attach: the hook kinds, a role's alternatives best first,
//! and how perf events sample.

use aya::programs::{
    perf_event::{PerfEventConfig, SamplePolicy, SoftwareEvent},
    XdpMode,
};

/// Where a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// `tp_btf/NAME`: BTF-typed raw tracepoint; needs kernel BTF, no tracefs.
    BtfTracepoint(&'static str),
    /// `raw_tp/NAME`: raw tracepoint; no tracefs.
    RawTracepoint(&'static str),
    /// `tracepoint/CATEGORY/NAME`: classic tracepoint; needs tracefs.
    Tracepoint(&'static str, &'static str),
    /// `fentry/FUNCTION`: trampoline; refused on some kernels by policy.
    FEntry(&'static str),
    /// `fexit/FUNCTION`: trampoline at return, with arguments and result.
    FExit(&'static str),
    /// `kprobe/FUNCTION`: needs CONFIG_KPROBES.
    KProbe(&'static str),
    /// `kretprobe/FUNCTION`: needs CONFIG_KPROBES.
    KRetProbe(&'static str),
    /// `lsm/HOOK`: BPF LSM; needs CONFIG_BPF_LSM and `bpf` among the active LSMs.
    Lsm(&'static str),
    /// `perf_event`: a software perf event on every online CPU, sampled as
    /// `LoadOptions::perf_sampling` says.
    PerfEvent(SoftwarePerfEvent),
    /// XDP in this mode on every interface of `LoadOptions::interfaces`.
    Xdp(XdpAttachMode),
    /// tcx egress link on every interface of `LoadOptions::interfaces` (Linux 6.6+).
    TcxEgress,
    /// tc clsact egress filter (netlink) on every interface; adds the clsact qdisc if missing.
    TcClsactEgress,
    /// `cgroup/NAME` sock_addr program (connect4, connect6, ...) on the cgroup v2 root
    /// (which covers every process), alongside any programs already there.
    CgroupSockAddr(&'static str),
}

/// Software perf events (no hardware PMU needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftwarePerfEvent {
    CpuClock,
    PageFaultsMin,
    PageFaultsMaj,
}

impl SoftwarePerfEvent {
    pub fn name(self) -> &'static str {
        match self {
            SoftwarePerfEvent::CpuClock => "cpu-clock",
            SoftwarePerfEvent::PageFaultsMin => "minor-faults",
            SoftwarePerfEvent::PageFaultsMaj => "major-faults",
        }
    }

    pub(super) fn config(self) -> PerfEventConfig {
        PerfEventConfig::Software(match self {
            SoftwarePerfEvent::CpuClock => SoftwareEvent::CpuClock,
            SoftwarePerfEvent::PageFaultsMin => SoftwareEvent::PageFaultsMin,
            SoftwarePerfEvent::PageFaultsMaj => SoftwareEvent::PageFaultsMaj,
        })
    }
}

/// How an XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// In the driver, before an skb exists (fastest; not every driver).
    Native,
    /// In the network stack, on the skb (every interface).
    Generic,
}

impl XdpAttachMode {
    pub(super) fn aya(self) -> XdpMode {
        match self {
            XdpAttachMode::Native => XdpMode::Driver,
            XdpAttachMode::Generic => XdpMode::Skb,
        }
    }
}

/// Marks an attach refused because another program already owns the hook: callers must
/// not replace someone else's XDP program, so this is reported, never worked around.
pub const ATTACH_CONFLICT: &str = "already has an XDP program that is not ours";

impl Attach {
    pub fn label(&self) -> String {
        match self {
            Attach::BtfTracepoint(n) => format!("tp_btf/{n}"),
            Attach::RawTracepoint(n) => format!("raw_tp/{n}"),
            Attach::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
            Attach::FEntry(f) => format!("fentry/{f}"),
            Attach::FExit(f) => format!("fexit/{f}"),
            Attach::KProbe(f) => format!("kprobe/{f}"),
            Attach::KRetProbe(f) => format!("kretprobe/{f}"),
            Attach::Lsm(h) => format!("lsm/{h}"),
            Attach::PerfEvent(e) => format!("perf_event/{}", e.name()),
            Attach::Xdp(XdpAttachMode::Native) => "xdp/native".to_string(),
            Attach::Xdp(XdpAttachMode::Generic) => "xdp/generic".to_string(),
            Attach::TcxEgress => "tcx/egress".to_string(),
            Attach::TcClsactEgress => "tc/clsact/egress".to_string(),
            Attach::CgroupSockAddr(n) => format!("cgroup/{n}"),
        }
    }
}

/// The hooks of the three programs `OSPREY_SYS_EXIT_PROGS(prefix, fn)` defines in C
/// (`prefix_btf`, `prefix_raw`, `prefix_tp`), best first.
#[macro_export]
macro_rules! sys_exit_hooks {
    ($prefix:literal) => {
        $crate::syscall_hooks!("sys_exit", $prefix)
    };
}

/// The same for `OSPREY_SYS_ENTER_PROGS(prefix, fn)`.
#[macro_export]
macro_rules! sys_enter_hooks {
    ($prefix:literal) => {
        $crate::syscall_hooks!("sys_enter", $prefix)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! syscall_hooks {
    ($event:literal, $prefix:literal) => {
        &[
            $crate::kernel::hooks::Hook {
                program: concat!($prefix, "_btf"),
                attach: $crate::kernel::hooks::Attach::BtfTracepoint($event),
            },
            $crate::kernel::hooks::Hook {
                program: concat!($prefix, "_raw"),
                attach: $crate::kernel::hooks::Attach::RawTracepoint($event),
            },
            $crate::kernel::hooks::Hook {
                program: concat!($prefix, "_tp"),
                attach: $crate::kernel::hooks::Attach::Tracepoint("raw_syscalls", $event),
            },
        ]
    };
}

/// One way to implement a role: a program in the object and where it attaches.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    pub program: &'static str,
    pub attach: Attach,
}

/// A job the capability needs done in the kernel, with its hooks best first.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    pub name: &'static str,
    pub hooks: &'static [Hook],
    /// Without a required role the capability cannot run at all.
    pub required: bool,
}

/// How often a perf event runs its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfSampling {
    /// Samples per second per CPU.
    Frequency(u64),
    /// Once every N events (1: every event).
    Period(u64),
}

impl PerfSampling {
    pub(super) fn policy(self) -> SamplePolicy {
        match self {
            PerfSampling::Frequency(hz) => SamplePolicy::Frequency(hz),
            PerfSampling::Period(n) => SamplePolicy::Period(n),
        }
    }
}
