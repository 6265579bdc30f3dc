//! The loader's steps: splitting files into items, reading their keys, resolving macros in
//! dependency order and building rules, each error recorded with its file:line:col.

use std::collections::{HashMap, HashSet};

use super::expr::{self, Expr, ExprError, Scope};
use super::fields;
use super::limits::{MAX_FILE_BYTES, MAX_LIST_ITEMS, MAX_NESTING};
use super::yaml::{self, Node, Pos};
use super::{Action, Meta, Piece, Rule, RuleError, RuleReport, Severity, Status};

/// One parsed file: its name, text and YAML tree.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

pub(super) struct Item<'a> {
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

pub(super) struct Loader<'a> {
    sources: Vec<Source<'a>>,
    pub errors: Vec<RuleError>,
}

impl<'a> Loader<'a> {
    pub fn new(sources: &'a [(&'a str, &'a str)]) -> Self {
        Loader {
            sources: sources
                .iter()
                .map(|(name, text)| Source { name, text })
                .collect(),
            errors: Vec::new(),
        }
    }

    /// The YAML tree of every file that is within the size limit and parses.
    pub fn parse_files(&mut self) -> Vec<(usize, Node)> {
        let mut docs = Vec::new();
        for i in 0..self.sources.len() {
            let text = self.sources[i].text;
            if text.len() > MAX_FILE_BYTES {
                let message = format!("rule file larger than {MAX_FILE_BYTES} bytes");
                self.error(i, Pos { line: 1, col: 1 }, message);
                continue;
            }
            match yaml::parse(text) {
                Ok(Some(doc)) => docs.push((i, doc)),
                Ok(None) => {}
                Err((pos, msg)) => self.error(i, pos, format!("YAML syntax error: {msg}")),
            }
        }
        docs
    }

    pub fn lists(&mut self, items: &[Item<'_>], scope: &mut Scope) {
        for item in items.iter().filter(|i| i.fields.contains_key("list")) {
            let Some(name) = self.scalar(item, "list", true) else {
                continue;
            };
            let values = self.string_list(item, "items");
            if values.len() > MAX_LIST_ITEMS {
                let pos = values[MAX_LIST_ITEMS].1;
                self.error(
                    item.src,
                    pos,
                    format!("list longer than {MAX_LIST_ITEMS} items"),
                );
                continue;
            }
            scope.lists.insert(
                name.as_str().unwrap_or_default().to_string(),
                values.into_iter().map(|v| v.0).collect(),
            );
        }
    }

    /// Parses every macro, a macro it uses before the macro itself.
    pub fn macros(&mut self, items: &[Item<'_>], scope: &mut Scope) {
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
                scope,
                self,
                &mut failed,
                &mut Vec::new(),
            );
        }
    }

    pub fn exceptions(&mut self, items: &[Item<'_>], scope: &Scope) -> HashMap<String, Expr> {
        let mut exceptions = HashMap::new();
        for item in items.iter().filter(|i| i.fields.contains_key("exception")) {
            let Some(name) = self.scalar(item, "exception", true) else {
                continue;
            };
            if let Some(e) = condition(self, item, scope) {
                exceptions.insert(name.as_str().unwrap_or_default().to_string(), e);
            }
        }
        exceptions
    }

    /// The enabled rules and a report line for each rule; every rule is checked, enabled
    /// or not.
    pub fn rules(
        &mut self,
        items: &[Item<'_>],
        scope: &Scope,
        exceptions: &HashMap<String, Expr>,
    ) -> (Vec<Rule>, Vec<RuleReport>) {
        let mut rules = Vec::new();
        let mut report = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for item in items.iter().filter(|i| i.fields.contains_key("rule")) {
            let Some(rule) = build_rule(self, item, scope, exceptions) else {
                continue;
            };
            if !seen.insert(rule.name.clone()) {
                let message = format!("rule `{}` defined twice", rule.name);
                self.error(item.src, item.node.pos(), message);
            }
            let enabled = item.fields.get("enabled").and_then(|n| n.as_str()) != Some("false");
            report.push(RuleReport {
                source: super::Source::Osprey,
                file: self.sources[item.src].name.to_string(),
                rule: rule.name.clone(),
                id: None,
                status: if enabled {
                    Status::Loaded
                } else {
                    Status::Disabled
                },
                reason: (!enabled).then(|| "enabled: false".to_string()),
            });
            if enabled {
                rules.push(rule);
            }
        }
        (rules, report)
    }

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
    pub fn items<'n>(&mut self, src: usize, doc: &'n Node) -> Vec<Item<'n>> {
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
    if stack.len() >= MAX_NESTING {
        if let Some(node) = item.fields.get("macro") {
            let message = format!(
                "macros refer to one another more than {MAX_NESTING} deep (through `{}`)",
                stack[0]
            );
            loader.error(item.src, node.pos(), message);
        }
        failed.insert(name.to_string());
        return;
    }
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
    let severity = severity(loader, item);
    let action = action(loader, item);
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
        meta: Meta::default(),
    })
}

/// The rule's `severity`, which it must have.
fn severity(loader: &mut Loader<'_>, item: &Item<'_>) -> Option<Severity> {
    match loader.scalar(item, "severity", true) {
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
    }
}

/// The rule's `action`: `alert` unless it says otherwise.
fn action(loader: &mut Loader<'_>, item: &Item<'_>) -> Option<Action> {
    match loader.scalar(item, "action", false) {
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
    }
}

/// Part of a `%field` output template.
pub(super) enum TemplatePart {
    Text(String),
    /// A field name and the byte offset of its `%`.
    Field(String, usize),
}

/// Splits an output template into text and `%field` names; `name_char(c, name)` says
/// whether `c` continues `name`. A trailing dot ends the sentence, not the field name; a
/// `%` without a name is text.
pub(super) fn split_template(
    text: &str,
    name_char: impl Fn(char, &str) -> bool,
) -> Vec<TemplatePart> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let mut name = String::new();
        while let Some(&(_, d)) = rest.peek() {
            if !name_char(d, &name) {
                break;
            }
            name.push(d);
            rest.next();
        }
        let trailing_dot = name.ends_with('.');
        if trailing_dot {
            name.pop();
        }
        if name.is_empty() {
            literal.push('%');
        } else {
            if !literal.is_empty() {
                out.push(TemplatePart::Text(std::mem::take(&mut literal)));
            }
            out.push(TemplatePart::Field(name, i));
        }
        if trailing_dot {
            literal.push('.');
        }
    }
    if !literal.is_empty() {
        out.push(TemplatePart::Text(literal));
    }
    out
}

fn template(loader: &mut Loader<'_>, src: usize, node: &Node) -> Option<Vec<Piece>> {
    let text = node.as_str().unwrap_or_default();
    let name_char = |d: char, name: &str| {
        d.is_ascii_alphanumeric() || d == '_' || (d == '.' && !name.is_empty())
    };
    let mut out = Vec::new();
    let mut ok = true;
    for part in split_template(text, name_char) {
        match part {
            TemplatePart::Text(t) => out.push(Piece::Text(t)),
            TemplatePart::Field(name, i) => match fields::lookup(&name) {
                Some((id, _)) => out.push(Piece::Field(id)),
                None => {
                    let mut msg = format!("unknown field `%{name}` in output");
                    if let Some(s) = fields::nearest(&name, fields::FIELDS.iter().map(|f| f.0)) {
                        msg.push_str(&format!(" (did you mean `%{s}`?)"));
                    }
                    let pos = yaml::locate_in_scalar(loader.sources[src].text, node, i);
                    loader.error(src, pos, msg);
                    ok = false;
                }
            },
        }
    }
    ok.then_some(out)
}
