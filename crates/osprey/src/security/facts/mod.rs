//! Facts derived in user space from a sequence of events, for rules that one event alone
//! cannot decide: whether an executed file was dropped (written or made executable in a
//! temporary location by something other than a toolchain, or by a downloader), and which
//! accounts a change of the account databases created or changed.
//!
//! Each fact is kept only when a loaded rule uses one of its fields.

pub mod accounts;
pub mod drops;
pub mod target;

use crate::pipeline::cache::ProcessContext;
use crate::pipeline::event::{Event, Payload};

use super::rules::expr::Expr;
use super::rules::{fields, Rule, RuleSet};

/// The facts about one event.
#[derive(Debug, Default)]
pub struct Derived {
    /// An exec of a dropped file: who dropped it.
    pub dropper: Option<drops::Dropper>,
    /// Accounts a change of the account databases created or changed.
    pub accounts: Vec<accounts::AccountChange>,
    /// An exec the drop facts may judge differently once the rings are drained.
    pub undecided: bool,
}

/// The facts one rule evaluation sees: an event has one view per account it changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct FactsView<'a> {
    pub dropper: Option<&'a drops::Dropper>,
    pub account: Option<&'a accounts::AccountChange>,
}

impl Derived {
    /// One view per changed account, or a single view without an account.
    pub fn views(&self) -> Vec<FactsView<'_>> {
        let dropper = self.dropper.as_ref();
        if self.accounts.is_empty() {
            return vec![FactsView {
                dropper,
                account: None,
            }];
        }
        self.accounts
            .iter()
            .map(|a| FactsView {
                dropper,
                account: Some(a),
            })
            .collect()
    }
}

/// The state behind the facts the loaded rules use.
#[derive(Default)]
pub struct Facts {
    drops: Option<drops::Drops>,
    accounts: Option<accounts::Accounts>,
}

impl Facts {
    /// Tracks the facts the rules' fields need (none: costs nothing).
    pub fn for_rules(rules: &RuleSet) -> Self {
        Facts {
            drops: uses_fields(rules, drops::FIELDS).then(drops::Drops::default),
            accounts: uses_fields(rules, accounts::FIELDS).then(accounts::Accounts::system),
        }
    }

    /// Updates the state with `event` and says what it means.
    pub fn observe(&mut self, event: &Event, ctx: &ProcessContext<'_>) -> Derived {
        let mut out = Derived::default();
        if let Some(d) = &mut self.drops {
            out.dropper = d.observe(event, ctx);
            out.undecided = out.dropper.is_none() && d.undecided(event);
        }
        if let (Some(a), Payload::Security(s)) = (&mut self.accounts, &event.payload) {
            // Renames and links replace a database at once; an open for writing is seen
            // before anything is written.
            if s.ret == 0 && matches!(s.class(), "rename" | "link") {
                if let Some(path) = target::changed_path(&event.payload) {
                    out.accounts = a.observe(&path);
                }
            }
        }
        out
    }
}

impl Facts {
    /// Call once the execs of a drain have been judged: forgets what they no longer need.
    pub fn sweep(&mut self) {
        if let Some(d) = &mut self.drops {
            d.sweep();
        }
    }

    /// Whether every write made before `at_ns` has been seen (nothing can change a judgement
    /// of an exec at that time any more).
    pub fn caught_up(&self, at_ns: u64) -> bool {
        self.drops.as_ref().is_none_or(|d| d.caught_up(at_ns))
    }

    /// Who dropped the file `event` (an exec) runs, as known now.
    pub fn dropper_of(&self, event: &Event) -> Option<drops::Dropper> {
        self.drops.as_ref().and_then(|d| d.dropper_of(event))
    }
}

/// Whether a condition or exception of any rule reads one of `names`.
pub fn uses_fields(rules: &RuleSet, names: &[&str]) -> bool {
    rules.rules.iter().any(|r| rule_uses_fields(r, names))
}

/// Whether the condition or an exception of `rule` reads one of `names`.
pub fn rule_uses_fields(rule: &Rule, names: &[&str]) -> bool {
    reads(&rule.condition, names) || rule.exceptions.iter().any(|(_, e)| reads(e, names))
}

fn reads(e: &Expr, names: &[&str]) -> bool {
    match e {
        Expr::And(parts) | Expr::Or(parts) => parts.iter().any(|p| reads(p, names)),
        Expr::Not(inner) => reads(inner, names),
        Expr::Cmp { field, .. } | Expr::In { field, .. } => names.contains(&fields::name(*field)),
    }
}

#[cfg(test)]
mod tests;
