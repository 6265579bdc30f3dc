//! The files prefilter: the inodes and names of the rules' literal paths, written into the
//! files object so that only opens the rules can match reach user space.

use std::collections::BTreeSet;

use aya::maps::HashMap;

use crate::kernel::loader::{CapabilitySpec, LoadError, LoadOptions, LoadedCapability};

use super::rules::prefilter::{self, inode_key, OpenPrefilter, PathPattern, NAME_MAX};
use super::rules::RuleSet;

#[repr(C)]
#[derive(Clone, Copy)]
struct PrefilterInode {
    ino: u64,
    dev: u32,
    _pad: u32,
}

// SAFETY: plain integers, no padding beyond the explicit field.
unsafe impl aya::Pod for PrefilterInode {}

/// `.rodata` settings that turn the files prefilter on; opens with any of `open_flags`
/// pass whatever their path.
pub fn prefilter_globals(open_flags: u32) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("prefilter_enabled", vec![1]),
        ("prefilter_open_flags", open_flags.to_ne_bytes().to_vec()),
    ]
}

/// Fills the files prefilter maps; returns how many inodes and names went in.
pub fn fill_prefilter(
    files: &mut LoadedCapability,
    patterns: &BTreeSet<PathPattern>,
) -> Result<(usize, usize), String> {
    let mut inodes = BTreeSet::new();
    let mut names = BTreeSet::new();
    for p in patterns {
        match p {
            PathPattern::Under(path) => {
                if let Some((ino, dev)) = inode_key(path) {
                    inodes.insert((ino, dev));
                }
                // The same file inside a container (another root, another inode) passes by
                // its name; the rule still compares the whole path.
                if !std::path::Path::new(path).is_dir() {
                    if let Some(n) = path.rsplit('/').next().filter(|n| !n.is_empty()) {
                        if n.len() <= NAME_MAX {
                            names.insert(n.to_string());
                        }
                    }
                }
            }
            PathPattern::Name(n) if n.len() <= NAME_MAX => {
                names.insert(n.clone());
            }
            PathPattern::Name(_) => {}
        }
    }
    {
        let map = files
            .map_mut("files_prefilter_inodes")
            .ok_or("files_prefilter_inodes missing from the files object")?;
        let mut map: HashMap<_, PrefilterInode, u8> =
            HashMap::try_from(map).map_err(|e| e.to_string())?;
        for &(ino, dev) in &inodes {
            map.insert(PrefilterInode { ino, dev, _pad: 0 }, 1, 0)
                .map_err(|e| format!("prefilter inode: {e}"))?;
        }
    }
    let map = files
        .map_mut("files_prefilter_names")
        .ok_or("files_prefilter_names missing from the files object")?;
    let mut map: HashMap<_, [u8; 32], u8> = HashMap::try_from(map).map_err(|e| e.to_string())?;
    for n in &names {
        let mut key = [0u8; 32];
        key[..n.len()].copy_from_slice(n.as_bytes());
        map.insert(key, 1, 0)
            .map_err(|e| format!("prefilter name: {e}"))?;
    }
    Ok((inodes.len(), names.len()))
}

/// The files capability that feeds the rules' open conditions.
pub enum RuleOpens {
    /// No rule looks at file opens: nothing loaded.
    NotNeeded,
    /// Only opens of the paths the rules name, or with the open flags they need (O_CREAT,
    /// write access, O_TRUNC), reach user space.
    Prefiltered {
        cap: LoadedCapability,
        inodes: usize,
        names: usize,
        flags: u32,
    },
    /// `rule` may match an open of any path: every open reaches user space.
    Unfiltered { cap: LoadedCapability, rule: String },
}

/// Loads `spec` (the files object) for the opens `set` looks at, prefiltered in the kernel
/// where the rules' paths allow it.
pub fn load_rule_opens(
    set: &RuleSet,
    spec: CapabilitySpec,
    mut options: LoadOptions,
) -> Result<RuleOpens, LoadError> {
    match prefilter::for_rules(set) {
        OpenPrefilter::Patterns { paths, flags: 0 } if paths.is_empty() => Ok(RuleOpens::NotNeeded),
        OpenPrefilter::Patterns { paths, flags } => {
            options.extra_globals.extend(prefilter_globals(flags));
            let mut cap = LoadedCapability::load(spec, &options)?;
            let (inodes, names) =
                fill_prefilter(&mut cap, &paths).map_err(|reason| LoadError::Map {
                    capability: spec.name,
                    reason,
                })?;
            Ok(RuleOpens::Prefiltered {
                cap,
                inodes,
                names,
                flags,
            })
        }
        OpenPrefilter::Unfiltered { rule } => Ok(RuleOpens::Unfiltered {
            cap: LoadedCapability::load(spec, &options)?,
            rule: rule.to_string(),
        }),
    }
}
