//! `kill` through `bpf_send_signal(SIGKILL)` at syscall exit, from a kernel map of
//! (syscall, comm): the process dies, but the syscall has completed. Only rules the kernel
//! can decide alone qualify.

use std::collections::BTreeSet;

use aya::maps::HashMap;

use super::rules::expr::Literal;
use super::rules::{Rule, RuleError};
use super::syscall::{syscall_number, SYSCALLS};
use crate::kernel::loader::LoadedCapability;

#[repr(C)]
#[derive(Clone, Copy)]
struct KillKey {
    nr: u32,
    comm: [u8; 16],
}

// SAFETY: integers and bytes; 20 bytes, no implicit padding.
unsafe impl aya::Pod for KillKey {}

/// `.rodata` settings that turn the kill map on.
pub fn globals() -> Vec<(&'static str, Vec<u8>)> {
    vec![("kill_rules_enabled", vec![1])]
}

/// One (syscall number, comm) entry of the kernel's kill map; an empty comm is any process.
pub type KillEntry = (u32, Vec<u8>);

/// Compiles `kill` rules for the kernel. They must be a conjunction of `evt.kind` /
/// `evt.syscall` (security syscalls) and optionally `proc.name` conditions, because the
/// kernel decides alone.
pub fn kill_entries(rules: &[(usize, &Rule)]) -> Result<Vec<KillEntry>, Vec<RuleError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for &(_, rule) in rules {
        let terms = rule.condition.conjuncts();
        let mut syscalls: Option<BTreeSet<u32>> = None;
        let mut comms: Option<Vec<Vec<u8>>> = None;
        let mut bad = None;
        for t in terms {
            let Some((field, values)) = t.equality() else {
                bad = Some("only `=` and `in` comparisons joined by `and`".to_string());
                break;
            };
            let strings: Vec<&[u8]> = values
                .iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => Some(s.as_slice()),
                    _ => None,
                })
                .collect();
            match field {
                "evt.syscall" | "evt.kind" => {
                    let mut set = BTreeSet::new();
                    for s in strings {
                        let s = String::from_utf8_lossy(s);
                        let nrs: Vec<u32> = if field == "evt.syscall" {
                            syscall_number(&s).into_iter().collect()
                        } else {
                            SYSCALLS.iter().filter(|x| x.2 == s).map(|x| x.0).collect()
                        };
                        if nrs.is_empty() {
                            bad = Some(format!(
                                "`{s}` is not a security syscall the kernel side sees"
                            ));
                        }
                        set.extend(nrs);
                    }
                    syscalls = Some(match syscalls {
                        Some(prev) => prev.intersection(&set).copied().collect(),
                        None => set,
                    });
                }
                "proc.name" => comms = Some(strings.iter().map(|s| s.to_vec()).collect()),
                other => bad = Some(format!("`{other}` cannot be decided in the kernel")),
            }
        }
        let message = match (bad, &syscalls) {
            (Some(b), _) => Some(b),
            (None, None) => Some("it names no `evt.syscall` or `evt.kind`".to_string()),
            _ => None,
        };
        if let Some(m) = message {
            errors.push(rule.error(format!(
                "kill rule `{}` must be decidable in the kernel (evt.syscall/evt.kind and proc.name joined by `and`): {m}",
                rule.name
            )));
            continue;
        }
        for nr in syscalls.unwrap_or_default() {
            match &comms {
                None => out.push((nr, Vec::new())),
                Some(c) => out.extend(c.iter().map(|comm| (nr, comm.clone()))),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Fills the security object's kill map (loaded with [`globals`]).
pub fn fill_map(security: &mut LoadedCapability, entries: &[KillEntry]) -> Result<(), String> {
    let map = security
        .map_mut("sec_kill_rules")
        .ok_or("sec_kill_rules missing from the security object")?;
    let mut map: HashMap<_, KillKey, u32> = HashMap::try_from(map).map_err(|e| e.to_string())?;
    for (i, (nr, comm)) in entries.iter().enumerate() {
        let mut key = KillKey {
            nr: *nr,
            comm: [0; 16],
        };
        let n = comm.len().min(15);
        key.comm[..n].copy_from_slice(&comm[..n]);
        map.insert(key, i as u32, 0)
            .map_err(|e| format!("kill map: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_rules_compile_for_the_kernel_or_are_rejected() {
        let entries = |src: &str| {
            let set = super::super::rules::load_for_test("k.yaml", src);
            kill_entries(&set.rules.iter().enumerate().collect::<Vec<_>>())
        };
        let ok = entries("- rule: k\n  desc: d\n  severity: high\n  action: kill\n  condition: evt.syscall in (chmod, fchmodat) and proc.name = evil\n");
        assert_eq!(
            ok.unwrap(),
            vec![(90, b"evil".to_vec()), (268, b"evil".to_vec())]
        );
        let bad = entries("- rule: k\n  desc: d\n  severity: high\n  action: kill\n  condition: evt.kind = ptrace and file.path = /x\n");
        let e = bad.unwrap_err();
        assert!(e[0].to_string().starts_with("k.yaml:1:9: "), "{}", e[0]);
        assert!(
            e[0].message.contains("`file.path` cannot be decided"),
            "{}",
            e[0]
        );
    }
}
