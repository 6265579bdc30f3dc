//! The security syscalls (`security::syscall::SYSCALLS`) a rule set can match, from the
//! `evt.kind` and `evt.syscall` its conditions require: the security object's exit hook is
//! narrowed to them, and attached to their own tracepoints when they are few. A rule that
//! does not say which it needs (or a fact derived from security events) keeps them all.

use std::collections::BTreeSet;

use super::expr::{Literal, Op};
use super::prefilter::text;
use super::requirement::{all_of_sets, one_of_sets, required, Domain};
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
        all.extend(required(&SecuritySyscalls, &rule.condition)?);
    }
    Some(all)
}

/// The security syscalls an event can come from (`None`: any).
struct SecuritySyscalls;

impl Domain for SecuritySyscalls {
    type Req = Option<BTreeSet<&'static str>>;

    fn anything(&self) -> Self::Req {
        None
    }

    /// `evt.kind = K`: the syscalls of class K; `evt.syscall = NAME`: that one.
    fn leaf(&self, field: &str, op: Op, value: &Literal) -> Self::Req {
        let value = text(value).filter(|_| op == Op::Eq)?;
        let by_class = match field {
            "evt.kind" => true,
            "evt.syscall" => false,
            _ => return None,
        };
        let named = |&&(_, name, class): &&(u32, &'static str, &'static str)| {
            value == if by_class { class } else { name }
        };
        Some(SYSCALLS.iter().filter(named).map(|s| s.1).collect())
    }

    fn all(&self, parts: Vec<Self::Req>) -> Self::Req {
        all_of_sets(parts)
    }

    fn one_of(&self, parts: Vec<Self::Req>) -> Self::Req {
        one_of_sets(parts)
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
