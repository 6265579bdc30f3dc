//! The enforce object's deny maps, shared by its two mechanisms (BPF LSM on files, cgroup
//! programs on connect): loading a part of the object with its map filled.

use aya::maps::HashMap;

use crate::kernel::loader::{CapabilitySpec, LoadOptions, LoadedCapability};

/// Value of the enforce object's deny maps (file and connect).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DenyValue {
    flags: u32,
    rule: u32,
    denied: u64,
}

// SAFETY: plain integers; any bit pattern is valid.
unsafe impl aya::Pod for DenyValue {}

/// Loads `spec` (a part of the enforce object), never denying Osprey itself, and fills
/// `map` with (key, rule index, flags) entries.
pub fn load<K: aya::Pod>(
    spec: CapabilitySpec,
    map: &str,
    entries: impl IntoIterator<Item = Result<(K, usize, u32), String>>,
) -> Result<LoadedCapability, String> {
    let options = LoadOptions {
        extra_globals: vec![("osprey_tgid", std::process::id().to_ne_bytes().to_vec())],
        denied_programs: LoadOptions::denied_from_env(),
        roles: Some(spec.roles.iter().map(|r| r.name).collect()),
        ..Default::default()
    };
    let mut cap = LoadedCapability::load(spec, &options).map_err(|e| e.to_string())?;
    let target = cap
        .map_mut(map)
        .ok_or_else(|| format!("{map} missing from the enforce object"))?;
    let mut target: HashMap<_, K, DenyValue> =
        HashMap::try_from(target).map_err(|e| e.to_string())?;
    for entry in entries {
        let (key, rule, flags) = entry?;
        let value = DenyValue {
            flags,
            rule: rule as u32,
            denied: 0,
        };
        target.insert(key, value, 0).map_err(|e| e.to_string())?;
    }
    Ok(cap)
}
