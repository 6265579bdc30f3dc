//! Whether a hardware PMU can count cache misses here: found by trying, never by guessing
//! from the machine.

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_COUNT_HW_CACHE_MISSES: u64 = 3;
/// `sizeof(struct perf_event_attr)` of PERF_ATTR_SIZE_VER8; older kernels accept a larger
/// struct as long as the extra bytes are zero.
const ATTR_SIZE: usize = 136;
const FLAG_DISABLED: u64 = 1 << 0;
const FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
const FLAG_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// Opens (and closes at once) a disabled cache-miss counter on this thread.
/// `Err` names the errno, e.g. ENOENT when there is no hardware PMU.
pub fn probe_cache_misses() -> Result<(), String> {
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..4].copy_from_slice(&PERF_TYPE_HARDWARE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(ATTR_SIZE as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&PERF_COUNT_HW_CACHE_MISSES.to_ne_bytes());
    let flags = FLAG_DISABLED | FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV;
    attr[40..48].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: attr is a zeroed perf_event_attr of the size it declares; pid 0 (this
    // thread), cpu -1 (any), no group, no flags.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let name = match e.raw_os_error() {
            Some(libc::ENOENT) => "ENOENT",
            Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
            Some(libc::ENODEV) => "ENODEV",
            Some(libc::EACCES) => "EACCES",
            Some(libc::EPERM) => "EPERM",
            _ => "error",
        };
        return Err(format!(
            "perf_event_open(PERF_COUNT_HW_CACHE_MISSES): {name} ({e})"
        ));
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd as i32) };
    Ok(())
}
