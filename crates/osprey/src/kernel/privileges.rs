//! Effective capabilities of this process, so a missing privilege is named, not guessed.

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_NET_ADMIN => "CAP_NET_ADMIN",
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "CAP_?",
    }
}

/// The capability mask from /proc/self/status (CapEff).
pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn has(mask: u64, cap: u32) -> bool {
    mask & (1u64 << cap) != 0
}

/// Capabilities that loading and attaching tracing programs needs and this process
/// lacks (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN which implies both).
pub fn missing_for_tracing(mask: u64) -> Vec<&'static str> {
    if has(mask, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [CAP_BPF, CAP_PERFMON]
        .into_iter()
        .filter(|&c| !has(mask, c))
        .map(cap_name)
        .collect()
}

/// All capabilities of interest with whether this process has them.
pub fn report(mask: u64) -> Vec<(&'static str, bool)> {
    [
        CAP_BPF,
        CAP_PERFMON,
        CAP_SYS_ADMIN,
        CAP_NET_ADMIN,
        CAP_SYS_PTRACE,
        CAP_DAC_READ_SEARCH,
    ]
    .into_iter()
    .map(|c| (cap_name(c), has(mask, c)))
    .collect()
}
