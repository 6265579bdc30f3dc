//! Sigma rules, loaded unchanged: one rule per file (`logsource.product: linux`, categories
//! process_creation, file_event and network_connection), compiled into the same [`Rule`]
//! as Osprey's own. A rule that needs what Osprey's events lack is reported unsupported
//! with the field, category or modifier; a malformed rule is an error at file:line:col.

mod condition;
mod value;

use condition::CondError;
use value::{field_id, Category};

use super::community::{error, get, get_str, strings};
use super::expr::Expr;
use super::yaml::{self, Node};
use super::{Action, Meta, Piece, Rule, RuleError, RuleReport, Severity, Source, Status};

/// Sigma's `level` as a severity.
fn severity(level: Option<&str>) -> Severity {
    match level {
        Some("critical") => Severity::Critical,
        Some("high") => Severity::High,
        Some("low") => Severity::Low,
        Some("informational") => Severity::Info,
        _ => Severity::Medium,
    }
}

/// `attack.t1059.004` as the MITRE id `T1059.004`; other tags as written.
fn tag(t: &str) -> String {
    match t.strip_prefix("attack.") {
        Some(id) if id.starts_with('t') && id[1..].starts_with(|c: char| c.is_ascii_digit()) => {
            id.to_ascii_uppercase()
        }
        _ => t.to_string(),
    }
}

/// The alert text: the title and what the event did.
fn output(title: &str, category: Category) -> Vec<Piece> {
    let f = |name| Piece::Field(field_id(name));
    let t = |s: &str| Piece::Text(s.to_string());
    let mut out = vec![t(&format!("{title}: ")), f("proc.exe")];
    match category {
        Category::ProcessCreation => out.extend([
            t(" ran "),
            f("proc.cmdline"),
            t(" (parent "),
            f("proc.pexe"),
            t(")"),
        ]),
        Category::FileEvent => out.extend([t(" created "), f("file.target")]),
        Category::NetworkConnection => out.extend([t(" connected to "), f("net.addr")]),
    }
    out
}

/// Why the rule's log source is not one Osprey reads, if it is not.
fn logsource(doc: &Node) -> Result<Category, String> {
    let source = get(doc, "logsource");
    let field = |k| source.and_then(|s| get_str(s, k));
    let category = field("category").unwrap_or("none");
    let Some(parsed) = Category::parse(category) else {
        return Err(format!("logsource category `{category}` has no Osprey events (process_creation, file_event and network_connection have)"));
    };
    if field("product") != Some("linux") {
        return Err(format!(
            "logsource product `{}`: Osprey reads Linux events",
            field("product").unwrap_or("none")
        ));
    }
    if let Some(service) = field("service") {
        return Err(format!(
            "logsource service `{service}`: Osprey reads kernel events, not {service} logs"
        ));
    }
    Ok(parsed)
}

/// Loads one Sigma rule file: the rule if it loads, and its report line.
pub(super) fn load(
    file: &str,
    text: &str,
    doc: &Node,
) -> Result<(Option<Rule>, RuleReport), RuleError> {
    let Some(title) = get_str(doc, "title") else {
        return Err(error(file, doc.pos(), "a Sigma rule needs `title`"));
    };
    let id = get_str(doc, "id").map(str::to_string);
    let report = |status, reason: Option<String>| RuleReport {
        source: Source::Sigma,
        file: file.to_string(),
        rule: title.to_string(),
        id: id.clone(),
        status,
        reason,
    };
    if let Some(s @ ("deprecated" | "unsupported")) = get_str(doc, "status") {
        return Ok((None, report(Status::Disabled, Some(format!("status: {s}")))));
    }
    let category = match logsource(doc) {
        Ok(c) => c,
        Err(reason) => return Ok((None, report(Status::Unsupported, Some(reason)))),
    };
    let detection = get(doc, "detection").expect("classified by `detection`");
    let condition = match compile_detection(file, text, detection, category)? {
        Ok(e) => e,
        Err(reason) => return Ok((None, report(Status::Unsupported, Some(reason)))),
    };
    let pos = get(doc, "title").map_or(doc.pos(), Node::pos);
    let level = get_str(doc, "level");
    let rule = Rule {
        name: title.to_string(),
        desc: get_str(doc, "description").unwrap_or("").trim().to_string(),
        severity: severity(level),
        tags: strings(get(doc, "tags")).iter().map(|t| tag(t)).collect(),
        condition: Expr::And(vec![category.base(), condition]),
        exceptions: Vec::new(),
        output: output(title, category),
        action: Action::Alert,
        origin: format!("{file}:{}:{}", pos.line, pos.col),
        condition_node: detection.clone(),
        meta: Meta {
            source: Source::Sigma,
            id: id.clone(),
            level: level.map(str::to_string),
            references: strings(get(doc, "references")),
        },
    };
    Ok((Some(rule), report(Status::Loaded, None)))
}

/// The detection's searches and condition as one expression (`Ok(Err(reason))` when
/// unsupported).
fn compile_detection(
    file: &str,
    text: &str,
    detection: &Node,
    category: Category,
) -> Result<Result<Expr, String>, RuleError> {
    let Node::Map(entries, pos) = detection else {
        return Err(error(file, detection.pos(), "`detection` is a mapping"));
    };
    let mut searches = Vec::new();
    let mut condition = None;
    for (key, value) in entries {
        match key.as_str() {
            Some("condition") => condition = Some(value),
            Some("timeframe") => {
                return Ok(Err(
                    "`timeframe` (correlation over time) is not supported".into()
                ))
            }
            Some(name) => {
                let search = value::search(category, value).map_err(|(p, m)| error(file, p, m))?;
                searches.push((name.to_string(), search));
            }
            None => return Err(error(file, key.pos(), "search names are strings")),
        }
    }
    let Some(condition) = condition else {
        return Err(error(file, *pos, "`detection` needs a `condition`"));
    };
    let conditions: Vec<&Node> = match condition {
        Node::Seq(items, _) => items.iter().collect(),
        n => vec![n],
    };
    let mut any = Vec::new();
    for node in conditions {
        let Some(src) = node.as_str() else {
            return Err(error(file, node.pos(), "a condition is a string"));
        };
        match condition::compile(src, &searches) {
            Ok(e) => any.push(e),
            Err(CondError::Unsupported(reason)) => return Ok(Err(reason)),
            Err(CondError::Syntax(offset, message)) => {
                let at = yaml::locate_in_scalar(text, node, offset);
                return Err(error(file, at, message));
            }
        }
    }
    Ok(Ok(if any.len() == 1 {
        any.pop().expect("one")
    } else {
        Expr::Or(any)
    }))
}
