//! The security syscalls (`security::syscall::SYSCALLS`) a rule set can match, from the
//! `evt.kind` and `evt.syscall` its conditions require: the security object's exit hook is
//! narrowed to them, and attached to their own tracepoints when they are few. A rule that
//! does not say which it needs (or a fact derived from security events) keeps them all.

use std::collections::BTreeSet;

use super::expr::{Expr, Op};
use super::fields;
use super::prefilter::text;
use super::RuleSet;
use crate::security::syscall::SYSCALLS;

/// The security syscalls `rules` need; `None`: all of them.
pub fn needed(rules: &RuleSet) -> Option<BTreeSet<&'static str>> {
    use crate::security::facts::{accounts, drops, uses_fields};
    if uses_fields(rules, drops::FIELDS) || uses_fields(rules, accounts::FIELDS) {
        return None;
    }
    let mut all = BTreeSet::new();
    for rule in &rules.rules {
        all.extend(of_condition(&rule.condition)?);
    }
    Some(all)
}

/// The syscalls of class `kind` (`evt.kind`), or named `name` (`evt.syscall`).
fn matching(field: &str, value: &str) -> BTreeSet<&'static str> {
    let by = |s: &&(u32, &'static str, &'static str)| match field {
        "evt.kind" => s.2 == value,
        _ => s.1 == value,
    };
    SYSCALLS.iter().filter(by).map(|s| s.1).collect()
}

/// The security syscalls an event matching `e` can come from; `None`: any.
fn of_condition(e: &Expr) -> Option<BTreeSet<&'static str>> {
    match e {
        Expr::Cmp {
            field,
            op: Op::Eq,
            value,
        } => match fields::name(*field) {
            f @ ("evt.kind" | "evt.syscall") => Some(matching(f, text(value)?)),
            _ => None,
        },
        Expr::In { field, set } => match fields::name(*field) {
            f @ ("evt.kind" | "evt.syscall") => {
                set.iter().try_fold(BTreeSet::new(), |mut all, l| {
                    all.extend(matching(f, text(l)?));
                    Some(all)
                })
            }
            _ => None,
        },
        // Every conjunct must hold: the syscalls all of those that say allow.
        Expr::And(parts) => parts
            .iter()
            .filter_map(of_condition)
            .reduce(|a, b| a.intersection(&b).copied().collect()),
        Expr::Or(parts) => parts.iter().try_fold(BTreeSet::new(), |mut all, p| {
            all.extend(of_condition(p)?);
            Some(all)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needed_by(conditions: &[&str]) -> Option<Vec<&'static str>> {
        let src: String = conditions
            .iter()
            .enumerate()
            .map(|(i, c)| format!("- rule: r{i}\n  desc: d\n  severity: low\n  condition: {c}\n"))
            .collect();
        needed(&super::super::load_for_test("t.yaml", &src)).map(|s| s.into_iter().collect())
    }

    #[test]
    fn kinds_and_syscall_names_narrow_and_anything_else_keeps_all() {
        assert_eq!(
            needed_by(&[
                "evt.kind = ptrace",
                "evt.kind in (setns, open) and evt.ret = 0"
            ]),
            Some(vec!["ptrace", "setns"])
        );
        assert_eq!(
            needed_by(&["evt.kind = setid and evt.syscall in (setuid, setresuid)"]),
            Some(vec!["setresuid", "setuid"])
        );
        assert_eq!(
            needed_by(&["evt.kind = exec or evt.syscall = openat"]),
            Some(vec![])
        );
        assert_eq!(needed_by(&["evt.kind = bpf", "proc.name = nc"]), None);
        assert_eq!(needed_by(&["not evt.kind = bpf"]), None);
        assert_eq!(needed_by(&["evt.kind = mount or proc.name = nc"]), None);
    }

    #[test]
    fn the_default_rules_keep_what_their_facts_need() {
        use crate::security::rules::{DEFAULT_RULES, DEFAULT_RULES_NAME};
        let defaults = super::super::load_for_test(DEFAULT_RULES_NAME, DEFAULT_RULES);
        // Their dropped-program and account facts come from renames, links and connects.
        assert_eq!(needed(&defaults), None);
    }
}
