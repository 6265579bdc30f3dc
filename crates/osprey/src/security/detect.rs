//! The rules detector: evaluates every loaded rule on every enriched event, and says what
//! became of each match (the outcome and note of its alert). It knows the enforcement
//! mechanisms only by what they leave in events (EPERM, a denied connect, a kill).

use crate::pipeline::cache::ProcessContext;
use crate::pipeline::detect::{Alert, AlertOrigin, AlertWriter, Detector};
use crate::pipeline::event::{Event, Payload};

use super::facts::{drops, rule_uses_fields, FactsView};
use super::fim::detector::OwnedContext;
use super::rules::fields::View;
use super::rules::{Action, Rule, RuleSet};

/// Said in every alert of a `kill` rule that fired: the kernel cannot stop the call here.
pub const KILL_NOTE: &str =
    "SIGKILL was sent from the kernel at syscall exit: the syscall itself had completed";

pub struct RulesDetector {
    pub rules: RuleSet,
    /// What earlier events tell about later ones, for the rules that ask.
    pub facts: crate::security::facts::Facts,
    /// Execs to judge again after the drain (see `Derived::undecided`).
    pub(crate) deferred: Vec<(Event, OwnedContext)>,
    pub enforcing: bool,
    /// Deny rules are enforced by BPF LSM: an EPERM on a matching open/exec is our denial.
    pub kernel_deny: bool,
}

/// How long at most an exec of an unknown file in a temporary directory waits for its write.
const DEFER_NS: u64 = 30_000_000_000;
/// Execs waiting at most (beyond, an exec is judged once, as it is seen).
const MAX_DEFERRED: usize = 4096;

/// Said in every alert of a deny the kernel enforced.
pub const LSM_NOTE: &str = "denied in the kernel before it happened (BPF LSM)";

/// Said in every alert of a connect the kernel refused.
pub const CONNECT_NOTE: &str =
    "refused in the kernel before any packet was sent (cgroup connect4/connect6)";

/// Said in every alert of an open or exec fanotify refused.
pub const FANOTIFY_NOTE: &str = "denied before it happened (fanotify)";

fn denied_with_eperm(event: &Event) -> bool {
    let eperm = -i64::from(libc::EPERM);
    match &event.payload {
        Payload::FileOpen(f) => f.ret == eperm,
        Payload::Exec(x) => x.ret == eperm,
        _ => false,
    }
}

/// Outcome of a matching rule for an event seen on the rings.
pub fn outcome(
    rule: &Rule,
    event: &Event,
    enforcing: bool,
) -> Option<(&'static str, Option<&'static str>)> {
    Some(match rule.action {
        Action::Alert => ("alerted", None),
        Action::Deny => {
            let eperm = -i64::from(libc::EPERM);
            match &event.payload {
                Payload::Security(s) if s.denied() => return Some(("blocked", Some(CONNECT_NOTE))),
                // The fanotify path and the connect programs already reported what they
                // blocked; this is the failed call seen again at syscall exit.
                Payload::FileOpen(f) if f.ret == eperm && enforcing => return None,
                Payload::Security(s) if s.ret == eperm && enforcing && s.name() == "connect" => {
                    return None
                }
                _ => {}
            }
            if enforcing {
                ("not_blocked", Some("no fanotify mark covered this access"))
            } else {
                ("would_block", Some("run with --enforce to block"))
            }
        }
        Action::Kill => match &event.payload {
            Payload::Security(s) if s.killed() => ("killed", Some(KILL_NOTE)),
            _ if enforcing => (
                "not_killed",
                Some("the kernel's kill map did not cover this event"),
            ),
            _ => ("would_kill", Some("run with --enforce to kill")),
        },
    })
}

pub fn alert_for<'r>(
    rule: &'r Rule,
    view: &View<'_>,
    outcome: (&'static str, Option<&'static str>),
) -> Alert<'r> {
    Alert {
        rule: &rule.name,
        severity: rule.severity.name(),
        tags: &rule.tags,
        action: rule.action.name(),
        outcome: outcome.0,
        note: outcome.1,
        output: rule.render_output(view),
        origin: AlertOrigin {
            source: rule.meta.source.name(),
            id: rule.meta.id.as_deref(),
            level: rule.meta.level.as_deref(),
            references: &rule.meta.references,
        },
    }
}

impl Detector for RulesDetector {
    fn detect(
        &mut self,
        event: &Event,
        ctx: &ProcessContext<'_>,
        raise: &mut dyn FnMut(Alert<'_>),
    ) {
        let derived = self.facts.observe(event, ctx);
        if derived.undecided && self.deferred.len() < MAX_DEFERRED {
            self.deferred.push((event.clone(), OwnedContext::of(ctx)));
        }
        // An event that changed several accounts is seen once per account; a rule fires
        // at most once per event.
        let mut fired = vec![false; self.rules.rules.len()];
        for facts in derived.views() {
            let view = View {
                event,
                process: ctx,
                facts,
            };
            for (rule, fired) in self.rules.rules.iter().zip(fired.iter_mut()) {
                if *fired || !rule.matches(&view) {
                    continue;
                }
                *fired = true;
                if self.kernel_deny && rule.action == Action::Deny && denied_with_eperm(event) {
                    raise(alert_for(rule, &view, ("blocked", Some(LSM_NOTE))));
                    continue;
                }
                if let Some(o) = outcome(rule, event, self.enforcing) {
                    raise(alert_for(rule, &view, o));
                }
            }
        }
    }

    /// Execs of files in temporary directories whose write was still queued when they were
    /// judged: the drop rules that match now, and did not then, alert now.
    fn tick(&mut self, now_boot_ns: u64, alerts: &mut AlertWriter) -> std::io::Result<()> {
        for (event, owned) in std::mem::take(&mut self.deferred) {
            let Some(dropper) = self.facts.dropper_of(&event) else {
                // The write may still be queued (a drain stops at its budget, user space may
                // lag): look again at the next ticks until the rings are past the exec.
                let at = event.header.ts_boot_ns;
                if !self.facts.caught_up(at) && now_boot_ns < at.saturating_add(DEFER_NS) {
                    self.deferred.push((event, owned));
                }
                continue;
            };
            let ctx = owned.view();
            let before = View {
                event: &event,
                process: &ctx,
                facts: FactsView::default(),
            };
            let now = View {
                facts: FactsView {
                    dropper: Some(&dropper),
                    account: None,
                },
                ..before
            };
            for rule in &self.rules.rules {
                if rule_uses_fields(rule, drops::FIELDS)
                    && rule.matches(&now)
                    && !rule.matches(&before)
                {
                    if let Some(o) = outcome(rule, &event, self.enforcing) {
                        alerts.write(&alert_for(rule, &now, o), &event, &ctx)?;
                    }
                }
            }
        }
        self.facts.sweep();
        Ok(())
    }
}
