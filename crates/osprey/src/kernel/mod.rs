//! The kernel layer: what this kernel offers, privileges, loading and attaching
//! capabilities by their hook alternatives, and the statistics of loaded programs.

mod attach;
pub mod cgroup;
pub mod features;
pub mod hooks;
pub mod loader;
pub mod map_memory;
pub mod object_loader;
pub mod privileges;
pub mod relocation_failure;
pub mod stats;
pub mod variant;

use std::sync::{Arc, Mutex};

use aya::Btf;

static KERNEL_BTF: Mutex<Option<Arc<Btf>>> = Mutex::new(None);

/// Kernel BTF, parsed once and shared by every object loaded until `release_kernel_btf`.
pub fn kernel_btf() -> Result<Arc<Btf>, String> {
    let mut cached = KERNEL_BTF.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(btf) = cached.as_ref() {
        return Ok(btf.clone());
    }
    let btf = Arc::new(parse_kernel_btf().map_err(|e| format!("kernel BTF unavailable: {e}"))?);
    *cached = Some(btf.clone());
    Ok(btf)
}

const KERNEL_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Parses the kernel BTF straight from a read-only mapping of the kernel's own copy where
/// the kernel allows it (Linux 6.16+; the mapping is not process memory), so that its raw
/// bytes (MiBs) are not read into the heap next to the parsed copy; else from a read.
fn parse_kernel_btf() -> Result<Btf, aya::BtfError> {
    match map_kernel_btf() {
        Ok(bytes) => Btf::parse(&bytes, aya::Endianness::default()),
        Err(_) => Btf::from_sys_fs(),
    }
}

fn map_kernel_btf() -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(KERNEL_BTF_PATH)?;
    // SAFETY: a private read-only mapping of data the kernel never changes.
    unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }
}

/// Frees the parsed kernel BTF (MiBs) once everything is loaded; a later load parses
/// it again. The agent calls this after attaching, to stay small while it runs.
pub fn release_kernel_btf() {
    *KERNEL_BTF.lock().unwrap_or_else(|e| e.into_inner()) = None;
    // Give the freed heap back to the system instead of keeping it for later allocations.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Renders an aya error with its causes, without dumping the verifier log.
pub fn describe_error(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(aya::programs::ProgramError::LoadError {
        io_error,
        verifier_log,
    }) = err.downcast_ref::<aya::programs::ProgramError>()
    {
        let log = verifier_log.to_string();
        // For whoever debugs a program on a new kernel: the whole log, on request.
        if std::env::var_os("OSPREY_VERIFIER_LOG").is_some() {
            eprintln!("osprey: verifier log:\n{log}");
        }
        if relocation_failure::is_poisoned(&log) {
            return format!(
                "load refused: a CO-RE relocation could not be satisfied: the program needs a \
                 kernel field or type this kernel lacks ({io_error})"
            );
        }
        // The verifier ends with statistics; the reason is the last line before them.
        let last = log
            .lines()
            .rev()
            .find(|l| {
                let l = l.trim();
                !l.is_empty()
                    && !l.starts_with("processed ")
                    && !l.starts_with("verification time")
                    && !l.starts_with("stack depth")
            })
            .unwrap_or("");
        return if last.is_empty() {
            format!("load refused: {io_error}")
        } else {
            format!("load refused: {io_error} (verifier: {})", last.trim())
        };
    }
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Nanoseconds to add to CLOCK_BOOTTIME to get wall-clock time, measured now.
pub fn boot_to_wall_offset_ns() -> i128 {
    fn now(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid clock id and out pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    }
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}

/// CLOCK_BOOTTIME now, in nanoseconds (the clock BPF stamps events with).
pub fn boot_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now on `clock` (a `libc::CLOCK_*` id) in ns.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_btf_parses_the_same_mapped_or_read() {
        let read = match std::fs::read(KERNEL_BTF_PATH) {
            Ok(read) => read,
            Err(e) => {
                assert!(
                    std::env::var_os("OSPREY_REQUIRE_BPF").is_none(),
                    "no kernel BTF: {e}"
                );
                eprintln!("SKIPPED: no kernel BTF ({e})");
                return;
            }
        };
        match map_kernel_btf() {
            Ok(mapped) => assert!(mapped[..] == read[..], "the mapping differs from a read"),
            Err(e) => eprintln!("the kernel BTF cannot be mapped here ({e}): it is read"),
        }
        let parsed = parse_kernel_btf().expect("kernel BTF");
        let from_read = Btf::parse(&read, aya::Endianness::default()).expect("kernel BTF");
        assert!(parsed.to_bytes() == from_read.to_bytes());
    }
}
