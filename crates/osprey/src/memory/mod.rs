//! `osprey memory`: page faults per process and per mapping. The minor-faults and
//! major-faults software perf events run a program on every fault with its address; the
//! kernel classifies the address at fault time with `bpf_find_vma` (heap, stack,
//! anonymous, file path, vDSO) and counts faults per mapping and per (mapping, second,
//! address row). User space reads the maps at the end and builds the report, the
//! per-second rates and the heat map.
//!
//! Why classify in the kernel: the mapping certainly exists at fault time, so short-lived
//! processes and mappings unmapped a moment later are still named; /proc/PID/maps read
//! later from user space can miss both.

pub mod collect;
pub mod heatmap;
pub mod pmu;
pub mod session;

use serde::Serialize;

use crate::abi::{self, fault_class, kind};
use crate::container::filter::ContainerFilter;
use crate::container::pids::Tag;
use crate::kernel::loader::{
    Attach, CapabilitySpec, Hook, KernelConfig, LoadOptions, PerfSampling, Role, SoftwarePerfEvent,
};
use crate::wire::text::{join_components_leaf_first, write_bytes_field};
use crate::wire::{split_tail, DecodeError};

pub use collect::Collector;

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "memory",
    object: osprey_bpf::MEMORY,
    roles: &[
        Role {
            name: "minor-faults",
            required: true,
            hooks: &[
                Hook {
                    program: "memory_minor",
                    attach: Attach::PerfEvent(SoftwarePerfEvent::PageFaultsMin),
                },
                // Without perf events: every user-mode fault, minor and major together.
                Hook {
                    program: "memory_fault_btf",
                    attach: Attach::BtfTracepoint("page_fault_user"),
                },
                Hook {
                    program: "memory_fault_raw",
                    attach: Attach::RawTracepoint("page_fault_user"),
                },
            ],
        },
        Role {
            name: "major-faults",
            required: false,
            hooks: &[Hook {
                program: "memory_major",
                attach: Attach::PerfEvent(SoftwarePerfEvent::PageFaultsMaj),
            }],
        },
    ],
    kinds: &[
        (kind::PAGE_FAULT, "page_fault"),
        (kind::FAULT_MAPPING, "fault_mapping"),
    ],
    default_ring_bytes: 4 << 20,
};

/// Rows of the heat map: each mapping is cut into this many equal address ranges
/// (HEAT_ROWS in bpf/memory.bpf.c).
pub const HEAT_ROWS: u32 = 64;

#[derive(Debug, Clone, Default)]
pub struct MemoryOptions {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Keep only the processes in these containers (`--container`, `--pod`, `--namespace`;
    /// empty: all). Decided in user space at the end, on each process's cgroup as read while
    /// it ran (at its first reported fault, again under a new name); the kernel counts
    /// every process.
    pub containers: ContainerFilter,
}

impl MemoryOptions {
    /// Loader options; `start_ns` (CLOCK_BOOTTIME, `kernel::boot_time_ns`) is second 0 of
    /// the rates.
    pub fn load_options(&self, start_ns: u64) -> LoadOptions {
        LoadOptions {
            config: KernelConfig {
                pid: self.pid,
                comm: self.comm.clone(),
                ..Default::default()
            },
            // Every fault runs the program: counts are exact, not sampled.
            perf_sampling: Some(PerfSampling::Period(1)),
            extra_globals: vec![("start_ns", start_ns.to_ne_bytes().to_vec())],
            ..Default::default()
        }
    }
}

/// What a faulting address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingClass {
    Unresolved,
    Heap,
    Stack,
    Anonymous,
    File,
    Vdso,
    Special,
}

impl MappingClass {
    pub fn from_abi(class: u8) -> Self {
        match class {
            fault_class::HEAP => MappingClass::Heap,
            fault_class::STACK => MappingClass::Stack,
            fault_class::ANON => MappingClass::Anonymous,
            fault_class::FILE => MappingClass::File,
            fault_class::VDSO => MappingClass::Vdso,
            fault_class::SPECIAL => MappingClass::Special,
            _ => MappingClass::Unresolved,
        }
    }

    /// How a mapping of this class without a path is shown.
    pub fn label(self) -> &'static str {
        match self {
            MappingClass::Unresolved => "[unresolved]",
            MappingClass::Heap => "[heap]",
            MappingClass::Stack => "[stack]",
            MappingClass::Anonymous => "[anon]",
            MappingClass::File => "[file]",
            MappingClass::Vdso => "[vdso]",
            MappingClass::Special => "[special]",
        }
    }
}

/// The first fault of a process in a mapping, describing the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultMapping {
    pub key: abi::FaultKey,
    pub vma_end: u64,
    /// File offset of the start, in bytes.
    pub offset: u64,
    pub addr: u64,
    pub vm_flags: u32,
    pub class: MappingClass,
    pub major: bool,
    /// Absolute path of the mapped file, if any.
    pub path: Option<Vec<u8>>,
    pub path_truncated: bool,
}

pub fn decode_mapping(bytes: &[u8]) -> Result<FaultMapping, DecodeError> {
    let raw: abi::FaultMapping = abi::read(bytes).ok_or(DecodeError::Malformed {
        kind: "fault_mapping",
        len: bytes.len(),
        why: "short",
    })?;
    let [path] = split_tail(
        bytes,
        std::mem::size_of::<abi::FaultMapping>(),
        [raw.path_len as usize],
        "fault_mapping",
    )?;
    Ok(FaultMapping {
        key: raw.key,
        vma_end: raw.vma_end,
        offset: raw.pgoff.saturating_mul(4096),
        addr: raw.addr,
        vm_flags: raw.vm_flags,
        class: MappingClass::from_abi(raw.class),
        major: raw.fault_type == abi::fault_type::MAJOR,
        path: (raw.path_depth > 0).then(|| join_components_leaf_first(path)),
        path_truncated: raw.status & abi::status::RESOLVED_TRUNCATED != 0,
    })
}

impl FaultMapping {
    /// `r-xp`-style permissions as in /proc/PID/maps.
    pub fn permissions(&self) -> String {
        let f = self.vm_flags;
        let bit = |mask: u32, c: char| if f & mask != 0 { c } else { '-' };
        [
            bit(1, 'r'),
            bit(2, 'w'),
            bit(4, 'x'),
            if f & 8 != 0 { 's' } else { 'p' },
        ]
        .iter()
        .collect()
    }

    pub fn write_json<M: serde::ser::SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("class", &self.class)?;
        map.serialize_entry("start", &self.key.vma_start)?;
        map.serialize_entry("end", &self.vma_end)?;
        map.serialize_entry("offset", &self.offset)?;
        map.serialize_entry("permissions", &self.permissions())?;
        map.serialize_entry("address", &self.addr)?;
        map.serialize_entry("fault", if self.major { "major" } else { "minor" })?;
        if let Some(path) = &self.path {
            write_bytes_field(map, "path", "path_b64", path)?;
            map.serialize_entry("path_truncated", &self.path_truncated)?;
        }
        Ok(())
    }
}

/// Minor and major faults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Faults {
    pub minor: u64,
    pub major: u64,
}

impl Faults {
    pub fn total(&self) -> u64 {
        self.minor + self.major
    }

    /// From the kernel's counters. Under the tracepoint fallback every user-mode fault is
    /// `untyped` and major faults are counted besides: minor = all - major.
    pub fn from_counts(c: &abi::FaultCounts) -> Self {
        Faults {
            minor: c.minor + c.untyped.saturating_sub(c.major),
            major: c.major,
        }
    }

    pub fn add(&mut self, other: Faults) {
        self.minor += other.minor;
        self.major += other.major;
    }
}

/// Faults in one second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    pub second: u32,
    pub minor: u64,
    pub major: u64,
}

/// Faults of one second in one address row of a mapping (the heat map's cells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatCell {
    pub second: u32,
    pub row: u32,
    pub faults: Faults,
}

#[derive(Debug, Clone, Serialize)]
pub struct MappingFaults {
    pub class: MappingClass,
    /// The file's path, or `[heap]`, `[stack]`, `[anon]`, `[vdso]`, ...
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub start: u64,
    pub end: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(flatten)]
    pub faults: Faults,
    pub per_second: Vec<Second>,
    #[serde(skip)]
    pub heat: Vec<HeatCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessFaults {
    pub pid: u32,
    pub comm: String,
    /// The process's container (absent for host processes, and for processes gone before
    /// their cgroup was read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Tag>,
    #[serde(flatten)]
    pub faults: Faults,
    pub per_second: Vec<Second>,
    /// Busiest first.
    pub mappings: Vec<MappingFaults>,
}

/// Why faults or details are missing, all counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Losses {
    /// The VMA lookup found the mmap lock busy: counted as unresolved.
    pub vma_lookup_busy: u64,
    /// The lookup found the lock busy, but the address lay in the last VMA this CPU
    /// resolved for the process: counted in that mapping.
    pub vma_lookup_busy_cached: u64,
    /// No VMA at the address: counted as unresolved.
    pub vma_lookup_missing: u64,
    pub vma_lookup_failed: u64,
    /// Faults not counted at all: the per-mapping map was full.
    pub counts_map_full: u64,
    /// Faults missing from the rates and heat map: its map was full.
    pub heat_map_full: u64,
    /// Mapping descriptions lost to a full ring (those mappings show their class only).
    pub ring_dropped: u64,
}

/// The JSON document of `osprey memory --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub duration_secs: f64,
    /// Hooks counting minor and major faults.
    pub minor_source: Option<String>,
    pub major_source: Option<String>,
    /// True when minor faults are derived as all faults minus major ones (fallback hooks).
    pub minor_derived: bool,
    #[serde(flatten)]
    pub faults: Faults,
    pub per_second: Vec<Second>,
    /// Processes counted in all (the list may be cut by --top); with a container filter,
    /// those kept (the totals above count them only).
    pub process_count: usize,
    /// Busiest first.
    pub processes: Vec<ProcessFaults>,
    pub losses: Losses,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_counts_derive_minor_faults() {
        let perf = abi::FaultCounts {
            minor: 10,
            major: 2,
            untyped: 0,
            vma_end: 0,
        };
        assert_eq!(
            Faults::from_counts(&perf),
            Faults {
                minor: 10,
                major: 2
            }
        );
        let tracepoint = abi::FaultCounts {
            minor: 0,
            major: 2,
            untyped: 12,
            vma_end: 0,
        };
        assert_eq!(Faults::from_counts(&tracepoint), Faults::from_counts(&perf));
    }

    #[test]
    fn decodes_a_mapping_with_its_path() {
        let mut raw = abi::FaultMapping::default();
        raw.hdr.kind = kind::FAULT_MAPPING;
        raw.key.vma_start = 0x7f00_0000_0000;
        raw.vma_end = 0x7f00_0001_0000;
        raw.pgoff = 2;
        raw.class = fault_class::FILE;
        raw.fault_type = abi::fault_type::MAJOR;
        raw.vm_flags = 1 | 4;
        let tail = b"lib.so\0usr\0";
        raw.path_len = tail.len() as u16;
        raw.path_depth = 2;
        let mut bytes = vec![0u8; std::mem::size_of::<abi::FaultMapping>()];
        // SAFETY: FaultMapping is plain integers; bytes is exactly its size.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), raw) };
        bytes.extend_from_slice(tail);
        let m = decode_mapping(&bytes).unwrap();
        assert_eq!(m.class, MappingClass::File);
        assert_eq!(m.path.as_deref(), Some(&b"/usr/lib.so"[..]));
        assert_eq!(m.offset, 8192);
        assert!(m.major);
        assert_eq!(m.permissions(), "r-xp");
        assert!(decode_mapping(&bytes[..bytes.len() - 1]).is_err());
    }
}
