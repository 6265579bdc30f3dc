//! The enforcement plan: the rule set split once into what each mechanism carries out.
//!
//! | rules | mechanism | effect |
//! |---|---|---|
//! | `deny` on open/exec, all decidable in the kernel | BPF LSM (`lsm`) | the open or exec fails with EPERM in the kernel, before it happens |
//! | `deny` on open/exec otherwise, or where BPF LSM does not load | fanotify permission events (`enforce`) | the same, answered in user space |
//! | `deny` on connect | cgroup connect4/connect6 programs (`connect_deny`) | connect() fails with EPERM before any packet is sent |
//! | `kill` | `bpf_send_signal(SIGKILL)` at syscall exit (`kill`) | the process dies, but the syscall has completed |
//!
//! Each mechanism is a leaf that sees only its own rules; the choice between them is made
//! here and nowhere else.

use crate::kernel::loader::LoadedCapability;
use crate::pipeline::detect::SharedAlerts;
use crate::security::connect_deny::{self, ConnectDeny};
use crate::security::enforce::{self, Fanotify};
use crate::security::kill::{self, KillEntry};
use crate::security::lsm::{self, KernelDeny};
use crate::security::rules::{Action, Rule, RuleError, RuleSet};

use super::{Note, SessionError};

pub struct EnforcementPlan {
    /// Entries of the security object's kill map.
    pub kill: Vec<KillEntry>,
    /// The deny rules on opens and execs, for fanotify to decide.
    pub file_rules: Vec<Rule>,
    /// What fanotify marks for them.
    pub file_marks: Vec<String>,
    /// The same denies for BPF LSM, if the kernel can decide every one of them alone.
    pub lsm: Option<Vec<KernelDeny>>,
    pub connect: Vec<ConnectDeny>,
}

/// True for a deny rule about connect (`evt.kind = connect` or `evt.syscall = connect`).
fn is_connect(rule: &Rule) -> bool {
    rule.condition.conjuncts().iter().any(|t| {
        t.equality().is_some_and(|(f, values)| {
            (f == "evt.kind" || f == "evt.syscall")
                && values
                    .iter()
                    .any(|v| v.text().as_deref() == Some("connect"))
        })
    })
}

/// Gathers a mechanism's errors with the others'.
fn collect<T: Default>(r: Result<T, Vec<RuleError>>, errors: &mut Vec<RuleError>) -> T {
    r.unwrap_or_else(|mut e| {
        errors.append(&mut e);
        T::default()
    })
}

impl EnforcementPlan {
    /// Splits the deny and kill rules by mechanism and compiles each part; every rule a
    /// mechanism cannot carry out is an error at the rule's position.
    pub fn compile(rules: &RuleSet) -> Result<Self, Vec<RuleError>> {
        let (mut kills, mut files, mut connects) = (Vec::new(), Vec::new(), Vec::new());
        for (index, rule) in rules.rules.iter().enumerate() {
            match rule.action {
                Action::Alert => {}
                Action::Kill => kills.push((index, rule)),
                Action::Deny if is_connect(rule) => connects.push((index, rule)),
                Action::Deny => files.push((index, rule)),
            }
        }
        let mut errors = Vec::new();
        let kill = collect(kill::kill_entries(&kills), &mut errors);
        let file_marks = collect(enforce::deny_marks(&files), &mut errors);
        let connect = collect(connect_deny::connect_denies(&connects), &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(EnforcementPlan {
            kill,
            lsm: lsm::kernel_denies(&files),
            file_rules: files.into_iter().map(|(_, r)| r.clone()).collect(),
            file_marks,
            connect,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.kill.is_empty() && self.file_marks.is_empty() && self.connect.is_empty()
    }
}

/// The mechanisms started for a plan (the kill map is filled with the security object).
#[derive(Default)]
pub(super) struct Enforcers {
    pub capabilities: Vec<LoadedCapability>,
    /// Deny rules on opens and execs are enforced by BPF LSM.
    pub kernel_deny: bool,
    /// Started by [`super::Session::spawn_enforcers`], once alerts have somewhere to go.
    pub fanotify: Option<(Fanotify, Vec<Rule>)>,
}

impl EnforcementPlan {
    /// Starts the deny mechanisms: BPF LSM where it loads and decides every file deny,
    /// fanotify otherwise; the cgroup programs for connect denies.
    pub(super) fn start(&self, notes: &mut Vec<Note>) -> Result<Enforcers, SessionError> {
        let mut out = Enforcers::default();
        if !self.file_marks.is_empty() {
            self.start_file_denies(&mut out, notes)?;
        }
        if !self.connect.is_empty() {
            let cap = connect_deny::start(&self.connect).map_err(|why| {
                SessionError::Runtime(format!(
                    "deny rules on connect need cgroup connect4/connect6 programs: {why}"
                ))
            })?;
            notes.push(Note::info(format!(
                "enforcing {} connect deny entries with cgroup connect4/connect6",
                self.connect.len()
            )));
            out.capabilities.push(cap);
        }
        if !self.kill.is_empty() {
            notes.push(Note::info(format!("enforcing {} kill rule entries with SIGKILL from the kernel (after the syscall completes)", self.kill.len())));
        }
        Ok(out)
    }

    fn start_file_denies(
        &self,
        out: &mut Enforcers,
        notes: &mut Vec<Note>,
    ) -> Result<(), SessionError> {
        match &self.lsm {
            None => notes.push(Note::info(
                "deny rules use conditions the kernel cannot decide alone: fanotify enforces them",
            )),
            Some(denies) => match lsm::start(denies) {
                Ok(cap) => {
                    let paths: Vec<&str> = denies.iter().map(|d| d.path.as_str()).collect();
                    notes.push(Note::info(format!(
                        "enforcing deny rules with BPF LSM on {}",
                        paths.join(", ")
                    )));
                    out.capabilities.push(cap);
                    out.kernel_deny = true;
                    return Ok(());
                }
                Err(why) => notes.push(Note::info(format!(
                    "BPF LSM unavailable ({why}): fanotify enforces deny rules"
                ))),
            },
        }
        let fan = Fanotify::new(&self.file_marks).map_err(|e| {
            SessionError::Unsupported(format!("deny rules need fanotify permission events: {e}"))
        })?;
        notes.push(Note::info(format!(
            "enforcing deny rules with fanotify on {}",
            fan.marked.join(", ")
        )));
        out.fanotify = Some((fan, self.file_rules.clone()));
        Ok(())
    }

    /// Starts the fanotify thread of [`Enforcers::fanotify`], writing to `alerts`.
    pub(super) fn spawn(enforcers: &mut Enforcers, alerts: &SharedAlerts) {
        if let Some((fan, rules)) = enforcers.fanotify.take() {
            fan.spawn(rules, alerts.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "  desc: d\n  severity: high\n";

    fn rule(name: &str, action: &str, condition: &str) -> String {
        format!("- rule: {name}\n{HEAD}  action: {action}\n  condition: {condition}\n")
    }

    #[test]
    fn each_rule_goes_to_exactly_one_mechanism() {
        let src = [
            rule("a", "alert", "evt.kind = open"),
            rule("f", "deny", "evt.kind = open and file.path = /srv/x"),
            rule("c", "deny", "evt.kind = connect and net.port = 25"),
            rule("k", "kill", "evt.syscall = chmod"),
        ]
        .concat();
        let set = crate::security::rules::load_for_test("p.yaml", &src);
        let plan = EnforcementPlan::compile(&set).unwrap();
        assert_eq!(plan.file_marks, vec!["/srv/x".to_string()]);
        let names: Vec<&str> = plan.file_rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["f"], "the connect rule is not fanotify's");
        assert_eq!(plan.lsm.as_ref().map(Vec::len), Some(1));
        assert_eq!(plan.lsm.unwrap()[0].rule, 1, "indices are the rule set's");
        assert_eq!(plan.connect.len(), 2, "port 25 on both families");
        assert!(plan.connect.iter().all(|c| c.rule == 2));
        assert_eq!(plan.kill, vec![(90, Vec::new())]);
    }

    #[test]
    fn errors_of_every_mechanism_are_reported_together() {
        let src = [
            rule("f", "deny", "evt.kind = open and proc.name = x"),
            rule("c", "deny", "evt.kind = connect and proc.name = curl"),
            rule("k", "kill", "evt.kind = ptrace and file.path = /x"),
        ]
        .concat();
        let set = crate::security::rules::load_for_test("p.yaml", &src);
        let errors = EnforcementPlan::compile(&set).err().unwrap();
        let lines: Vec<usize> = errors.iter().map(|e| e.pos.line).collect();
        assert_eq!(lines.len(), 3, "{errors:?}");
        for line in [1, 6, 11] {
            assert!(lines.contains(&line), "{errors:?}");
        }
    }
}
