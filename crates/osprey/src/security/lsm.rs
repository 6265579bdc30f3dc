//! Deny through BPF LSM where the kernel offers it (`lsm=...,bpf`, BPF LSM programs allowed):
//! the open or exec fails with EPERM inside the kernel, before it happens, and for every
//! process at once. Only `deny` rules the kernel can decide alone qualify: `evt.kind`
//! open/exec and literal paths joined by `and`. Otherwise (or where BPF LSM is missing, as
//! on our 6.18 machines) `osprey secure` falls back to fanotify permission events.

use std::os::unix::fs::MetadataExt;

use aya::maps::HashMap;

use super::rules::expr::{Expr, Literal, Op};
use super::rules::{fields, Action, RuleSet};
use crate::kernel::loader::{Attach, CapabilitySpec, Hook, LoadOptions, LoadedCapability, Role};

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "enforce",
    object: osprey_bpf::ENFORCE,
    roles: &[
        Role {
            name: "deny-open",
            required: true,
            hooks: &[Hook {
                program: "enforce_file_open",
                attach: Attach::Lsm("file_open"),
            }],
        },
        Role {
            name: "deny-exec",
            required: true,
            hooks: &[Hook {
                program: "enforce_exec",
                attach: Attach::Lsm("bprm_check_security"),
            }],
        },
    ],
    kinds: &[],
    default_ring_bytes: 4096,
};

const DENY_OPEN: u32 = 1;
const DENY_EXEC: u32 = 2;
const DENY_CHILDREN: u32 = 4;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DenyKey {
    ino: u64,
    dev: u32,
    _pad: u32,
}

/// Value of the enforce object's deny maps (file and connect).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DenyValue {
    flags: u32,
    rule: u32,
    denied: u64,
}

// SAFETY: plain integers; any bit pattern is valid.
unsafe impl aya::Pod for DenyKey {}
// SAFETY: plain integers; any bit pattern is valid.
unsafe impl aya::Pod for DenyValue {}

/// One path the kernel denies, with what it denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDeny {
    pub rule: usize,
    pub path: String,
    pub flags: u32,
}

/// What the deny rules ask, if the kernel can decide every one of them alone.
pub fn kernel_denies(rules: &RuleSet) -> Option<Vec<KernelDeny>> {
    let mut out = Vec::new();
    for (index, rule) in rules.rules.iter().enumerate() {
        if rule.action != Action::Deny || super::connect_deny::is_connect_rule(rule) {
            continue;
        }
        let terms = rule.condition.conjuncts();
        let mut ops = DENY_OPEN | DENY_EXEC;
        let mut paths: Vec<(String, u32)> = Vec::new();
        for term in terms {
            let (field, op, values): (&str, Op, Vec<&Literal>) = match term {
                Expr::Cmp { field, op, value } => (fields::name(*field), *op, vec![value]),
                Expr::In { field, set } => (fields::name(*field), Op::Eq, set.iter().collect()),
                _ => return None,
            };
            let values: Vec<String> = values
                .into_iter()
                .map(Literal::text)
                .collect::<Option<_>>()?;
            match (field, op) {
                ("evt.kind", Op::Eq) => {
                    let mut kinds = 0;
                    for v in &values {
                        kinds |= match v.as_str() {
                            "open" => DENY_OPEN,
                            "exec" => DENY_EXEC,
                            _ => return None,
                        };
                    }
                    ops &= kinds;
                }
                ("file.path", Op::Eq) => paths.extend(values.into_iter().map(|p| (p, 0))),
                // A directory's direct children, as fanotify marks them.
                ("file.path", Op::StartsWith) if values.iter().all(|v| v.ends_with('/')) => {
                    paths.extend(values.into_iter().map(|p| (p, DENY_CHILDREN)))
                }
                _ => return None,
            }
        }
        if paths.is_empty() || ops == 0 {
            return None;
        }
        out.extend(paths.into_iter().map(|(path, extra)| KernelDeny {
            rule: index,
            path,
            flags: ops | extra,
        }));
    }
    Some(out)
}

/// Linux's st_dev → the kernel's internal dev_t (major << 20 | minor).
fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | minor
}

/// Loads `spec` (a part of the enforce object), never denying Osprey itself, and fills
/// `map` with (key, rule index, flags) entries.
pub(super) fn load_enforce<K: aya::Pod>(
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

/// Loads and attaches the LSM programs and fills their deny map. Errors say why BPF LSM
/// cannot be used (the caller falls back to fanotify).
pub fn start(denies: &[KernelDeny]) -> Result<LoadedCapability, String> {
    load_enforce(
        SPEC,
        "deny_inodes",
        denies.iter().map(|deny| {
            let meta = std::fs::metadata(&deny.path).map_err(|e| format!("{}: {e}", deny.path))?;
            let key = DenyKey {
                ino: meta.ino(),
                dev: kernel_dev(meta.dev()),
                _pad: 0,
            };
            Ok((key, deny.rule, deny.flags))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(src: &str) -> RuleSet {
        super::super::rules::load_for_test("t.yaml", src)
    }

    #[test]
    fn only_path_and_kind_rules_are_decided_in_the_kernel() {
        let kernel = rules(
            "- rule: a\n  desc: d\n  severity: high\n  condition: evt.kind = open and file.path = /etc/x\n  action: deny\n- rule: b\n  desc: d\n  severity: high\n  condition: file.path startswith /srv/\n  action: deny\n",
        );
        assert_eq!(
            kernel_denies(&kernel).unwrap(),
            vec![
                KernelDeny {
                    rule: 0,
                    path: "/etc/x".into(),
                    flags: DENY_OPEN
                },
                KernelDeny {
                    rule: 1,
                    path: "/srv/".into(),
                    flags: DENY_OPEN | DENY_EXEC | DENY_CHILDREN
                },
            ]
        );
        let user = rules(
            "- rule: c\n  desc: d\n  severity: high\n  condition: evt.kind = open and file.path = /etc/x and proc.name != cat\n  action: deny\n",
        );
        assert_eq!(kernel_denies(&user), None, "proc.name needs user space");
    }
}
