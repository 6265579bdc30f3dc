//! Loads a capability's object and attaches each of its programs through the first hook
//! alternative that works on this kernel, recording why the others did not.

use std::collections::BTreeSet;

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        tc::{self, TcAttachOptions},
        BtfTracePoint, FEntry, FExit, KProbe, LinkOrder, PerfEvent, Program, RawTracePoint,
        SchedClassifier, TcAttachType, TracePoint, Xdp, XdpMode,
    },
    Ebpf,
};

use super::object_loader::{load_object, ObjectRequest};
use super::{describe_error, kernel_btf, relocation_failure::describe_program_error};
use crate::abi::{self, Counters};

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

    fn config(self) -> PerfEventConfig {
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
    fn aya(self) -> XdpMode {
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
            $crate::kernel::loader::Hook {
                program: concat!($prefix, "_btf"),
                attach: $crate::kernel::loader::Attach::BtfTracepoint($event),
            },
            $crate::kernel::loader::Hook {
                program: concat!($prefix, "_raw"),
                attach: $crate::kernel::loader::Attach::RawTracepoint($event),
            },
            $crate::kernel::loader::Hook {
                program: concat!($prefix, "_tp"),
                attach: $crate::kernel::loader::Attach::Tracepoint("raw_syscalls", $event),
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

/// What a capability is to the loader.
#[derive(Debug, Clone, Copy)]
pub struct CapabilitySpec {
    pub name: &'static str,
    pub object: osprey_bpf::Object,
    pub roles: &'static [Role],
    /// Event kinds this capability emits, for statistics.
    pub kinds: &'static [(u32, &'static str)],
    pub default_ring_bytes: u32,
}

/// In-kernel target filter and rate limits, written to the object's `.rodata`.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    /// Events per second per process; `None`: unlimited.
    pub rate_per_process: Option<u64>,
    /// Events per second over all processes; `None`: unlimited.
    pub rate_global: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub config: KernelConfig,
    pub ring_bytes: Option<u32>,
    /// Roles to attach; `None`: all of them.
    pub roles: Option<Vec<&'static str>>,
    /// Programs never to use (OSPREY_DENY_PROGRAMS), to exercise fallbacks.
    pub denied_programs: BTreeSet<String>,
    /// Load and attach, then detach at once (for `osprey check`).
    pub dry_run: bool,
    /// Sampling of `Attach::PerfEvent` hooks; `None`: 99 samples per second.
    pub perf_sampling: Option<PerfSampling>,
    /// Further `.rodata` globals of this capability's object, as raw bytes.
    pub extra_globals: Vec<(&'static str, Vec<u8>)>,
    /// Network interfaces for XDP/tcx/tc hooks, by name.
    pub interfaces: Vec<String>,
    /// Only this XDP mode; `None`: native where the driver supports it, else generic.
    pub xdp_mode: Option<XdpAttachMode>,
    /// Map sizes to override (name, max_entries), e.g. a flow table size.
    pub map_max_entries: Vec<(&'static str, u32)>,
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
    fn policy(self) -> SamplePolicy {
        match self {
            PerfSampling::Frequency(hz) => SamplePolicy::Frequency(hz),
            PerfSampling::Period(n) => SamplePolicy::Period(n),
        }
    }
}

impl LoadOptions {
    /// Reads OSPREY_DENY_PROGRAMS (comma-separated program names) from the environment;
    /// warns once on stderr about a name that is no program of Osprey's.
    pub fn denied_from_env() -> BTreeSet<String> {
        let denied: BTreeSet<String> = std::env::var("OSPREY_DENY_PROGRAMS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        static WARNED: std::sync::Once = std::sync::Once::new();
        let unknown = crate::capabilities::unknown_programs(&denied);
        if !unknown.is_empty() {
            WARNED.call_once(|| {
                eprintln!(
                    "osprey: warning: OSPREY_DENY_PROGRAMS names no program of Osprey's: {} \
                     (names as in `osprey check --output json`)",
                    unknown.join(", ")
                );
            });
        }
        denied
    }
}

/// How one role was served (or why it could not be).
#[derive(Debug, Clone)]
pub struct RoleOutcome {
    pub role: &'static str,
    pub required: bool,
    /// The program and hook in use, if any.
    pub chosen: Option<Hook>,
    /// Alternatives tried before (or instead of) the chosen one, with the reason each failed.
    pub rejected: Vec<(Hook, String)>,
}

impl RoleOutcome {
    pub fn reason(&self) -> String {
        self.rejected
            .iter()
            .map(|(h, why)| format!("{}: {why}", h.attach.label()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{capability}: cannot load its BPF object: {reason}")]
    Object {
        capability: &'static str,
        reason: String,
    },
    #[error("{capability}: no hook for {role} works on this kernel ({reason})")]
    NoHook {
        capability: &'static str,
        role: &'static str,
        reason: String,
    },
    #[error("{capability}: {reason}")]
    Map {
        capability: &'static str,
        reason: String,
    },
}

/// A loaded capability: its object (dropping it detaches everything), its ring and counters.
pub struct LoadedCapability {
    pub spec: CapabilitySpec,
    pub outcomes: Vec<RoleOutcome>,
    /// Size of the ring buffer in bytes.
    pub ring_bytes: u32,
    pub ring: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, Counters>,
    /// The kernel side's "reader sleeps: wake it with the next record" switch; none in
    /// objects built without it (their reader keeps its drain timer).
    reader_idle: Option<Array<MapData, u32>>,
    /// What this reader last wrote to `reader_idle` (the kernel clears it when it wakes us).
    reader_idle_set: bool,
    ebpf: Ebpf,
    /// Kernel state the attach added besides links (clsact qdiscs), removed after `ebpf`
    /// detached the programs: fields drop in declaration order.
    _added_qdiscs: AddedClsact,
}

impl LoadedCapability {
    pub fn load(spec: CapabilitySpec, options: &LoadOptions) -> Result<Self, LoadError> {
        let cfg = &options.config;
        let mut comm = [0u8; abi::COMM_LEN];
        if let Some(c) = &cfg.comm {
            let n = c.len().min(abi::COMM_LEN - 1);
            comm[..n].copy_from_slice(&c.as_bytes()[..n]);
        }
        let pid = cfg.pid.unwrap_or(0);
        let uid = cfg.uid.unwrap_or(u32::MAX);
        let comm_set = u8::from(cfg.comm.is_some());
        let rate_process = cfg.rate_per_process.unwrap_or(0);
        let rate_global = cfg.rate_global.unwrap_or(0);
        let ring_bytes = options.ring_bytes.unwrap_or(spec.default_ring_bytes);

        // The filter globals are in every object built from osprey.h, the extras are the
        // capability's own (and must be in its object).
        let common = [
            ("target_pid", pid.to_ne_bytes().to_vec()),
            ("target_uid", uid.to_ne_bytes().to_vec()),
            ("target_comm_set", vec![comm_set]),
            ("target_comm", comm.to_vec()),
            ("rate_per_process", rate_process.to_ne_bytes().to_vec()),
            ("rate_global", rate_global.to_ne_bytes().to_vec()),
        ];
        let globals = common
            .into_iter()
            .map(|(name, value)| (name, value, false))
            .chain(
                options
                    .extra_globals
                    .iter()
                    .map(|(name, value)| (*name, value.clone(), true)),
            )
            .collect();
        // Declared before the object: on an early return it drops after the programs detach.
        let mut added_qdiscs = AddedClsact::default();
        let mut max_entries = vec![("osprey_events", ring_bytes)];
        max_entries.extend_from_slice(&options.map_max_entries);
        let mut ebpf = load_object(ObjectRequest {
            bytes: spec.object.bytes,
            globals,
            max_entries,
        })
        .map_err(|reason| LoadError::Object {
            capability: spec.name,
            reason,
        })?;
        let btf = kernel_btf().map_err(|reason| LoadError::Object {
            capability: spec.name,
            reason,
        })?;

        let mut outcomes = Vec::new();
        for role in spec.roles {
            if let Some(wanted) = &options.roles {
                if !wanted.contains(&role.name) {
                    continue;
                }
            }
            let outcome = attach_role(
                &mut ebpf,
                role,
                options,
                &btf,
                spec.object.bytes,
                &mut added_qdiscs,
            );
            if role.required && outcome.chosen.is_none() {
                return Err(LoadError::NoHook {
                    capability: spec.name,
                    role: role.name,
                    reason: outcome.reason(),
                });
            }
            if options.dry_run {
                if let Some(hook) = outcome.chosen {
                    unload(&mut ebpf, hook.program);
                }
            }
            outcomes.push(outcome);
        }

        let map_err = |what: &str, e: &dyn std::error::Error| LoadError::Map {
            capability: spec.name,
            reason: format!("{what}: {e}"),
        };
        let ring_map = ebpf
            .take_map("osprey_events")
            .ok_or_else(|| map_err("osprey_events", &std::fmt::Error))?;
        let ring = RingBuf::try_from(ring_map).map_err(|e| map_err("osprey_events", &e))?;
        let stats_map = ebpf
            .take_map("osprey_stats")
            .ok_or_else(|| map_err("osprey_stats", &std::fmt::Error))?;
        let counters = PerCpuArray::try_from(stats_map).map_err(|e| map_err("osprey_stats", &e))?;
        let reader_idle = ebpf
            .take_map("osprey_reader_idle")
            .and_then(|m| Array::try_from(m).ok());
        Ok(Self {
            spec,
            outcomes,
            ring_bytes,
            ring,
            counters,
            reader_idle,
            reader_idle_set: false,
            ebpf,
            _added_qdiscs: added_qdiscs,
        })
    }

    /// Asks the kernel side to wake the reader with the next record, before the reader
    /// sleeps without a timer. False when it cannot (no switch in the object, or the write
    /// failed): the reader must then keep draining on its timer.
    pub fn set_reader_idle(&mut self) -> bool {
        if self.reader_idle_set {
            return true;
        }
        let Some(switch) = &mut self.reader_idle else {
            return false;
        };
        self.reader_idle_set = switch.set(0, 1, 0).is_ok();
        self.reader_idle_set
    }

    /// Records came from the ring: a record queued after `set_reader_idle` cleared the
    /// switch (one queued before may not have; setting it again is harmless).
    pub fn reader_woke(&mut self) {
        self.reader_idle_set = false;
    }

    /// Programs in use with their hook, for statistics.
    pub fn programs(&self) -> impl Iterator<Item = (&'static str, &Program, Hook)> + '_ {
        self.outcomes.iter().filter_map(|o| {
            let hook = o.chosen?;
            Some((o.role, self.ebpf.program(hook.program)?, hook))
        })
    }

    /// Takes a map out of the object (for capabilities that aggregate in the kernel).
    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map, LoadError> {
        self.ebpf.take_map(name).ok_or_else(|| LoadError::Map {
            capability: self.spec.name,
            reason: format!("map {name} missing from the object"),
        })
    }

    /// A map of the object other than the ring and counters, to fill from user space.
    pub fn map_mut(&mut self, name: &str) -> Option<&mut aya::maps::Map> {
        self.ebpf.map_mut(name)
    }

    /// Labels of the hooks in use (`tp_btf/sys_exit`, ...), for start-up lines.
    pub fn hook_labels(&self) -> impl Iterator<Item = String> + '_ {
        self.outcomes
            .iter()
            .filter_map(|o| o.chosen.map(|h| h.attach.label()))
    }

    /// Sums the per-CPU counters of one event kind.
    pub fn counters_for(&self, kind: u32) -> Counters {
        let mut total = Counters::default();
        if let Ok(values) = self.counters.get(&kind, 0) {
            for c in values.iter() {
                total.emitted += c.emitted;
                total.dropped += c.dropped;
                total.throttled += c.throttled;
                total.filtered += c.filtered;
            }
        }
        total
    }
}

fn unload(ebpf: &mut Ebpf, program: &str) {
    // Unloading drops the program's links too; errors mean it was not loaded.
    let _ = match ebpf.program_mut(program) {
        Some(Program::BtfTracePoint(p)) => p.unload(),
        Some(Program::RawTracePoint(p)) => p.unload(),
        Some(Program::TracePoint(p)) => p.unload(),
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::Lsm(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::PerfEvent(p)) => p.unload(),
        Some(Program::Xdp(p)) => p.unload(),
        Some(Program::SchedClassifier(p)) => p.unload(),
        Some(Program::CgroupSockAddr(p)) => p.unload(),
        _ => Ok(()),
    };
}

fn attach_role(
    ebpf: &mut Ebpf,
    role: &Role,
    options: &LoadOptions,
    btf: &aya::Btf,
    object: &[u8],
    added_qdiscs: &mut AddedClsact,
) -> RoleOutcome {
    let mut rejected = Vec::new();
    for hook in role.hooks {
        if options.denied_programs.contains(hook.program) {
            rejected.push((*hook, "denied by OSPREY_DENY_PROGRAMS".to_string()));
            continue;
        }
        let attached = match hook.attach {
            Attach::Xdp(_) | Attach::TcxEgress | Attach::TcClsactEgress => {
                attach_net_hook(ebpf, hook, options, added_qdiscs)
            }
            _ => attach_hook(
                ebpf,
                hook,
                btf,
                object,
                options.perf_sampling.unwrap_or(PerfSampling::Frequency(99)),
            ),
        };
        match attached {
            Ok(()) => {
                return RoleOutcome {
                    role: role.name,
                    required: role.required,
                    chosen: Some(*hook),
                    rejected,
                }
            }
            Err(why) => {
                unload(ebpf, hook.program);
                rejected.push((*hook, why));
            }
        }
    }
    RoleOutcome {
        role: role.name,
        required: role.required,
        chosen: None,
        rejected,
    }
}

/// `object` is the ELF the programs came from, to name the field when a CO-RE relocation failed.
fn attach_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    btf: &aya::Btf,
    object: &[u8],
    sampling: PerfSampling,
) -> Result<(), String> {
    let program = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} missing from the object", hook.program))?;
    let err = |e: aya::programs::ProgramError| describe_program_error(&e, object, hook.program);
    match hook.attach {
        Attach::BtfTracepoint(name) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(err)?;
            p.load(name, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::RawTracepoint(name) => {
            let p: &mut RawTracePoint = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(name).map_err(err)?;
        }
        Attach::Tracepoint(category, name) => {
            super::features::ensure_tracefs()?;
            let p: &mut TracePoint = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(category, name).map_err(err)?;
        }
        Attach::FEntry(function) => {
            let p: &mut FEntry = program.try_into().map_err(err)?;
            p.load(function, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::Lsm(hook) => {
            let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
            if !active.split(',').any(|l| l.trim() == "bpf") {
                return Err(format!(
                    "\"bpf\" is not an active LSM (lsm={}); boot with lsm=...,bpf",
                    active.trim()
                ));
            }
            let p: &mut aya::programs::Lsm = program.try_into().map_err(err)?;
            p.load(hook, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::FExit(function) => {
            let p: &mut FExit = program.try_into().map_err(err)?;
            p.load(function, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::KProbe(function) | Attach::KRetProbe(function) => {
            let p: &mut KProbe = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(function, 0).map_err(err)?;
        }
        Attach::PerfEvent(event) => {
            let p: &mut PerfEvent = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            let cpus =
                aya::util::online_cpus().map_err(|(what, e)| format!("reading {what}: {e}"))?;
            for cpu in cpus {
                p.attach(
                    event.config(),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    sampling.policy(),
                    false,
                )
                .map_err(|e| format!("cpu {cpu}: {}", describe_error(&e)))?;
            }
        }
        Attach::CgroupSockAddr(_) => {
            let p: &mut aya::programs::CgroupSockAddr = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            let path = super::cgroup::cgroup2_root()?;
            let root = std::fs::File::open(&path)
                .map_err(|e| format!("{} (cgroup v2 root): {e}", path.display()))?;
            // A bpf_link coexists with programs already attached (link_create takes no mode
            // flags: passing AllowMultiple fails with EINVAL).
            p.attach(root, aya::programs::CgroupAttachMode::Single)
                .map_err(err)?;
        }
        Attach::Xdp(_) | Attach::TcxEgress | Attach::TcClsactEgress => {
            return Err("network hooks attach through attach_net_hook".into())
        }
    }
    Ok(())
}

/// Attaches an XDP or tc program to every interface in `options.interfaces`. A failure on
/// any interface fails the hook; the caller then unloads the program, which detaches it
/// from the interfaces done so far, so nothing stays attached. A clsact qdisc it adds is
/// recorded in `added_qdiscs`, whose owner removes it.
fn attach_net_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    options: &LoadOptions,
    added_qdiscs: &mut AddedClsact,
) -> Result<(), String> {
    if options.interfaces.is_empty() {
        return Err("no interface given".into());
    }
    let program = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} missing from the object", hook.program))?;
    let err = |e: aya::programs::ProgramError| describe_error(&e);
    match hook.attach {
        Attach::Xdp(mode) => {
            if options.xdp_mode.is_some_and(|m| m != mode) {
                return Err("not the XDP mode asked for".into());
            }
            let p: &mut Xdp = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            for name in &options.interfaces {
                p.attach(name, mode.aya()).map_err(|e| {
                    let busy = matches!(
                        &e,
                        aya::programs::ProgramError::SyscallError(s)
                            if matches!(s.io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST))
                    );
                    if busy {
                        format!("{name} {ATTACH_CONFLICT}; refusing to replace it")
                    } else {
                        format!("{name}: {}", describe_error(&e))
                    }
                })?;
            }
        }
        Attach::TcxEgress | Attach::TcClsactEgress => {
            let p: &mut SchedClassifier = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            for name in &options.interfaces {
                let how = if hook.attach == Attach::TcxEgress {
                    TcAttachOptions::TcxOrder(LinkOrder::default())
                } else {
                    // EEXIST: the interface already has a clsact qdisc, which is what we need
                    // (and not ours to remove).
                    match tc::qdisc_add_clsact(name) {
                        Ok(()) => added_qdiscs.0.push(name.clone()),
                        Err(e) => {
                            let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
                            if !exists {
                                return Err(format!(
                                    "{name}: clsact qdisc: {}",
                                    describe_error(&e)
                                ));
                            }
                        }
                    }
                    TcAttachOptions::Netlink(Default::default())
                };
                p.attach_with_options(name, TcAttachType::Egress, how)
                    .map_err(|e| format!("{name}: {}", describe_error(&e)))?;
            }
        }
        _ => return Err("not a network hook".into()),
    }
    Ok(())
}

/// clsact qdiscs a load added (by interface name), deleted when dropped: an interface
/// keeps no qdisc it did not have, whoever loaded the capability (command or agent).
#[derive(Default)]
struct AddedClsact(Vec<String>);

impl Drop for AddedClsact {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = crate::net::clsact::delete_clsact(name);
        }
    }
}

/// True when loading failed because an interface already has someone else's program.
pub fn is_attach_conflict(error: &LoadError) -> bool {
    error.to_string().contains(ATTACH_CONFLICT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root: loads a real object whose CO-RE relocation cannot be satisfied.
    #[test]
    fn unsatisfiable_core_relocation_names_the_field() {
        if !osprey_workload::bpf_available("unsatisfiable_core_relocation_names_the_field") {
            return;
        }
        const SPEC: CapabilitySpec = CapabilitySpec {
            name: "broken",
            object: osprey_bpf::BROKEN_CORE,
            roles: &[Role {
                name: "read",
                required: true,
                hooks: &[Hook {
                    program: "broken_core",
                    attach: Attach::RawTracepoint("sys_enter"),
                }],
            }],
            kinds: &[],
            default_ring_bytes: 4096,
        };
        let err = LoadedCapability::load(SPEC, &LoadOptions::default())
            .err()
            .expect("must not load");
        let text = err.to_string();
        eprintln!("{text}");
        assert!(text.contains("osprey_no_such_field"), "{text}");
        assert!(!text.contains("processed"), "no verifier dump: {text}");
    }
}
