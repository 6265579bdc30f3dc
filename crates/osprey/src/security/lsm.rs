//! Deny through BPF LSM where the kernel offers it (`lsm=...,bpf`, BPF LSM programs allowed):
//! the open or exec fails with EPERM inside the kernel, before it happens, and for every
//! process at once. Only `deny` rules the kernel can decide alone qualify: `evt.kind`
//! open/exec and literal paths joined by `and`. Where they do not, or BPF LSM does not
//! load, the enforcement plan falls back to fanotify permission events.

use std::os::unix::fs::MetadataExt;

use super::rules::expr::{Expr, Literal, Op};
use super::rules::{fields, Rule};
use crate::kernel::loader::{Attach, CapabilitySpec, Hook, LoadedCapability, Role};

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

// SAFETY: plain integers; any bit pattern is valid.
unsafe impl aya::Pod for DenyKey {}

/// One path the kernel denies, with what it denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDeny {
    pub rule: usize,
    pub path: String,
    pub flags: u32,
}

/// What the deny rules on opens and execs ask (each with its index in the rule set), if
/// the kernel can decide every one of them alone.
pub fn kernel_denies(rules: &[(usize, &Rule)]) -> Option<Vec<KernelDeny>> {
    let mut out = Vec::new();
    for &(index, rule) in rules {
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

/// Loads and attaches the LSM programs and fills their deny map. Errors say why BPF LSM
/// cannot be used (the caller falls back to fanotify).
pub fn start(denies: &[KernelDeny]) -> Result<LoadedCapability, String> {
    super::enforce_object::load(
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

    fn denies(src: &str) -> Option<Vec<KernelDeny>> {
        let set = super::super::rules::load_for_test("t.yaml", src);
        kernel_denies(&set.rules.iter().enumerate().collect::<Vec<_>>())
    }

    #[test]
    fn only_path_and_kind_rules_are_decided_in_the_kernel() {
        let kernel = denies(
            "- rule: a\n  desc: d\n  severity: high\n  condition: evt.kind = open and file.path = /etc/x\n  action: deny\n- rule: b\n  desc: d\n  severity: high\n  condition: file.path startswith /srv/\n  action: deny\n",
        );
        assert_eq!(
            kernel.unwrap(),
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
        let user = denies(
            "- rule: c\n  desc: d\n  severity: high\n  condition: evt.kind = open and file.path = /etc/x and proc.name != cat\n  action: deny\n",
        );
        assert_eq!(user, None, "proc.name needs user space");
    }
}
