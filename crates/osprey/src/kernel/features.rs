//! Feature probing by trying: load (and where that is what decides, attach) tiny
//! programs from `probe.bpf.c`. Never by kernel version.

use std::path::Path;

use aya::{
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        tc::TcAttachOptions,
        BtfTracePoint, FEntry, KProbe, LinkOrder, Lsm, PerfEvent, RawTracePoint, SchedClassifier,
        TcAttachType, TracePoint, UProbe, Xdp,
    },
    Ebpf,
};
use serde::Serialize;

use super::object_loader::has_bpf_loop;
use super::{describe_error, kernel_btf};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Set once this process mounted tracefs itself (reported by `osprey check`).
static MOUNTED_TRACEFS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Mounts tracefs at /sys/kernel/tracing when it is not there (classic tracepoints need it).
pub fn ensure_tracefs() -> Result<(), String> {
    if tracefs_dir().is_some() {
        return Ok(());
    }
    mount(c"tracefs", c"/sys/kernel/tracing")
        .map_err(|e| format!("tracefs is not mounted and mounting it failed: {e}"))?;
    MOUNTED_TRACEFS.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Where tracefs is mounted (where aya looks for it too), if it is.
fn tracefs_dir() -> Option<&'static Path> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
}

/// tracefs' `events/syscalls` (one directory per syscall tracepoint).
pub fn syscall_tracepoints_dir() -> Result<std::path::PathBuf, String> {
    let dir = tracefs_dir()
        .ok_or("tracefs is not mounted")?
        .join("events/syscalls");
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "{} is missing: the kernel has no per-syscall tracepoints (CONFIG_FTRACE_SYSCALLS)",
            dir.display()
        ))
    }
}

/// Mounts a pseudo filesystem of type `fstype` (also its source name) at `target`.
pub(super) fn mount(fstype: &std::ffi::CStr, target: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One probed feature.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    pub name: &'static str,
    pub available: bool,
    /// How it was decided, or why it is unavailable.
    pub detail: String,
}

fn feature(name: &'static str, result: Result<String, String>) -> Feature {
    match result {
        Ok(detail) => Feature {
            name,
            available: true,
            detail,
        },
        Err(detail) => Feature {
            name,
            available: false,
            detail,
        },
    }
}

fn e<E: std::error::Error + 'static>(err: E) -> String {
    describe_error(&err)
}

/// Probes every feature Osprey can use. Side effects: may mount tracefs; attaches for a
/// moment (and detaches) where only an attach can tell.
pub fn probe_all() -> Vec<Feature> {
    let mut out = Vec::new();
    let btf = kernel_btf();
    out.push(feature(
        "btf",
        btf.as_ref()
            .map(|_| "/sys/kernel/btf/vmlinux parsed".to_string())
            .map_err(|e| e.clone()),
    ));
    let mut loader = super::object_loader::loader_without_btf();
    let loaded = loader
        .btf(btf.as_ref().ok().map(|b| &**b))
        .load(osprey_bpf::PROBE.bytes)
        .map_err(e);
    let mut ebpf = match loaded {
        Ok(ebpf) => ebpf,
        Err(why) => {
            out.push(feature(
                "bpf",
                Err(format!("cannot load BPF at all: {why}")),
            ));
            return out;
        }
    };
    let btf = match btf {
        Ok(b) => b,
        Err(why) => {
            out.push(feature("tp_btf", Err(why.clone())));
            return out;
        }
    };
    out.push(feature("tp_btf", probe_tp_btf(&mut ebpf, &btf)));
    out.push(feature("raw_tp", probe_raw_tp(&mut ebpf)));
    out.push(feature("tracepoint", probe_tracepoint(&mut ebpf)));
    out.push(feature("fentry", probe_fentry(&mut ebpf, &btf)));
    out.push(feature("kprobe", probe_kprobe(&mut ebpf)));
    out.push(feature("lsm", probe_lsm(&mut ebpf, &btf)));
    out.push(feature("perf_event_cpu_clock", probe_perf_event(&mut ebpf)));
    out.push(feature("ringbuf", probe_ringbuf(&mut ebpf)));
    out.push(feature("bpf_loop", probe_bpf_loop(&mut ebpf, &btf)));
    out.push(feature("xdp", probe_xdp(&mut ebpf)));
    out.push(feature("tcx", probe_tcx(&mut ebpf)));
    out.push(feature("uprobe", probe_uprobe(&mut ebpf)));
    out.push(feature("run_time_stats", probe_stats()));
    out.push(feature("bpffs", probe_bpffs()));
    out
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("{name} missing from probe object"))?
        .try_into()
        .map_err(e)
}

fn probe_tp_btf(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<String, String> {
    let p: &mut BtfTracePoint = program(ebpf, "probe_tp_btf")?;
    p.load("sys_enter", btf).map_err(e)?;
    Ok("loaded a tp_btf/sys_enter program".into())
}

fn probe_raw_tp(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut RawTracePoint = program(ebpf, "probe_raw_tp")?;
    p.load().map_err(e)?;
    let link = p.attach("sys_enter").map_err(e)?;
    p.detach(link).map_err(e)?;
    Ok("attached raw_tp/sys_enter".into())
}

fn probe_tracepoint(ebpf: &mut Ebpf) -> Result<String, String> {
    ensure_tracefs()?;
    let p: &mut TracePoint = program(ebpf, "probe_tracepoint")?;
    p.load().map_err(e)?;
    let link = p.attach("syscalls", "sys_enter_getppid").map_err(e)?;
    p.detach(link).map_err(e)?;
    let mounted = if MOUNTED_TRACEFS.load(std::sync::atomic::Ordering::Relaxed) {
        "; tracefs was not mounted: osprey mounted it at /sys/kernel/tracing"
    } else {
        ""
    };
    Ok(format!(
        "attached tracepoint/syscalls/sys_enter_getppid (per-syscall hooks available){mounted}"
    ))
}

fn probe_fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<String, String> {
    let p: &mut FEntry = program(ebpf, "probe_fentry")?;
    p.load("do_sys_openat2", btf).map_err(e)?;
    let link = p.attach().map_err(e)?;
    p.detach(link).map_err(e)?;
    Ok("attached fentry/do_sys_openat2".into())
}

fn probe_kprobe(ebpf: &mut Ebpf) -> Result<String, String> {
    if !Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        return Err("no kprobe PMU (kernel built without CONFIG_KPROBES?)".into());
    }
    let p: &mut KProbe = program(ebpf, "probe_kprobe")?;
    p.load().map_err(e)?;
    let link = p.attach("do_sys_openat2", 0).map_err(e)?;
    p.detach(link).map_err(e)?;
    Ok("attached kprobe/do_sys_openat2".into())
}

fn probe_lsm(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<String, String> {
    let p: &mut Lsm = program(ebpf, "probe_lsm")?;
    p.load("file_open", btf).map_err(e)?;
    let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if !active.split(',').any(|l| l.trim() == "bpf") {
        return Err(format!(
            "programs load but \"bpf\" is not an active LSM (lsm={}); boot with lsm=...,bpf",
            active.trim()
        ));
    }
    Ok("loaded lsm/file_open and bpf is an active LSM".into())
}

fn probe_perf_event(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut PerfEvent = program(ebpf, "probe_perf_event")?;
    p.load().map_err(e)?;
    let link = p
        .attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu: 0 },
            SamplePolicy::Frequency(1),
            false,
        )
        .map_err(e)?;
    p.detach(link).map_err(e)?;
    Ok("attached to the software cpu-clock event on CPU 0".into())
}

fn probe_ringbuf(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut RawTracePoint = program(ebpf, "probe_ringbuf")?;
    p.load().map_err(e)?;
    Ok("ring buffer map created and used by a loaded program".into())
}

/// Loading decides availability; the loaders decide from the kernel BTF (no extra object to
/// load at start-up), so both are reported.
fn probe_bpf_loop(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<String, String> {
    let p: &mut RawTracePoint = program(ebpf, "probe_bpf_loop")?;
    p.load()
        .map_err(|why| format!("{}: path walks run as bounded loops", e(why)))?;
    if has_bpf_loop(btf) {
        Ok("loaded a program calling bpf_loop; path walks use it".into())
    } else if std::env::var_os("OSPREY_NO_BPF_LOOP").is_some() {
        Err("loads, but OSPREY_NO_BPF_LOOP is set: path walks run as bounded loops".into())
    } else {
        Err("loads, but the kernel BTF has no bpf_loop: path walks run as bounded loops".into())
    }
}

fn probe_xdp(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut Xdp = program(ebpf, "probe_xdp")?;
    p.load().map_err(e)?;
    Ok("loaded an XDP program".into())
}

fn probe_tcx(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut SchedClassifier = program(ebpf, "probe_tc")?;
    p.load().map_err(e)?;
    let link = p
        .attach_with_options(
            "lo",
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|err| {
            format!(
                "tcx attach on lo failed ({}); tc clsact is the fallback",
                e(err)
            )
        })?;
    p.detach(link).map_err(e)?;
    Ok("attached a tcx program to lo and detached it".into())
}

fn probe_uprobe(ebpf: &mut Ebpf) -> Result<String, String> {
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        return Err("no uprobe PMU (kernel built without CONFIG_UPROBES?)".into());
    }
    let p: &mut UProbe = program(ebpf, "probe_uprobe")?;
    p.load().map_err(e)?;
    Ok("uprobe PMU present and a uprobe program loads".into())
}

fn probe_stats() -> Result<String, String> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(e)?;
    Ok("BPF_ENABLE_STATS(run time) accepted".into())
}

fn probe_bpffs() -> Result<String, String> {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.trim_end().ends_with("\tbpf")) {
        return Err("the kernel has no bpf filesystem".into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| l.split(' ').nth(2) == Some("bpf")) {
        Ok("mounted".into())
    } else {
        Ok("supported, not mounted (only needed for pinning; mount -t bpf bpf /sys/fs/bpf)".into())
    }
}
