//! `osprey profile`: on-CPU sampling (cpu-clock perf events on every CPU) and off-CPU time
//! (sched_switch), stacks counted in the kernel, user stacks unwound by frame pointers in
//! the kernel or from copied stacks with DWARF CFI in user space, symbolized with blazesym
//! and written as folded stacks, flame graph SVG, pprof, JSON or a top-N table.

pub mod auto;
pub mod collect;
pub mod frame;
pub mod frame_cache;
pub mod output;
pub mod pprof;
pub mod procmaps;
pub mod python;
pub mod raw;
pub mod session;
pub mod symbolize;
pub mod unwind;

use serde::Serialize;

use crate::abi::{self, kind};
use crate::container::filter::ContainerFilter;
use crate::kernel::loader::{
    Attach, CapabilitySpec, Hook, LoadOptions, PerfSampling, Role, SoftwarePerfEvent,
};
use crate::wire::DecodeError;

pub use crate::kernel::cgroup::cgroup_target;
pub use auto::Unwinder;
pub use collect::Collector;
pub use frame::{CodeAddr, Frame};
pub use session::{Progress, Session};

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "profile",
    object: osprey_bpf::PROFILE,
    roles: &[
        Role {
            name: "cpu",
            required: true,
            hooks: &[Hook {
                program: "profile_cpu",
                attach: Attach::PerfEvent(SoftwarePerfEvent::CpuClock),
            }],
        },
        Role {
            name: "off-cpu",
            required: true,
            hooks: &[
                Hook {
                    program: "profile_offcpu_btf",
                    attach: Attach::BtfTracepoint("sched_switch"),
                },
                Hook {
                    program: "profile_offcpu_raw",
                    attach: Attach::RawTracepoint("sched_switch"),
                },
            ],
        },
        Role {
            name: "children",
            required: true,
            hooks: &[
                Hook {
                    program: "profile_children_btf",
                    attach: Attach::BtfTracepoint("sched_process_fork"),
                },
                Hook {
                    program: "profile_children_raw",
                    attach: Attach::RawTracepoint("sched_process_fork"),
                },
            ],
        },
    ],
    kinds: &[
        (kind::PROFILE_SAMPLE, "cpu_sample"),
        (kind::PROFILE_USER_STACK, "user_stack"),
        (kind::OFFCPU, "off_cpu"),
    ],
    default_ring_bytes: 16 << 20,
};

/// Highest accepted sampling frequency: above this the profiler itself dominates.
pub const MAX_FREQUENCY_HZ: u64 = 10_000;

/// Bytes copied at sp with a frame-pointer sample to fix its first frame (LEAF_BYTES in
/// profile.bpf.c); a larger copy is a DWARF window.
pub const LEAF_BYTES: u32 = 128;

/// Largest window of user stack copied per sample (STACK_COPY_MAX in profile.bpf.c).
pub const MAX_STACK_WINDOW: u32 = 65536;
/// First window of a process unwound with DWARF: most stacks fit, and it is cheap to copy.
pub const DEFAULT_STACK_WINDOW: u32 = 8192;

/// How user stacks are unwound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnwindMode {
    /// Per process, from evidence: its first samples are unwound both ways (frame
    /// pointers, DWARF); where they agree it keeps frame pointers, otherwise DWARF.
    Auto,
    /// Frame pointers walked in the kernel, the first frame fixed with the binary's CFI.
    FramePointer,
    Dwarf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    /// Values are samples.
    Cpu,
    /// Values are nanoseconds blocked.
    OffCpu,
}

#[derive(Debug, Clone)]
pub struct ProfileOptions {
    pub kind: ProfileKind,
    pub frequency_hz: u64,
    pub pids: Vec<u32>,
    pub children: bool,
    pub comm: Option<String>,
    /// Cgroup v2 id and its depth below the root.
    pub cgroup: Option<(u64, u32)>,
    pub kernel: bool,
    pub user: bool,
    pub unwind: UnwindMode,
    /// Bytes of user stack first copied per sample for DWARF unwinding; a process whose
    /// stacks are cut by the window gets it doubled, up to MAX_STACK_WINDOW.
    pub user_stack_bytes: u32,
    /// Frame-pointer stacks go through the ring with a few words of stack so that their
    /// first frame is checked against the CFI; false: counted in the kernel as walked.
    pub fix_first_frame: bool,
    /// Name the functions of CPython processes from the interpreter's frame chain.
    pub python: bool,
    /// Keep only the stacks of processes in these containers (`--container`, `--pod`,
    /// `--namespace`; empty: all). Decided in user space at the end, on each process's
    /// cgroup as captured while it lived; the kernel samples every process.
    pub containers: ContainerFilter,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        Self {
            kind: ProfileKind::Cpu,
            frequency_hz: 99,
            pids: Vec::new(),
            children: false,
            comm: None,
            cgroup: None,
            kernel: true,
            user: true,
            unwind: UnwindMode::Auto,
            user_stack_bytes: DEFAULT_STACK_WINDOW,
            fix_first_frame: true,
            python: true,
            containers: ContainerFilter::default(),
        }
    }
}

impl ProfileOptions {
    /// One stack copy buffer per CPU; the maps of what this profile does not do (off-CPU
    /// or on-CPU counts, the pid filter, DWARF windows) at one entry: the kernel charges
    /// for every entry a map could hold.
    fn map_sizes(&self) -> Vec<(&'static str, u32)> {
        let cpu = self.kind == ProfileKind::Cpu;
        let unused = |name: &'static str, used: bool| (!used).then_some((name, 1));
        let pid_filter = !self.pids.is_empty() || self.children;
        [
            Some((
                "stack_copies",
                aya::util::nr_cpus().unwrap_or(1).max(1) as u32,
            )),
            unused("profile_counts", cpu),
            unused("offcpu_times", !cpu),
            unused("offcpu_starts", !cpu),
            unused("profile_pids", pid_filter),
            unused("dwarf_pids", cpu && self.unwind != UnwindMode::FramePointer),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Loader options: roles, sampling and the `.rodata` configuration.
    pub fn load_options(&self) -> LoadOptions {
        let mut roles = vec![match self.kind {
            ProfileKind::Cpu => "cpu",
            ProfileKind::OffCpu => "off-cpu",
        }];
        if self.children {
            roles.push("children");
        }
        let (cgroup_id, cgroup_level) = self.cgroup.unwrap_or((0, 0));
        let cpu = self.kind == ProfileKind::Cpu;
        // Auto copies a window for the first samples of every process too, to compare.
        let unwind_all = cpu && self.unwind != UnwindMode::FramePointer;
        LoadOptions {
            config: crate::kernel::loader::KernelConfig {
                comm: self.comm.clone(),
                ..Default::default()
            },
            roles: Some(roles),
            perf_sampling: Some(PerfSampling::Frequency(self.frequency_hz)),
            map_max_entries: self.map_sizes(),
            extra_globals: vec![
                ("collect_kernel", vec![u8::from(self.kernel)]),
                ("collect_user", vec![u8::from(self.user)]),
                ("filter_pids", vec![u8::from(!self.pids.is_empty())]),
                ("target_cgroup_id", cgroup_id.to_ne_bytes().to_vec()),
                ("target_cgroup_level", cgroup_level.to_ne_bytes().to_vec()),
                ("unwind_all_dwarf", vec![u8::from(unwind_all)]),
                ("fix_first_frame", vec![u8::from(self.fix_first_frame)]),
                (
                    "auto_unwind",
                    vec![u8::from(cpu && self.unwind == UnwindMode::Auto)],
                ),
                (
                    "dwarf_unwinding",
                    vec![u8::from(
                        self.kind == ProfileKind::Cpu && self.unwind != UnwindMode::FramePointer,
                    )],
                ),
                (
                    "user_stack_bytes",
                    self.user_stack_bytes.to_ne_bytes().to_vec(),
                ),
            ],
            ..Default::default()
        }
    }
}

/// A sample with a user stack: the kernel's frame-pointer walk and/or a copy of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStack {
    pub kernel_stack: i32,
    /// The kernel's frame-pointer walk (a stack map id), or < 0 when not walked.
    pub user_stack: i32,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub stack: Vec<u8>,
    /// CPython frames, innermost first: (code object | 1 if entered from C, instruction).
    pub py_frames: Vec<(u64, u64)>,
}

impl UserStack {
    pub fn write_json<M: serde::ser::SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("kernel_stack", &self.kernel_stack)?;
        map.serialize_entry("user_stack", &self.user_stack)?;
        map.serialize_entry("ip", &self.ip)?;
        map.serialize_entry("sp", &self.sp)?;
        map.serialize_entry("stack_bytes", &self.stack.len())
    }
}

pub fn decode_user_stack(bytes: &[u8]) -> Result<UserStack, DecodeError> {
    let malformed = |why| DecodeError::Malformed {
        kind: "user_stack",
        len: bytes.len(),
        why,
    };
    let raw: abi::ProfileUserStack = abi::read(bytes).ok_or_else(|| malformed("short"))?;
    let fixed = std::mem::size_of::<abi::ProfileUserStack>();
    let stack_end = fixed + raw.stack_len as usize;
    let stack = bytes
        .get(fixed..stack_end)
        .ok_or_else(|| malformed("stack shorter than stack_len"))?;
    let record = std::mem::size_of::<abi::PyFrame>();
    let py = bytes
        .get(stack_end..stack_end + raw.py_frames as usize * record)
        .ok_or_else(|| malformed("fewer python frames than py_frames"))?;
    let py_frames = py
        .chunks_exact(record)
        .filter_map(abi::read::<abi::PyFrame>)
        .map(|f| (f.code, f.instr))
        .collect();
    Ok(UserStack {
        kernel_stack: raw.kernel_stack,
        user_stack: raw.user_stack,
        ip: raw.ip,
        sp: raw.sp,
        bp: raw.bp,
        stack: stack.to_vec(),
        py_frames,
    })
}

/// One distinct stack of one process with its value (samples or nanoseconds).
#[derive(Debug, Clone, Serialize)]
pub struct StackSample {
    pub pid: u32,
    pub comm: String,
    /// Outermost first: user frames, then kernel frames.
    pub frames: Vec<Frame>,
    /// How the user frames were unwound (None: no user stack).
    pub unwinder: Option<Unwinder>,
    pub value: u64,
    /// The process's container (absent for host processes, and for processes gone before
    /// their cgroup was read: it is read the first time their samples are seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::container::pids::Tag>,
}

/// Why samples or stacks are missing, all counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Losses {
    pub kernel_stack_collisions: u64,
    pub kernel_stack_faults: u64,
    pub kernel_stack_map_full: u64,
    pub user_stack_collisions: u64,
    pub user_stack_faults: u64,
    pub user_stack_map_full: u64,
    pub count_map_full: u64,
    pub user_stack_copies_short: u64,
    pub ring_dropped: u64,
    pub dwarf_unwind_failures: u64,
    /// DWARF unwinds that stopped at the end of the copied window (windows then widen).
    pub dwarf_stacks_cut_by_window: u64,
    pub processes_gone_before_maps: u64,
}

impl Losses {
    pub fn total_lost_samples(&self) -> u64 {
        self.count_map_full + self.ring_dropped
    }
}

/// The aggregated profile, the JSON document of `--output json`.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub kind: ProfileKind,
    pub command: String,
    pub duration_secs: f64,
    pub frequency_hz: u64,
    pub unwind: UnwindMode,
    /// Sum of the values of the stacks kept (samples, or nanoseconds off-CPU).
    pub total: u64,
    pub unit: &'static str,
    pub losses: Losses,
    /// Which unwinder the samples of each binary went through.
    pub unwinders: Vec<BinaryUnwinder>,
    pub stacks: Vec<StackSample>,
}

/// Samples with frames of `binary` unwound by `unwinder`.
#[derive(Debug, Clone, Serialize)]
pub struct BinaryUnwinder {
    pub binary: String,
    pub unwinder: Unwinder,
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_entry(options: &ProfileOptions) -> Vec<&'static str> {
        let mut names: Vec<_> = options
            .map_sizes()
            .into_iter()
            // (one stack copy per CPU is one on a single CPU)
            .filter(|(name, n)| *n == 1 && *name != "stack_copies")
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn maps_of_what_the_profile_does_not_do_hold_one_entry() {
        let fp = ProfileOptions {
            unwind: UnwindMode::FramePointer,
            ..Default::default()
        };
        assert_eq!(
            one_entry(&fp),
            [
                "dwarf_pids",
                "offcpu_starts",
                "offcpu_times",
                "profile_pids"
            ]
        );
        assert_eq!(
            one_entry(&ProfileOptions::default()),
            ["offcpu_starts", "offcpu_times", "profile_pids"]
        );
        let off_cpu_of_a_pid = ProfileOptions {
            kind: ProfileKind::OffCpu,
            pids: vec![1],
            ..Default::default()
        };
        assert_eq!(
            one_entry(&off_cpu_of_a_pid),
            ["dwarf_pids", "profile_counts"]
        );
    }
}
