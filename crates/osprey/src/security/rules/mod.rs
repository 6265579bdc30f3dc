//! Detection rules: YAML files of `rule`, `macro`, `list` and `exception` items, checked
//! completely at load (unknown keys and fields, type errors, syntax errors, undefined
//! macros, lists or exceptions are reported with file:line:col and a suggestion).
//!
//! ```yaml
//! - list: shells
//!   items: [bash, sh, dash, zsh]
//! - macro: spawned_by_shell
//!   condition: proc.pname in (shells)
//! - exception: package_managers
//!   condition: proc.name in (dpkg, apt, rpm)
//! - rule: shadow_read
//!   desc: credential file read by an unexpected program
//!   severity: high            # critical | high | medium | low | info
//!   tags: [T1003.008]
//!   condition: evt.kind = open and file.path in (/etc/shadow, /etc/gshadow)
//!   exceptions: [package_managers]
//!   output: "%proc.name (%proc.pid) read %file.path"
//!   action: alert             # alert | deny (fanotify, --enforce) | kill (SIGKILL, --enforce)
//! ```

pub mod expr;
pub mod fields;
pub mod prefilter;
pub mod yaml;

use std::collections::{HashMap, HashSet};
use std::fmt;

use expr::{Expr, ExprError, Scope};
use fields::View;
use yaml::{Node, Pos};

/// The rule set compiled into the binary (`osprey rules show`).
pub const DEFAULT_RULES: &str = include_str!("default.yaml");
pub const DEFAULT_RULES_NAME: &str = "<default rules>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    const NAMES: &'static [(&'static str, Severity)] = &[
        ("info", Severity::Info),
        ("low", Severity::Low),
        ("medium", Severity::Medium),
        ("high", Severity::High),
        ("critical", Severity::Critical),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|n| n.1 == self)
            .map_or("?", |n| n.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Report only.
    Alert,
    /// Block file opens/execs before they happen (fanotify permission events).
    Deny,
    /// SIGKILL from the kernel after the syscall (it has completed by then).
    Kill,
}

impl Action {
    const NAMES: &'static [(&'static str, Action)] = &[
        ("alert", Action::Alert),
        ("deny", Action::Deny),
        ("kill", Action::Kill),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|n| n.1 == self)
            .map_or("?", |n| n.0)
    }
}

/// `%field` references in an output template, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field(fields::FieldId),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub desc: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub condition: Expr,
    /// (name, condition): the rule does not fire when any of these holds.
    pub exceptions: Vec<(String, Expr)>,
    pub output: Vec<Piece>,
    pub action: Action,
    /// Where the rule is defined, for messages.
    pub origin: String,
    /// The condition as written (for in-kernel compilation errors).
    pub condition_node: Node,
}

impl Rule {
    pub fn matches(&self, view: &View<'_>) -> bool {
        self.condition.eval(view) && !self.exceptions.iter().any(|(_, e)| e.eval(view))
    }

    /// The alert's message: the output template with the event's fields, escaped as tables
    /// escape (`\xff`, `\n`, `\u{202e}`), so that OUTPUT reads like COMM and is safe to print.
    pub fn render_output(&self, view: &View<'_>) -> String {
        use crate::pipeline::text::escape_for_terminal;
        let mut out = String::new();
        for piece in &self.output {
            match piece {
                Piece::Text(t) => out.push_str(&escape_for_terminal(t.as_bytes())),
                Piece::Field(f) => match view.get(*f) {
                    Some(fields::Value::Str(s)) => out.push_str(&escape_for_terminal(&s)),
                    Some(fields::Value::Int(i)) if fields::name(*f) == "file.mode" => {
                        out.push_str(&format!("{i:04o}"))
                    }
                    Some(fields::Value::Int(i)) => out.push_str(&i.to_string()),
                    Some(fields::Value::Bool(b)) => out.push_str(&b.to_string()),
                    Some(fields::Value::StrList(l)) => out.push_str(
                        &l.iter()
                            .map(|s| escape_for_terminal(s))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    None => out.push_str("<NA>"),
                },
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// A load error at a position in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

impl std::error::Error for RuleError {}

/// The errors of one load, in file order.
#[derive(Debug, Clone)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// One parsed file: its name, text and YAML tree.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

struct Item<'a> {
    src: usize,
    node: &'a Node,
    fields: HashMap<&'a str, &'a Node>,
}

const ITEM_KEYS: &[(&str, &[&str])] = &[
    (
        "rule",
        &[
            "rule",
            "desc",
            "condition",
            "output",
            "severity",
            "tags",
            "action",
            "exceptions",
            "enabled",
        ],
    ),
    ("macro", &["macro", "condition", "desc"]),
    ("list", &["list", "items", "desc"]),
    ("exception", &["exception", "condition", "desc"]),
];

struct Loader<'a> {
    sources: Vec<Source<'a>>,
    errors: Vec<RuleError>,
}

impl<'a> Loader<'a> {
    fn error(&mut self, src: usize, pos: Pos, message: impl Into<String>) {
        self.errors.push(RuleError {
            file: self.sources[src].name.to_string(),
            pos,
            message: message.into(),
        });
    }

    fn expr_error(&mut self, src: usize, node: &Node, e: ExprError) {
        let pos = yaml::locate_in_scalar(self.sources[src].text, node, e.offset);
        self.error(src, pos, e.message);
    }

    /// Splits the top level into items and checks their keys.
    fn items<'n>(&mut self, src: usize, doc: &'n Node) -> Vec<Item<'n>> {
        let Node::Seq(entries, _) = doc else {
            self.error(
                src,
                doc.pos(),
                format!("a rules file is a list of items, found {}", doc.kind_name()),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries {
            let Node::Map(kv, pos) = entry else {
                self.error(
                    src,
                    entry.pos(),
                    format!(
                        "each item is a mapping with `rule`, `macro`, `list` or `exception`, found {}",
                        entry.kind_name()
                    ),
                );
                continue;
            };
            let kind = ITEM_KEYS
                .iter()
                .find(|(k, _)| kv.iter().any(|(key, _)| key.as_str() == Some(k)));
            let Some((_, allowed)) = kind else {
                self.error(
                    src,
                    *pos,
                    "item has none of `rule`, `macro`, `list`, `exception`",
                );
                continue;
            };
            let mut fields = HashMap::new();
            for (key, value) in kv {
                let Some(k) = key.as_str() else {
                    self.error(src, key.pos(), "keys are plain words");
                    continue;
                };
                if !allowed.contains(&k) {
                    let mut msg = format!("unknown key `{k}`");
                    if let Some(s) = fields::nearest(k, allowed.iter().copied()) {
                        msg.push_str(&format!(" (did you mean `{s}`?)"));
                    }
                    self.error(src, key.pos(), msg);
                    continue;
                }
                if fields.insert(k, value).is_some() {
                    self.error(src, key.pos(), format!("`{k}` given twice"));
                }
            }
            out.push(Item {
                src,
                node: entry,
                fields,
            });
        }
        out
    }

    fn scalar<'n>(&mut self, item: &Item<'n>, key: &str, required: bool) -> Option<&'n Node> {
        match item.fields.get(key) {
            Some(n @ Node::Scalar { .. }) => Some(n),
            Some(n) => {
                self.error(
                    item.src,
                    n.pos(),
                    format!("`{key}` must be a string, found {}", n.kind_name()),
                );
                None
            }
            None => {
                if required {
                    self.error(item.src, item.node.pos(), format!("missing `{key}`"));
                }
                None
            }
        }
    }

    fn string_list(&mut self, item: &Item<'_>, key: &str) -> Vec<(String, Pos)> {
        match item.fields.get(key) {
            None => Vec::new(),
            Some(Node::Seq(items, _)) => {
                let mut out = Vec::new();
                for n in items {
                    match n.as_str() {
                        Some(s) => out.push((s.to_string(), n.pos())),
                        None => self.error(item.src, n.pos(), format!("`{key}` items are strings")),
                    }
                }
                out
            }
            Some(n) => {
                self.error(
                    item.src,
                    n.pos(),
                    format!("`{key}` must be a list, found {}", n.kind_name()),
                );
                Vec::new()
            }
        }
    }
}

/// Loads rule files (name, text) into one set; lists, macros and exceptions of earlier
/// files are visible to later ones.
/// One rule file that must load, for unit tests.
#[cfg(test)]
pub(crate) fn load_for_test(name: &str, src: &str) -> RuleSet {
    load(&[(name, src)]).unwrap_or_else(|e| panic!("{e}"))
}

pub fn load(sources: &[(&str, &str)]) -> Result<RuleSet, RuleErrors> {
    let mut loader = Loader {
        sources: sources
            .iter()
            .map(|(name, text)| Source { name, text })
            .collect(),
        errors: Vec::new(),
    };
    let mut docs = Vec::new();
    for (i, (_, text)) in sources.iter().enumerate() {
        match yaml::parse(text) {
            Ok(Some(doc)) => docs.push((i, doc)),
            Ok(None) => {}
            Err((pos, msg)) => loader.error(i, pos, format!("YAML syntax error: {msg}")),
        }
    }
    let mut items = Vec::new();
    for (i, doc) in &docs {
        items.extend(loader.items(*i, doc));
    }

    // Lists first: they hold plain strings.
    let mut scope = Scope::default();
    for item in items.iter().filter(|i| i.fields.contains_key("list")) {
        let Some(name) = loader.scalar(item, "list", true) else {
            continue;
        };
        let values = loader.string_list(item, "items");
        scope.lists.insert(
            name.as_str().unwrap_or_default().to_string(),
            values.into_iter().map(|v| v.0).collect(),
        );
    }

    // Macros, in dependency order (a macro may use one defined further down).
    let macro_items: HashMap<String, &Item<'_>> = items
        .iter()
        .filter(|i| i.fields.contains_key("macro"))
        .filter_map(|i| Some((i.fields["macro"].as_str()?.to_string(), i)))
        .collect();
    let mut failed: HashSet<String> = HashSet::new();
    let mut names: Vec<&String> = macro_items.keys().collect();
    names.sort_by_key(|n| macro_items[*n].node.pos().line);
    for name in names {
        resolve_macro(
            name,
            &macro_items,
            &mut scope,
            &mut loader,
            &mut failed,
            &mut Vec::new(),
        );
    }

    let mut exceptions: HashMap<String, Expr> = HashMap::new();
    for item in items.iter().filter(|i| i.fields.contains_key("exception")) {
        let Some(name) = loader.scalar(item, "exception", true) else {
            continue;
        };
        if let Some(e) = condition(&mut loader, item, &scope) {
            exceptions.insert(name.as_str().unwrap_or_default().to_string(), e);
        }
    }

    let mut rules = Vec::new();
    let mut seen_rules: HashSet<String> = HashSet::new();
    for item in items.iter().filter(|i| i.fields.contains_key("rule")) {
        if let Some(rule) = build_rule(&mut loader, item, &scope, &exceptions) {
            if !seen_rules.insert(rule.name.clone()) {
                loader.error(
                    item.src,
                    item.node.pos(),
                    format!("rule `{}` defined twice", rule.name),
                );
            }
            let enabled = item.fields.get("enabled").and_then(|n| n.as_str());
            if enabled != Some("false") {
                rules.push(rule);
            }
        }
    }
    if loader.errors.is_empty() {
        Ok(RuleSet { rules })
    } else {
        Err(RuleErrors(loader.errors))
    }
}

fn resolve_macro(
    name: &str,
    items: &HashMap<String, &Item<'_>>,
    scope: &mut Scope,
    loader: &mut Loader<'_>,
    failed: &mut HashSet<String>,
    stack: &mut Vec<String>,
) {
    if scope.macros.contains_key(name) || failed.contains(name) {
        return;
    }
    let item = items[name];
    stack.push(name.to_string());
    loop {
        let Some(node) = loader.scalar(item, "condition", true) else {
            failed.insert(name.to_string());
            break;
        };
        let text = node.as_str().unwrap_or_default();
        let pending =
            |n: &str| items.contains_key(n) && !scope.macros.contains_key(n) && !failed.contains(n);
        match expr::parse(text, scope, &pending) {
            Ok(e) => {
                scope.macros.insert(name.to_string(), e);
                break;
            }
            Err(Ok(dep)) if stack.contains(&dep) => {
                let at = text.find(dep.as_str()).unwrap_or(0);
                loader.expr_error(
                    item.src,
                    node,
                    ExprError {
                        offset: at,
                        message: format!(
                            "macro `{dep}` refers to itself through {}",
                            stack.join(" -> ")
                        ),
                    },
                );
                failed.insert(name.to_string());
                break;
            }
            Err(Ok(dep)) => {
                resolve_macro(&dep, items, scope, loader, failed, stack);
                if failed.contains(&dep) {
                    failed.insert(name.to_string());
                    break;
                }
            }
            Err(Err(e)) => {
                loader.expr_error(item.src, node, e);
                failed.insert(name.to_string());
                break;
            }
        }
    }
    stack.pop();
}

fn condition(loader: &mut Loader<'_>, item: &Item<'_>, scope: &Scope) -> Option<Expr> {
    let node = loader.scalar(item, "condition", true)?;
    match expr::parse(node.as_str().unwrap_or_default(), scope, &|_| false) {
        Ok(e) => Some(e),
        Err(Err(e)) => {
            loader.expr_error(item.src, node, e);
            None
        }
        Err(Ok(_)) => None, // macros failed to load: already reported
    }
}

fn build_rule(
    loader: &mut Loader<'_>,
    item: &Item<'_>,
    scope: &Scope,
    exceptions: &HashMap<String, Expr>,
) -> Option<Rule> {
    let name = loader.scalar(item, "rule", true)?.as_str()?.to_string();
    let desc = loader
        .scalar(item, "desc", false)
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    let cond = condition(loader, item, scope);
    let severity = match loader.scalar(item, "severity", true) {
        Some(n) => {
            let s = n.as_str().unwrap_or_default();
            match Severity::NAMES.iter().find(|x| x.0 == s) {
                Some(x) => Some(x.1),
                None => {
                    let mut msg =
                        format!("unknown severity `{s}` (critical, high, medium, low, info)");
                    if let Some(near) = fields::nearest(s, Severity::NAMES.iter().map(|x| x.0)) {
                        msg = format!("unknown severity `{s}` (did you mean `{near}`?)");
                    }
                    loader.error(item.src, n.pos(), msg);
                    None
                }
            }
        }
        None => None,
    };
    let action = match loader.scalar(item, "action", false) {
        Some(n) => {
            let s = n.as_str().unwrap_or_default();
            match Action::NAMES.iter().find(|x| x.0 == s) {
                Some(x) => Some(x.1),
                None => {
                    loader.error(
                        item.src,
                        n.pos(),
                        format!("unknown action `{s}` (alert, deny, kill)"),
                    );
                    None
                }
            }
        }
        None => Some(Action::Alert),
    };
    let tags: Vec<String> = loader
        .string_list(item, "tags")
        .into_iter()
        .map(|t| t.0)
        .collect();
    let mut excs = Vec::new();
    for (e, pos) in loader.string_list(item, "exceptions") {
        match exceptions.get(&e) {
            Some(x) => excs.push((e, x.clone())),
            None => {
                let mut msg = format!("undefined exception `{e}`");
                if let Some(near) = fields::nearest(&e, exceptions.keys().map(String::as_str)) {
                    msg.push_str(&format!(" (did you mean `{near}`?)"));
                }
                loader.error(item.src, pos, msg);
            }
        }
    }
    let output = match loader.scalar(item, "output", false) {
        Some(n) => template(loader, item.src, n)?,
        None => vec![Piece::Text(desc.clone())],
    };
    let src = &loader.sources[item.src];
    let pos = item.fields["rule"].pos();
    Some(Rule {
        origin: format!("{}:{}:{}", src.name, pos.line, pos.col),
        name,
        desc,
        severity: severity?,
        tags,
        condition: cond?,
        exceptions: excs,
        output,
        action: action?,
        condition_node: item.fields["condition"].clone(),
    })
}

fn template(loader: &mut Loader<'_>, src: usize, node: &Node) -> Option<Vec<Piece>> {
    let text = node.as_str().unwrap_or_default();
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text.char_indices().peekable();
    let mut ok = true;
    while let Some((i, c)) = rest.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let mut name = String::new();
        while let Some(&(_, d)) = rest.peek() {
            if d.is_ascii_alphanumeric() || d == '_' || (d == '.' && !name.is_empty()) {
                name.push(d);
                rest.next();
            } else {
                break;
            }
        }
        // A trailing dot ends the sentence, not the field name.
        let trailing_dot = name.ends_with('.');
        if trailing_dot {
            name.pop();
        }
        if name.is_empty() {
            literal.push('%');
            continue;
        }
        match fields::lookup(&name) {
            Some((id, _)) => {
                if !literal.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut literal)));
                }
                out.push(Piece::Field(id));
            }
            None => {
                let mut msg = format!("unknown field `%{name}` in output");
                if let Some(s) = fields::nearest(&name, fields::FIELDS.iter().map(|f| f.0)) {
                    msg.push_str(&format!(" (did you mean `%{s}`?)"));
                }
                let pos = yaml::locate_in_scalar(loader.sources[src].text, node, i);
                loader.error(src, pos, msg);
                ok = false;
            }
        }
        if trailing_dot {
            literal.push('.');
        }
    }
    if !literal.is_empty() {
        out.push(Piece::Text(literal));
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests;
