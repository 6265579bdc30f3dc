//! Derives an in-kernel prefilter for file opens from the loaded rules: the literal paths
//! and file names their conditions require. A rule that could match an open of any path
//! disables the prefilter (every open then reaches user space), and says so.

use std::collections::BTreeSet;

use super::expr::{Expr, Literal, Op};
use super::fields;
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
    /// May match an open of any path.
    Any,
    /// Never matches a file open.
    NotOpen,
    Paths(BTreeSet<PathPattern>),
}

/// The prefilter, or the first rule that prevents one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenPrefilter {
    Patterns(BTreeSet<PathPattern>),
    Unfiltered { rule: String },
}

/// Longest file name the kernel's name map holds (PREFILTER_NAME_LEN - 1).
pub const NAME_MAX: usize = 31;

pub fn for_rules(rules: &RuleSet) -> OpenPrefilter {
    let mut all = BTreeSet::new();
    for rule in &rules.rules {
        match constraint(&rule.condition, &["open"]) {
            Constraint::Any => {
                return OpenPrefilter::Unfiltered {
                    rule: rule.name.clone(),
                }
            }
            Constraint::NotOpen => {}
            Constraint::Paths(p) => all.extend(p),
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
    OpenPrefilter::Patterns(all)
}

/// The path patterns one condition requires of a file open or exec (`None`: any path).
pub fn required_paths(condition: &Expr) -> Option<BTreeSet<PathPattern>> {
    match constraint(condition, &["open", "exec"]) {
        Constraint::Paths(p) => Some(p),
        Constraint::NotOpen => Some(BTreeSet::new()),
        Constraint::Any => None,
    }
}

fn text(l: &Literal) -> Option<&str> {
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
        Constraint::Paths([PathPattern::Name(name.to_string())].into())
    }
}

fn path_pattern(op: Op, value: &str) -> Constraint {
    let under = |p: String| Constraint::Paths([PathPattern::Under(p)].into());
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

fn constraint(e: &Expr, kinds: &[&str]) -> Constraint {
    let field = |id| fields::name(id);
    match e {
        Expr::Cmp {
            field: f,
            op,
            value,
        } => match (field(*f), op) {
            ("evt.kind", Op::Eq) => {
                if text(value).is_some_and(|k| kinds.contains(&k)) {
                    Constraint::Any
                } else {
                    Constraint::NotOpen
                }
            }
            ("file.path" | "file.target" | "fs.path.target", op) => {
                text(value).map_or(Constraint::Any, |v| path_pattern(case_sensitive(*op), v))
            }
            ("evt.syscall", Op::Eq) => syscall_constraint(text(value), kinds),
            ("file.name", Op::Eq) => text(value).map_or(Constraint::Any, name_pattern),
            _ => Constraint::Any,
        },
        Expr::In { field: f, set } if field(*f) == "evt.syscall" => {
            union(set.iter().map(|l| syscall_constraint(text(l), kinds)))
        }
        Expr::In { field: f, set } => match field(*f) {
            "evt.kind" => {
                if set
                    .iter()
                    .any(|l| text(l).is_some_and(|k| kinds.contains(&k)))
                {
                    Constraint::Any
                } else {
                    Constraint::NotOpen
                }
            }
            "file.path" | "fs.path.target" | "file.name" => {
                let is_path = field(*f) != "file.name";
                union(set.iter().map(|l| match text(l) {
                    Some(v) if is_path => path_pattern(Op::Eq, v),
                    Some(v) => name_pattern(v),
                    None => Constraint::Any,
                }))
            }
            _ => Constraint::Any,
        },
        Expr::And(parts) => {
            let cs: Vec<Constraint> = parts.iter().map(|p| constraint(p, kinds)).collect();
            if cs.contains(&Constraint::NotOpen) {
                return Constraint::NotOpen;
            }
            // Every conjunct is necessary: the narrowest path constraint will do.
            cs.into_iter()
                .filter_map(|c| match c {
                    Constraint::Paths(p) => Some(p),
                    _ => None,
                })
                .min_by_key(BTreeSet::len)
                .map_or(Constraint::Any, Constraint::Paths)
        }
        Expr::Or(parts) => union(parts.iter().map(|p| constraint(p, kinds))),
        Expr::Not(_) => Constraint::Any,
    }
}

fn union(cs: impl Iterator<Item = Constraint>) -> Constraint {
    let mut out = BTreeSet::new();
    let mut any_open = false;
    for c in cs {
        match c {
            Constraint::Any => return Constraint::Any,
            Constraint::NotOpen => {}
            Constraint::Paths(p) => {
                any_open = true;
                out.extend(p);
            }
        }
    }
    if any_open {
        Constraint::Paths(out)
    } else {
        Constraint::NotOpen
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
        let OpenPrefilter::Patterns(p) = for_rules(&rules) else {
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
            OpenPrefilter::Patterns([PathPattern::Under("/srv".into())].into())
        );
        let src = "- rule: r\n  desc: d\n  severity: low\n  condition: evt.kind = kill\n";
        assert_eq!(prefilter(src), OpenPrefilter::Patterns(BTreeSet::new()));
    }
}
