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

mod community;
mod eval;
pub mod expr;
mod falco;
pub mod fields;
mod fields_community;
pub mod fields_events;
mod fields_facts;
pub(crate) mod fields_proc;
mod lex;
pub mod limits;
mod literal;
mod loader;
pub mod prefilter;
mod requirement;
pub mod security_syscalls;
mod sigma;
pub mod yaml;

use std::fmt;

use expr::{Expr, Scope};
use fields::View;
use loader::Loader;
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

/// Where a rule comes from: Osprey's own format or a community format loaded unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Osprey,
    Sigma,
    Falco,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Osprey => "osprey",
            Source::Sigma => "sigma",
            Source::Falco => "falco",
        }
    }
}

/// What became of one rule of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Loaded,
    /// Needs a field, event or modifier Osprey cannot provide (the reason says which).
    Unsupported,
    /// Turned off by the file itself (`enabled: false`, a deprecated Sigma rule).
    Disabled,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Loaded => "loaded",
            Status::Unsupported => "unsupported",
            Status::Disabled => "disabled",
        }
    }
}

/// One line of `osprey rules check`: every rule of every file, loaded or not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleReport {
    pub source: Source,
    pub file: String,
    pub rule: String,
    /// The Sigma rule's id.
    pub id: Option<String>,
    pub status: Status,
    pub reason: Option<String>,
}

/// What a community rule brings beyond Osprey's own fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub source: Source,
    /// Sigma's `id`.
    pub id: Option<String>,
    /// Sigma's `level` or Falco's `priority`, as written.
    pub level: Option<String>,
    pub references: Vec<String>,
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
    pub meta: Meta,
}

impl Rule {
    /// An error about this rule, located where the rule is defined.
    pub fn error(&self, message: String) -> RuleError {
        let mut parts = self.origin.rsplitn(3, ':');
        let col = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let line = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        RuleError {
            file: parts.next().unwrap_or("").to_string(),
            pos: Pos { line, col },
            message,
        }
    }

    pub fn matches(&self, view: &View<'_>) -> bool {
        self.condition.eval(view) && !self.exceptions.iter().any(|(_, e)| e.eval(view))
    }

    /// The alert's message: the output template with the event's fields, escaped as tables
    /// escape (`\xff`, `\n`, `\u{202e}`), so that OUTPUT reads like COMM and is safe to print.
    pub fn render_output(&self, view: &View<'_>) -> String {
        use crate::wire::text::escape_for_terminal;
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
    /// Every rule read, in file order, with what became of it.
    pub report: Vec<RuleReport>,
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

/// One rule file that must load, for unit tests.
#[cfg(test)]
pub(crate) fn load_for_test(name: &str, src: &str) -> RuleSet {
    load(&[(name, src)]).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads a rule file, refusing one larger than [`limits::MAX_FILE_BYTES`] before reading
/// it whole. Errors name the path.
pub fn read_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(limits::MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() > limits::MAX_FILE_BYTES {
        return Err(format!(
            "{}:1:1: rule file larger than {} bytes",
            path.display(),
            limits::MAX_FILE_BYTES
        ));
    }
    Ok(text)
}

/// The rule files `paths` name: files as given, directories walked recursively for
/// `*.yaml` and `*.yml` files (in name order). A missing path is an error naming it.
pub fn expand_paths(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_dir() {
            out.push(path.clone());
            continue;
        }
        let mut pending = vec![path.clone()];
        let mut found = Vec::new();
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    pending.push(p);
                } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    found.push(p);
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// How many of `reports` of each source ended in each status.
pub fn counts<'a>(
    reports: impl Iterator<Item = &'a RuleReport>,
) -> std::collections::BTreeMap<(Source, Status), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in reports {
        *counts.entry((r.source, r.status)).or_insert(0) += 1;
    }
    counts
}

/// Loads rule files (name, text) into one set; lists, macros and exceptions of earlier
/// files are visible to later ones.
pub fn load(sources: &[(&str, &str)]) -> Result<RuleSet, RuleErrors> {
    let mut own = Vec::new();
    let mut sigma_files = Vec::new();
    let mut falco_files = Vec::new();
    // Community files that only parse with flow closers indented (see indent_flow_closers).
    let lenient: Vec<Option<String>> = sources
        .iter()
        .map(|(_, text)| {
            let fixed = yaml::parse(text)
                .is_err()
                .then(|| community::indent_flow_closers(text))?;
            yaml::parse(&fixed).is_ok().then_some(fixed)
        })
        .collect();
    for (&(name, original), fixed) in sources.iter().zip(&lenient) {
        let text = match fixed {
            Some(f) if !matches!(community::classify(f), community::Format::Osprey) => f.as_str(),
            _ => original,
        };
        match community::classify(text) {
            community::Format::Osprey => own.push((name, text)),
            community::Format::Sigma(doc) => sigma_files.push((name, text, doc)),
            community::Format::Falco(doc) => falco_files.push((name, text, doc)),
        }
    }
    let own_set = load_own(&own);
    let mut errors = match &own_set {
        Ok(_) => Vec::new(),
        Err(e) => e.0.clone(),
    };
    let mut set = own_set.unwrap_or_default();
    for (name, text, doc) in &sigma_files {
        match sigma::load(name, text, doc) {
            Ok((rule, report)) => {
                set.rules.extend(rule);
                set.report.push(report);
            }
            Err(e) => errors.push(e),
        }
    }
    let falco_set = falco::load(&falco_files);
    errors.extend(falco_set.errors);
    set.rules.extend(falco_set.rules);
    set.report.extend(falco_set.report);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(RuleErrors(errors))
    }
}

/// Loads files of Osprey's own format into one set.
fn load_own(sources: &[(&str, &str)]) -> Result<RuleSet, RuleErrors> {
    let mut loader = Loader::new(sources);
    let docs = loader.parse_files();
    let mut items = Vec::new();
    for (i, doc) in &docs {
        items.extend(loader.items(*i, doc));
    }
    // Lists first (plain strings), then macros in dependency order, exceptions and rules.
    let mut scope = Scope::default();
    loader.lists(&items, &mut scope);
    loader.macros(&items, &mut scope);
    let exceptions = loader.exceptions(&items, &scope);
    let (rules, report) = loader.rules(&items, &scope, &exceptions);
    if loader.errors.is_empty() {
        Ok(RuleSet { rules, report })
    } else {
        Err(RuleErrors(loader.errors))
    }
}

#[cfg(test)]
mod community_tests;
#[cfg(test)]
pub(crate) mod tests;
