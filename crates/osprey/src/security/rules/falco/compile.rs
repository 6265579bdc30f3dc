//! Compiling Falco's definitions: lists expanded, macros parsed in dependency order (those
//! needing what Osprey lacks kept with the reason), rules with their exceptions, output
//! templates and priorities.

use std::collections::BTreeSet;

use super::super::community::{error, get, get_str, strings};
use super::super::expr::{self, Dialect, Expr, Failure, Literal, Op, Scope};
use super::super::limits::MAX_NESTING;
use super::super::loader::{split_template, TemplatePart};
use super::super::requirement::{all_of_sets, one_of_sets, required, Domain};
use super::super::yaml::{self, Node};
use super::super::RuleReport;
use super::super::{Action, Meta, Piece, Rule, Severity, Source, Status};
use super::{fields, Condition, Defs, FalcoRule, Loaded};

const FALCO: Dialect<'static> = Dialect {
    field: &fields::resolve,
    falco: true,
};

/// Falco's priority as a severity.
fn severity(priority: &str) -> Severity {
    match priority.to_ascii_lowercase().as_str() {
        "emergency" | "alert" | "critical" => Severity::Critical,
        "error" => Severity::High,
        "warning" => Severity::Medium,
        "notice" => Severity::Low,
        _ => Severity::Info,
    }
}

pub(super) fn compile(files: &[(&str, &str, Node)], defs: Defs, out: &mut Loaded) {
    let mut scope = Scope::default();
    for name in defs.lists.keys() {
        let mut items = Vec::new();
        expand_list(&defs, name, &mut items, 0);
        scope.lists.insert(name.clone(), items);
    }
    let mut names: Vec<&String> = defs.macros.keys().collect();
    names.sort();
    for name in names {
        resolve_macro(name, &defs, &mut scope, &mut Vec::new(), files, out);
    }
    for rule in &defs.rules {
        let report = |status, reason: Option<String>| RuleReport {
            source: Source::Falco,
            file: files[rule.file].0.to_string(),
            rule: rule.name.clone(),
            id: None,
            status,
            reason,
        };
        match compile_rule(files, rule, &scope, out) {
            Ok(Some(r)) => {
                out.rules.push(r);
                out.report.push(report(Status::Loaded, None));
            }
            Ok(None) => {}
            Err((status, reason)) => out.report.push(report(status, Some(reason))),
        }
    }
}

/// A list's items, items that name other lists replaced by theirs.
fn expand_list(defs: &Defs, name: &str, out: &mut Vec<String>, depth: usize) {
    for item in &defs.lists[name] {
        if depth < MAX_NESTING && item != name && defs.lists.contains_key(item) {
            expand_list(defs, item, out, depth + 1);
        } else {
            out.push(item.clone());
        }
    }
}

fn resolve_macro(
    name: &str,
    defs: &Defs,
    scope: &mut Scope,
    stack: &mut Vec<String>,
    files: &[(&str, &str, Node)],
    out: &mut Loaded,
) {
    if scope.macros.contains_key(name) || scope.unusable.contains_key(name) {
        return;
    }
    let cond = &defs.macros[name];
    stack.push(name.to_string());
    loop {
        let parsed = {
            let pending = |n: &str| {
                defs.macros.contains_key(n)
                    && !scope.macros.contains_key(n)
                    && !scope.unusable.contains_key(n)
            };
            expr::parse_in(&cond.text, scope, &pending, &FALCO)
        };
        match parsed {
            Ok(e) => {
                scope.macros.insert(name.to_string(), e);
                break;
            }
            Err(Failure::Pending(dep)) if stack.contains(&dep) || stack.len() >= MAX_NESTING => {
                let why = format!("macros refer to one another through `{dep}`");
                out.errors.push(located(files, cond, 0, why.clone()));
                scope.unusable.insert(name.to_string(), why);
                break;
            }
            Err(Failure::Pending(dep)) => resolve_macro(&dep, defs, scope, stack, files, out),
            Err(Failure::Unsupported(reason)) => {
                scope.unusable.insert(name.to_string(), reason);
                break;
            }
            Err(Failure::Error(e)) => {
                out.errors
                    .push(located(files, cond, e.offset, e.message.clone()));
                scope.unusable.insert(name.to_string(), e.message);
                break;
            }
        }
    }
    stack.pop();
}

fn located(
    files: &[(&str, &str, Node)],
    cond: &Condition,
    offset: usize,
    message: String,
) -> super::super::RuleError {
    let (file, text, _) = &files[cond.file];
    error(
        file,
        yaml::locate_in_scalar(text, &cond.node, offset),
        message,
    )
}

type Refusal = (Status, String);

/// The rule, `Ok(None)` after a located error, or why it is not loaded.
fn compile_rule(
    files: &[(&str, &str, Node)],
    rule: &FalcoRule,
    scope: &Scope,
    out: &mut Loaded,
) -> Result<Option<Rule>, Refusal> {
    if !rule.enabled {
        return Err((Status::Disabled, "enabled: false".into()));
    }
    if let Some(source) = rule.source.as_deref().filter(|s| *s != "syscall") {
        return Err((
            Status::Unsupported,
            format!("source `{source}`: Osprey reads syscall events"),
        ));
    }
    let Some(cond) = &rule.condition else {
        return Err((Status::Unsupported, "no condition".into()));
    };
    let condition = match expr::parse_in(&cond.text, scope, &|_| false, &FALCO) {
        Ok(e) => e,
        Err(Failure::Unsupported(reason)) => return Err((Status::Unsupported, reason)),
        Err(Failure::Error(e)) => {
            out.errors.push(located(files, cond, e.offset, e.message));
            return Ok(None);
        }
        Err(Failure::Pending(_)) => unreachable!("no macro is pending"),
    };
    untraced_event_types(&condition)?;
    let mut exceptions = Vec::new();
    for node in &rule.exceptions {
        if let Some(e) = exception(node, scope)? {
            exceptions.push(e);
        }
    }
    let (file, _, _) = files[rule.file];
    Ok(Some(Rule {
        name: rule.name.clone(),
        desc: rule.desc.clone(),
        severity: severity(&rule.priority),
        tags: rule.tags.clone(),
        condition,
        exceptions,
        output: template(&rule.output),
        action: Action::Alert,
        origin: format!("{file}:{}:{}", rule.pos.line, rule.pos.col),
        condition_node: cond.node.clone(),
        meta: Meta {
            source: Source::Falco,
            id: None,
            level: Some(rule.priority.clone()),
            references: Vec::new(),
        },
    }))
}

/// Syscall names Osprey's events carry as `evt.syscall`.
fn traced(name: &str) -> bool {
    ["open", "openat", "openat2", "creat", "execve", "execveat"].contains(&name)
        || crate::security::syscall::syscall_number(name).is_some()
}

/// The `evt.type` values an event can have (`None`: any).
struct EventTypes;

impl Domain for EventTypes {
    type Req = Option<BTreeSet<String>>;

    fn anything(&self) -> Self::Req {
        None
    }

    fn leaf(&self, field: &str, op: Op, value: &Literal) -> Self::Req {
        let name = value
            .text()
            .filter(|_| field == "evt.syscall" && op == Op::Eq)?;
        Some([name].into())
    }

    fn all(&self, parts: Vec<Self::Req>) -> Self::Req {
        all_of_sets(parts)
    }

    fn one_of(&self, parts: Vec<Self::Req>) -> Self::Req {
        one_of_sets(parts)
    }
}

fn event_types(e: &Expr) -> Option<BTreeSet<String>> {
    required(&EventTypes, e)
}

fn untraced_event_types(e: &Expr) -> Result<(), Refusal> {
    match event_types(e) {
        Some(types) if !types.is_empty() && !types.iter().any(|t| traced(t)) => Err((
            Status::Unsupported,
            format!(
                "event types {} are not traced by Osprey",
                types.into_iter().collect::<Vec<_>>().join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// A value of an exception as condition text: a list name bare, anything else quoted.
fn operand(node: &Node, scope: &Scope, set: bool) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    match node {
        Node::Seq(items, _) => {
            let parts: Vec<String> = items.iter().map(|i| operand(i, scope, false)).collect();
            format!("({})", parts.join(", "))
        }
        n => {
            let s = n.as_str().unwrap_or_default();
            if scope.lists.contains_key(s) {
                if set {
                    format!("({s})")
                } else {
                    s.to_string()
                }
            } else if set {
                format!("({})", quote(s))
            } else {
                quote(s)
            }
        }
    }
}

/// One `exceptions` entry as (name, condition); `None` when it has no values.
fn exception(node: &Node, scope: &Scope) -> Result<Option<(String, Expr)>, Refusal> {
    let name = get_str(node, "name").unwrap_or("exception").to_string();
    let single = get(node, "fields").and_then(Node::as_str).is_some();
    let fields = strings(get(node, "fields"));
    let comps = strings(get(node, "comps"));
    let is_set = |c: &str| matches!(c, "in" | "pmatch" | "intersects");
    let values: Vec<&Node> = match get(node, "values") {
        Some(Node::Seq(items, _)) => items.iter().collect(),
        _ => Vec::new(),
    };
    if values.is_empty() || fields.is_empty() {
        return Ok(None);
    }
    let text = if single {
        let comp = comps.first().map_or("in", String::as_str);
        let all = Node::Seq(values.iter().map(|v| (*v).clone()).collect(), node.pos());
        if is_set(comp) {
            format!("{} {comp} {}", fields[0], operand(&all, scope, true))
        } else {
            let parts: Vec<String> = values
                .iter()
                .map(|v| format!("{} {comp} {}", fields[0], operand(v, scope, false)))
                .collect();
            parts.join(" or ")
        }
    } else {
        let mut tuples = Vec::new();
        for v in &values {
            let Node::Seq(items, _) = v else { continue };
            let terms: Vec<String> = fields
                .iter()
                .zip(items)
                .enumerate()
                .map(|(i, (f, item))| {
                    let comp = comps.get(i).map_or("=", String::as_str);
                    format!("{f} {comp} {}", operand(item, scope, is_set(comp)))
                })
                .collect();
            tuples.push(format!("({})", terms.join(" and ")));
        }
        tuples.join(" or ")
    };
    match expr::parse_in(&text, scope, &|_| false, &FALCO) {
        Ok(e) => Ok(Some((name, e))),
        Err(Failure::Unsupported(reason)) => {
            Err((Status::Unsupported, format!("exception `{name}`: {reason}")))
        }
        Err(Failure::Error(e)) => Err((
            Status::Unsupported,
            format!("exception `{name}` does not compile: {}", e.message),
        )),
        Err(Failure::Pending(m)) => Err((
            Status::Unsupported,
            format!("exception `{name}` names the macro `{m}`"),
        )),
    }
}

/// An output template: `%field` resolved through Falco's names, `<NA>` for fields Osprey
/// does not provide (as Falco prints missing values).
fn template(text: &str) -> Vec<Piece> {
    let name_char = |d: char, _: &str| d.is_ascii_alphanumeric() || "_.[]".contains(d);
    let mut out: Vec<Piece> = Vec::new();
    for part in split_template(text, name_char) {
        let piece = match part {
            TemplatePart::Text(t) => Piece::Text(t),
            TemplatePart::Field(name, _) => match fields::resolve(&name) {
                expr::FieldRef::Known(id, _) => Piece::Field(id),
                _ => Piece::Text("<NA>".into()),
            },
        };
        // Adjacent text pieces are joined.
        match (out.last_mut(), piece) {
            (Some(Piece::Text(prev)), Piece::Text(t)) => prev.push_str(&t),
            (_, piece) => out.push(piece),
        }
    }
    out
}
