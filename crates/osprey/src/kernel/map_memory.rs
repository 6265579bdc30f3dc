//! Kernel memory held by this process's BPF maps (what counts against a container's memory
//! limit besides its RSS), read from the kernel's own accounting: the `memlock` line of
//! each map fd's /proc/self/fdinfo entry.

use std::collections::{BTreeMap, HashMap};

/// One BPF map this process holds an fd of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMemory {
    pub id: u32,
    /// The map's name as the kernel has it (at most 15 bytes); empty when unreadable.
    pub name: String,
    /// Bytes the kernel charges for the map (fdinfo `memlock`).
    pub bytes: u64,
}

/// Every BPF map this process holds, once each (by map id), in id order. `names` keeps the
/// names already looked up (one syscall each), by id; ids of maps gone are forgotten.
pub fn own_maps(names: &mut HashMap<u32, String>) -> Vec<MapMemory> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut maps = BTreeMap::new();
    for fd in fds.flatten() {
        let is_map = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let info = std::path::Path::new("/proc/self/fdinfo").join(fd.file_name());
        let Ok(text) = std::fs::read_to_string(info) else {
            continue;
        };
        if let Some((id, bytes)) = parse_fdinfo(&text) {
            maps.entry(id).or_insert(bytes);
        }
    }
    names.retain(|id, _| maps.contains_key(id));
    maps.into_iter()
        .map(|(id, bytes)| MapMemory {
            id,
            name: names.entry(id).or_insert_with(|| map_name(id)).clone(),
            bytes,
        })
        .collect()
}

/// (map_id, memlock) of a map fd's fdinfo text.
fn parse_fdinfo(text: &str) -> Option<(u32, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    let id = u32::try_from(field("map_id:")?).ok()?;
    Some((id, field("memlock:")?))
}

fn map_name(id: u32) -> String {
    aya::maps::MapInfo::from_id(id)
        .ok()
        .and_then(|info| info.name_as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// This process's resident set now and at its peak (VmRSS, VmHWM of /proc/self/status), bytes.
pub fn own_rss_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |name: &str| {
        status.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.trim().strip_suffix("kB")?;
            v.trim().parse::<u64>().ok()
        })
    };
    Some((kib("VmRSS:")? * 1024, kib("VmHWM:")? * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_gives_id_and_memlock() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t27\n\
                    key_size:\t0\nvalue_size:\t0\nmax_entries:\t4096\nmap_flags:\t0x0\n\
                    map_extra:\t0x0\nmemlock:\t12288\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(parse_fdinfo(text), Some((42, 12288)));
        assert_eq!(parse_fdinfo("pos:\t0\n"), None);
    }

    #[test]
    fn own_rss_is_read_and_the_peak_is_at_least_the_current() {
        let (rss, peak) = own_rss_bytes().expect("/proc/self/status");
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
    }
}
