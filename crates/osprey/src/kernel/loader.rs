//! Loads a capability's object (the build this kernel takes, see `variant`) and attaches
//! each of its roles through the first hook alternative that works on this kernel,
//! recording why the others did not.

use std::collections::BTreeSet;
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::Program,
    Ebpf,
};

use super::attach::{attach_role, unload, AddedClsact};
pub use super::hooks::{
    Attach, Hook, PerfSampling, Role, SoftwarePerfEvent, SyscallSet, XdpAttachMode, ATTACH_CONFLICT,
};
use super::kernel_btf;
use super::object_loader::{load_object, ObjectRequest};
use super::variant::{self, VariantChoice};
use crate::abi::{self, Counters};

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
    /// Drop events of the cgroups user space puts in `osprey_cgroup_drop`
    /// (`container::gate`).
    pub cgroup_filter: bool,
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
    /// Per role (by name) with a per-syscall hook, the syscalls it handles; a role not
    /// listed handles its hook's own list.
    pub syscalls: Vec<(&'static str, SyscallSet)>,
    /// Try a role's hooks on every syscall (`tp_btf`, `raw_tp`) before its per-syscall
    /// tracepoints. Per-syscall tracepoints cost other syscalls only a bitmap test but more
    /// per traced call (the kernel's tracepoint glue runs before the program): right for an
    /// always-on monitor of a few syscalls, wrong for a tracer of the very calls it asks for.
    pub prefer_every_syscall_hook: bool,
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

    /// The syscalls `role` handles, if it has a per-syscall hook, and its filter global.
    pub fn syscalls_of(&self, role: &Role) -> Option<(SyscallSet, &'static str)> {
        let (default, filter) = role.syscall_hook()?;
        let set = self
            .syscalls
            .iter()
            .find(|(name, _)| *name == role.name)
            .map(|(_, set)| set.clone())
            .unwrap_or_else(|| SyscallSet::Only(default.to_vec()));
        Some((set, filter))
    }

    fn wants(&self, role: &Role) -> bool {
        self.roles.as_ref().is_none_or(|w| w.contains(&role.name))
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

enum Ring {
    Unmapped(MapData),
    Mapped(RingBuf<MapData>),
    /// Mapping it failed (said by the `ring` call that tried).
    Failed,
}

#[derive(Debug, thiserror::Error)]
#[error("not a ring buffer")]
struct NotARing;

/// A loaded capability: its object (dropping it detaches everything), its ring and counters.
pub struct LoadedCapability {
    pub spec: CapabilitySpec,
    /// The build of the object in use, and why.
    pub variant: VariantChoice,
    pub outcomes: Vec<RoleOutcome>,
    /// Size of the ring buffer in bytes.
    pub ring_bytes: u32,
    /// The ring, mapped into this process at its first read (`ring`): its pages are resident
    /// memory (twice its size), better not added while a loading process holds the kernel BTF.
    ring: Ring,
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
        let object_error = |reason: String| LoadError::Object {
            capability: spec.name,
            reason,
        };
        let btf = kernel_btf().map_err(object_error)?;
        let (bytes, variant) = variant::choose(&spec.object, &btf);
        let in_variant = |reason: String| {
            format!(
                "{reason} [{} build: {}]",
                variant.variant.label(),
                variant.reason
            )
        };
        let ring_bytes = options.ring_bytes.unwrap_or(spec.default_ring_bytes);
        // Declared before the object: on an early return it drops after the programs detach.
        let mut added_qdiscs = AddedClsact::default();
        let mut ebpf = load_object(object_request(bytes, ring_bytes, options, spec.roles))
            .map_err(|reason| object_error(in_variant(reason)))?;

        let mut outcomes = Vec::new();
        for role in spec.roles {
            if !options.wants(role) {
                continue;
            }
            let outcome = attach_role(&mut ebpf, role, options, &btf, bytes, &mut added_qdiscs);
            if role.required && outcome.chosen.is_none() {
                return Err(LoadError::NoHook {
                    capability: spec.name,
                    role: role.name,
                    reason: in_variant(outcome.reason()),
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
        let ring = match ring_map {
            aya::maps::Map::RingBuf(data) => Ring::Unmapped(data),
            _ => return Err(map_err("osprey_events", &NotARing)),
        };
        let stats_map = ebpf
            .take_map("osprey_stats")
            .ok_or_else(|| map_err("osprey_stats", &std::fmt::Error))?;
        let counters = PerCpuArray::try_from(stats_map).map_err(|e| map_err("osprey_stats", &e))?;
        let reader_idle = ebpf
            .take_map("osprey_reader_idle")
            .and_then(|m| Array::try_from(m).ok());
        Ok(Self {
            spec,
            variant,
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

    /// The ring's fd, to wait on (mapped or not).
    pub fn ring_fd(&self) -> RawFd {
        match &self.ring {
            Ring::Unmapped(data) => data.fd().as_fd().as_raw_fd(),
            Ring::Mapped(ring) => ring.as_raw_fd(),
            Ring::Failed => -1,
        }
    }

    /// The ring, mapped into memory at the first call.
    pub fn ring(&mut self) -> std::io::Result<&mut RingBuf<MapData>> {
        if let Ring::Unmapped(_) = self.ring {
            let Ring::Unmapped(data) = std::mem::replace(&mut self.ring, Ring::Failed) else {
                unreachable!("checked above");
            };
            let map = aya::maps::Map::RingBuf(data);
            self.ring = Ring::Mapped(RingBuf::try_from(map).map_err(std::io::Error::other)?);
        }
        match &mut self.ring {
            Ring::Mapped(ring) => Ok(ring),
            _ => Err(std::io::Error::other(format!(
                "{}: its ring could not be mapped",
                self.spec.name
            ))),
        }
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

/// Processes the per-process rate limit tracks at once (an LRU: the least recent go).
const RATE_BUCKETS: u32 = 16384;

/// The object's bytes with the in-kernel filter and rate limits (`.rodata` globals in every
/// object built from osprey.h), the capability's own globals (which must be in its object),
/// the syscall filters of the roles that have one, and the map sizes.
fn object_request(
    bytes: &'static [u8],
    ring_bytes: u32,
    options: &LoadOptions,
    roles: &[Role],
) -> ObjectRequest {
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
    let common = [
        ("target_pid", pid.to_ne_bytes().to_vec()),
        ("target_uid", uid.to_ne_bytes().to_vec()),
        ("target_comm_set", vec![comm_set]),
        ("target_comm", comm.to_vec()),
        ("target_cgroups_set", vec![u8::from(cfg.cgroup_filter)]),
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
        .chain(
            roles
                .iter()
                .filter(|role| options.wants(role))
                .filter_map(|role| options.syscalls_of(role))
                .map(|(set, filter)| (filter, set.filter_bytes(), true)),
        )
        .collect();
    // Every object has the per-process token buckets; without a per-process rate they are
    // never used and one entry is all they cost (the size is always given, so that objects
    // sharing a loader do not inherit another's).
    let buckets = if cfg.rate_per_process.is_some() {
        RATE_BUCKETS
    } else {
        1
    };
    let mut max_entries = vec![("osprey_events", ring_bytes), ("osprey_buckets", buckets)];
    // The container filter's cgroup map: sized only when the filter is on (always given, for
    // the same reason as the buckets).
    let cgroup_gate = if cfg.cgroup_filter {
        crate::container::gate::ENTRIES
    } else {
        1
    };
    max_entries.push((crate::container::gate::MAP, cgroup_gate));
    max_entries.extend_from_slice(&options.map_max_entries);
    ObjectRequest {
        bytes,
        globals,
        max_entries,
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
