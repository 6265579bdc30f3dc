//! Derives an in-kernel prefilter for file opens from the loaded rules: the literal paths
//! and file names their conditions require, and the open flags (O_CREAT, write access,
//! O_TRUNC) of rules that look only at created or written files. A rule that could match
//! any open disables the prefilter (every open then reaches user space), and says so.

use std::collections::BTreeSet;

use super::expr::{Expr, Literal, Op};
use super::requirement::{required, Domain};
use super::RuleSet;

/// A necessary condition on the path of an open.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathPattern {
    /// The file itself or anything below this directory.
    Under(String),
    /// Any file with this last component.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Constraint {
    /// May match any open.
    Any,
    /// Never matches a file open.
    NotOpen,
    /// Matches only opens of these paths, or opens with any of these flags.
    Opens {
        paths: BTreeSet<PathPattern>,
        flags: u32,
    },
}

const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
/// The flags of an open `file.write` is true for (writing, truncation or creation).
pub const WRITE_FLAGS: u32 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;

/// `flags` (of the prefilter's) by name: `O_WRONLY|O_CREAT`.
pub fn flag_names(flags: u32) -> String {
    let named = [
        (O_WRONLY, "O_WRONLY"),
        (O_RDWR, "O_RDWR"),
        (O_CREAT, "O_CREAT"),
        (O_TRUNC, "O_TRUNC"),
    ];
    let names: Vec<&str> = named
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join("|")
}

fn paths_only(paths: BTreeSet<PathPattern>) -> Constraint {
    Constraint::Opens { paths, flags: 0 }
}

fn flagged(flags: u32) -> Constraint {
    Constraint::Opens {
        paths: BTreeSet::new(),
        flags,
    }
}

/// The prefilter, or the first rule that prevents one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenPrefilter {
    /// Only opens of these paths, or with any of these flags, can match.
    Patterns {
        paths: BTreeSet<PathPattern>,
        flags: u32,
    },
    Unfiltered {
        rule: String,
    },
}

/// Longest file name the kernel's name map holds (PREFILTER_NAME_LEN - 1).
pub const NAME_MAX: usize = 31;

pub fn for_rules(rules: &RuleSet) -> OpenPrefilter {
    let (mut all, mut all_flags) = (BTreeSet::new(), 0);
    for rule in &rules.rules {
        match constraint(&rule.condition, &["open"]) {
            Constraint::Any => {
                return OpenPrefilter::Unfiltered {
                    rule: rule.name.clone(),
                }
            }
            Constraint::NotOpen => {}
            Constraint::Opens { paths, flags } => {
                all.extend(paths);
                all_flags |= flags;
            }
        }
    }
    // Drop-and-execute facts come from writes in the temporary directories.
    use crate::security::facts::{drops, uses_fields};
    if uses_fields(rules, drops::FIELDS) {
        all.extend(
            drops::TEMP_DIRS
                .iter()
                .map(|d| PathPattern::Under(d.trim_end_matches('/').to_string())),
        );
    }
    OpenPrefilter::Patterns {
        paths: all,
        flags: all_flags,
    }
}

/// The path patterns one condition requires of a file open or exec (`None`: any path).
pub fn required_paths(condition: &Expr) -> Option<BTreeSet<PathPattern>> {
    match constraint(condition, &["open", "exec"]) {
        Constraint::Opens { paths, flags: 0 } => Some(paths),
        Constraint::NotOpen => Some(BTreeSet::new()),
        Constraint::Opens { .. } | Constraint::Any => None,
    }
}

pub(super) fn text(l: &Literal) -> Option<&str> {
    match l {
        Literal::Str(s) => std::str::from_utf8(s).ok(),
        _ => None,
    }
}

fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

fn name_pattern(name: &str) -> Constraint {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('/') {
        Constraint::Any
    } else {
        paths_only([PathPattern::Name(name.to_string())].into())
    }
}

fn path_pattern(op: Op, value: &str) -> Constraint {
    let under = |p: String| paths_only([PathPattern::Under(p)].into());
    if !value.starts_with('/') && op != Op::EndsWith {
        return Constraint::Any;
    }
    match op {
        Op::Eq => under(value.to_string()),
        Op::StartsWith if value.ends_with('/') => {
            under(value.trim_end_matches('/').to_string().max("/".into()))
        }
        Op::StartsWith => under(parent_dir(value)),
        // Ending in `/dir/name` means the file is called `name`.
        Op::EndsWith => match value.rsplit_once('/') {
            Some((_, name)) => name_pattern(name),
            None => Constraint::Any,
        },
        Op::Glob => {
            let wild = value.find(['*', '?']).unwrap_or(value.len());
            let last = &value[value.rfind('/').map_or(0, |i| i + 1)..];
            if wild < value.len() && !last.contains(['*', '?']) {
                name_pattern(last)
            } else {
                under(parent_dir(&value[..wild]))
            }
        }
        _ => Constraint::Any,
    }
}

/// The kernel's prefilter compares paths as written: a case-insensitive comparison (Sigma's
/// default) prefilters like its case-sensitive form, Linux paths being case-sensitive.
fn case_sensitive(op: Op) -> Op {
    match op {
        Op::IEq => Op::Eq,
        Op::IStartsWith => Op::StartsWith,
        Op::IEndsWith => Op::EndsWith,
        Op::IGlob => Op::Glob,
        other => other,
    }
}

/// `evt.syscall = name` (Falco's `evt.type`): an open-family name may be an open.
fn syscall_constraint(name: Option<&str>, kinds: &[&str]) -> Constraint {
    let open = matches!(name, Some("open" | "openat" | "openat2" | "creat"));
    let exec = matches!(name, Some("execve" | "execveat"));
    if (open && kinds.contains(&"open")) || (exec && kinds.contains(&"exec")) {
        Constraint::Any
    } else {
        Constraint::NotOpen
    }
}

/// What an open (or, with "exec" among `kinds`, an exec) must be to match: `Constraint`s.
struct OfOpens<'a> {
    /// The event kinds (`evt.kind`) that count as opens.
    kinds: &'a [&'a str],
}

fn constraint(e: &Expr, kinds: &[&str]) -> Constraint {
    required(&OfOpens { kinds }, e)
}

impl Domain for OfOpens<'_> {
    type Req = Constraint;

    fn anything(&self) -> Constraint {
        Constraint::Any
    }

    fn leaf(&self, field: &str, op: Op, value: &Literal) -> Constraint {
        match (field, op) {
            ("evt.kind", Op::Eq) => {
                if text(value).is_some_and(|k| self.kinds.contains(&k)) {
                    Constraint::Any
                } else {
                    Constraint::NotOpen
                }
            }
            ("file.path", op) => {
                text(value).map_or(Constraint::Any, |v| path_pattern(case_sensitive(op), v))
            }
            // An open has a target only when it creates the file (file.target) or opens it
            // for writing (fs.path.target).
            (target @ ("file.target" | "fs.path.target"), op) => {
                match text(value).map(|v| path_pattern(case_sensitive(op), v)) {
                    Some(c @ Constraint::Opens { .. }) => c,
                    _ if target == "file.target" => flagged(O_CREAT),
                    _ => flagged(WRITE_FLAGS),
                }
            }
            ("file.create", Op::Eq) if *value == Literal::Bool(true) => flagged(O_CREAT),
            ("file.trunc", Op::Eq) if *value == Literal::Bool(true) => flagged(O_TRUNC),
            ("file.write", Op::Eq) if *value == Literal::Bool(true) => flagged(WRITE_FLAGS),
            ("evt.syscall", Op::Eq) => syscall_constraint(text(value), self.kinds),
            ("file.name", Op::Eq) => text(value).map_or(Constraint::Any, name_pattern),
            _ => Constraint::Any,
        }
    }

    fn all(&self, parts: Vec<Constraint>) -> Constraint {
        if parts.contains(&Constraint::NotOpen) {
            return Constraint::NotOpen;
        }
        // Every conjunct is necessary: the narrowest will do (paths alone before flags,
        // then the fewest flags and paths).
        parts
            .into_iter()
            .filter(|c| matches!(c, Constraint::Opens { .. }))
            .min_by_key(|c| match c {
                Constraint::Opens { paths, flags } => (flags.count_ones(), paths.len()),
                _ => (u32::MAX, usize::MAX),
            })
            .unwrap_or(Constraint::Any)
    }

    fn one_of(&self, parts: Vec<Constraint>) -> Constraint {
        let (mut out, mut out_flags) = (BTreeSet::new(), 0);
        let mut any_open = false;
        for c in parts {
            match c {
                Constraint::Any => return Constraint::Any,
                Constraint::NotOpen => {}
                Constraint::Opens { paths, flags } => {
                    any_open = true;
                    out.extend(paths);
                    out_flags |= flags;
                }
            }
        }
        if any_open {
            Constraint::Opens {
                paths: out,
                flags: out_flags,
            }
        } else {
            Constraint::NotOpen
        }
    }
}

/// (inode, kernel dev) of `path`, or of its nearest existing ancestor.
pub fn inode_key(path: &str) -> Option<(u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut p = std::path::PathBuf::from(path);
    loop {
        if let Ok(m) = std::fs::metadata(&p) {
            let dev = m.dev();
            // The kernel's internal encoding (MKDEV) differs from st_dev's.
            let kdev = (libc::major(dev) << 20) | libc::minor(dev);
            return Some((m.ino(), kdev));
        }
        if !p.pop() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefilter(src: &str) -> OpenPrefilter {
        let rules = super::super::load(&[("t.yaml", src)]).unwrap();
        for_rules(&rules)
    }

    #[test]
    fn default_rules_have_a_prefilter() {
        let rules = super::super::load(&[("d", super::super::DEFAULT_RULES)]).unwrap();
        let OpenPrefilter::Patterns { paths: p, flags: 0 } = for_rules(&rules) else {
            panic!(
                "default rules must be prefilterable: {:?}",
                for_rules(&rules)
            );
        };
        assert!(p.contains(&PathPattern::Under("/etc/shadow".into())));
        assert!(p.contains(&PathPattern::Name("mem".into())));
        assert!(p.contains(&PathPattern::Name(".bashrc".into())));
        assert!(p.contains(&PathPattern::Name("ld.so.preload".into())));
        assert!(p.contains(&PathPattern::Under("/var/log".into())));
        assert!(
            p.contains(&PathPattern::Under("/etc".into())),
            "from /etc/cron"
        );
        // Destination-path rules and the drop facts push their paths down too.
        assert!(p.contains(&PathPattern::Name("authorized_keys".into())));
        assert!(p.contains(&PathPattern::Under(
            "/usr/lib/x86_64-linux-gnu/security".into()
        )));
        assert!(p.contains(&PathPattern::Under("/proc/sys/kernel/kptr_restrict".into())));
        assert!(p.contains(&PathPattern::Under("/tmp".into())));
        assert!(
            !p.iter().any(
                |x| matches!(x, PathPattern::Under(d) if d == "/" || d == "/usr/lib" || d == "/usr")
            ),
            "{p:?}"
        );
    }

    #[test]
    fn open_rules_without_paths_disable_it() {
        let src = "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = open and proc.name = x\n";
        assert_eq!(
            prefilter(src),
            OpenPrefilter::Unfiltered { rule: "r".into() }
        );
        let src = "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = exec or file.path startswith /srv/\n";
        assert_eq!(
            prefilter(src),
            OpenPrefilter::Patterns {
                paths: [PathPattern::Under("/srv".into())].into(),
                flags: 0
            }
        );
        let src = "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = kill\n";
        assert_eq!(
            prefilter(src),
            OpenPrefilter::Patterns {
                paths: BTreeSet::new(),
                flags: 0
            }
        );
    }

    fn rule(condition: &str) -> String {
        format!("- rule: r\n  desc: d\n  severity: low\n  condition: {condition}\n")
    }

    #[test]
    fn creation_and_write_rules_prefilter_on_flags() {
        let flags_of = |condition: &str| match prefilter(&rule(condition)) {
            OpenPrefilter::Patterns { paths, flags } if paths.is_empty() => flags,
            other => panic!("{condition}: {other:?}"),
        };
        assert_eq!(
            flags_of("evt.kind = open and file.create = true and file.target contains x"),
            O_CREAT
        );
        assert_eq!(
            flags_of("evt.kind = open and file.target contains x"),
            O_CREAT
        );
        assert_eq!(
            flags_of("evt.kind = open and file.write = true and file.name contains x"),
            WRITE_FLAGS
        );
        assert_eq!(
            flags_of("evt.kind = open and (file.trunc = true or file.create = true)"),
            O_TRUNC | O_CREAT
        );
        // A literal path is narrower than flags; a read rule on any path still needs all.
        assert_eq!(
            prefilter(&rule(
                "evt.kind = open and file.write = true and file.path = /etc/x"
            )),
            OpenPrefilter::Patterns {
                paths: [PathPattern::Under("/etc/x".into())].into(),
                flags: 0
            }
        );
        assert!(matches!(
            prefilter(&rule("evt.kind = open and file.write = false")),
            OpenPrefilter::Unfiltered { .. }
        ));
        // Deny rules need paths fanotify can mark: flags are not enough.
        let rules =
            super::super::load(&[("t", rule("evt.kind = open and file.create = true").as_str())])
                .unwrap();
        assert_eq!(required_paths(&rules.rules[0].condition), None);
    }
}
