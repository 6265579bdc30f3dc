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
    /// `tracepoint/syscalls/EVENT_NAME` (EVENT: `sys_enter` or `sys_exit`) for each syscall
    /// NAME the role handles: one program attached once per syscall; the kernel runs it
    /// for those syscalls only. Needs tracefs. The role's other hooks run on every syscall
    /// and return at once unless the object's `filter` bitmap (`.rodata`, by syscall
    /// number) has the syscall: the loader sets it from the same list.
    Syscalls {
        event: &'static str,
        syscalls: &'static [&'static str],
        filter: &'static str,
    },
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
            Attach::Syscalls { event, .. } => format!("tracepoint/syscalls/{event}_*"),
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

/// The hooks of the programs `OSPREY_SYS_EXIT_PROGS(prefix, fn)` defines in C, best first:
/// with a list of syscall names, `prefix_sc` on the per-syscall tracepoints of those
/// syscalls, then (and without a list, only) `prefix_btf`, `prefix_raw` and `prefix_tp`
/// on the raw sys_exit of every syscall, filtered to the list in the kernel.
#[macro_export]
macro_rules! sys_exit_hooks {
    ($prefix:literal $(, $syscalls:expr)?) => {
        $crate::syscall_hooks!("sys_exit", $prefix $(, $syscalls)?)
    };
}

/// The same for `OSPREY_SYS_ENTER_PROGS(prefix, fn)`.
#[macro_export]
macro_rules! sys_enter_hooks {
    ($prefix:literal $(, $syscalls:expr)?) => {
        $crate::syscall_hooks!("sys_enter", $prefix $(, $syscalls)?)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! syscall_hooks {
    ($event:literal, $prefix:literal $(, $syscalls:expr)?) => {
        &[
            $($crate::kernel::hooks::Hook {
                program: concat!($prefix, "_sc"),
                attach: $crate::kernel::hooks::Attach::Syscalls {
                    event: $event,
                    syscalls: $syscalls,
                    filter: concat!($prefix, "_nrs"),
                },
            },)?
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

/// Which syscalls a role with an `Attach::Syscalls` hook handles at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyscallSet {
    /// Every syscall (e.g. per-executable baselines): the raw hooks serve it best.
    Every,
    /// These syscalls (names), e.g. only those the loaded rules need.
    Only(Vec<&'static str>),
}

/// Syscall numbers the `OSPREY_NR_WORDS` words of a C filter bitmap cover.
pub const SYSCALL_FILTER_BITS: usize = 512;

impl SyscallSet {
    /// The C filter bitmap (`prefix_nrs`) for this set, as `.rodata` bytes. Names this
    /// architecture does not know are left out (their calls cannot happen).
    pub fn filter_bytes(&self) -> Vec<u8> {
        let mut words = [0u64; SYSCALL_FILTER_BITS / 64];
        match self {
            SyscallSet::Every => words = [u64::MAX; SYSCALL_FILTER_BITS / 64],
            SyscallSet::Only(names) => {
                for nr in names
                    .iter()
                    .filter_map(|n| crate::syscalls::syscall_number(n))
                {
                    if (nr as usize) < SYSCALL_FILTER_BITS {
                        words[nr as usize / 64] |= 1 << (nr % 64);
                    }
                }
            }
        }
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

/// The name of a syscall's tracepoints (`syscalls/sys_exit_NAME`): the kernel's
/// SYSCALL_DEFINE name, which for a few x86-64 syscalls is not the table's.
pub fn tracepoint_name(syscall: &str) -> &str {
    match syscall {
        "umount2" => "umount",
        "sendfile" => "sendfile64",
        "stat" => "newstat",
        "fstat" => "newfstat",
        "lstat" => "newlstat",
        "uname" => "newuname",
        other => other,
    }
}

impl Role {
    /// The role's per-syscall hook: its default syscall list and filter global.
    pub fn syscall_hook(&self) -> Option<(&'static [&'static str], &'static str)> {
        self.hooks.iter().find_map(|h| match h.attach {
            Attach::Syscalls {
                syscalls, filter, ..
            } => Some((syscalls, filter)),
            _ => None,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syscall_filter_has_exactly_the_listed_syscalls() {
        let bytes = SyscallSet::Only(vec!["read", "openat", "no_such_call"]).filter_bytes();
        let words: Vec<u64> = bytes
            .chunks(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words.len(), 8);
        assert_eq!(words[0], 1 << 0); // read is 0
        assert_eq!(words[257 / 64], 1 << (257 % 64)); // openat
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
        assert!(SyscallSet::Every.filter_bytes().iter().all(|b| *b == 0xff));
    }
}
