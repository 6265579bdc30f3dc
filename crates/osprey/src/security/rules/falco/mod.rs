//! Falco rules files, loaded unchanged: lists, macros and rules (with `append` and
//! `override`), `exceptions`, `enabled`, `priority`, `tags` and `output`, compiled into the
//! same [`Rule`] as Osprey's own with Falco's field names mapped onto Osprey's events.
//! Files are read in the order given; lists and macros of every file are visible to the
//! rules of all of them. A rule that needs a field or event Osprey lacks is reported
//! unsupported with the reason; a malformed file is an error at file:line:col.

mod compile;
mod fields;

use std::collections::HashMap;

use super::community::{error, get, get_str, strings};
use super::yaml::{Node, Pos};
use super::{Rule, RuleError, RuleReport};

#[derive(Default)]
pub(super) struct Loaded {
    pub rules: Vec<Rule>,
    pub report: Vec<RuleReport>,
    pub errors: Vec<RuleError>,
}

/// A condition's text and where it was written (the first part, for appended ones).
#[derive(Clone)]
struct Condition {
    text: String,
    file: usize,
    node: Node,
}

struct FalcoRule {
    name: String,
    desc: String,
    condition: Option<Condition>,
    output: String,
    priority: String,
    tags: Vec<String>,
    enabled: bool,
    exceptions: Vec<Node>,
    source: Option<String>,
    file: usize,
    pos: Pos,
}

/// Everything the files define, appends and overrides applied.
#[derive(Default)]
struct Defs {
    lists: HashMap<String, Vec<String>>,
    macros: HashMap<String, Condition>,
    rules: Vec<FalcoRule>,
}

const ITEM_KINDS: &[&str] = &[
    "rule",
    "macro",
    "list",
    "required_engine_version",
    "required_plugin_versions",
];

pub(super) fn load(files: &[(&str, &str, Node)]) -> Loaded {
    let mut out = Loaded::default();
    let mut defs = Defs::default();
    let mut changes = Vec::new();
    for (i, (name, _, doc)) in files.iter().enumerate() {
        let Node::Seq(items, _) = doc else {
            continue;
        };
        for item in items {
            let Some(kind) = ITEM_KINDS.iter().find(|k| get(item, k).is_some()) else {
                out.errors.push(error(
                    name,
                    item.pos(),
                    "a Falco item has `rule`, `macro`, `list`, `required_engine_version` or `required_plugin_versions`",
                ));
                continue;
            };
            if is_change(item) {
                changes.push((i, *kind, item));
            } else if let Err(e) = defs.define(i, kind, item) {
                out.errors.push(error(name, e.0, e.1));
            }
        }
    }
    for (i, kind, item) in changes {
        if let Err(e) = defs.change(i, kind, item) {
            out.errors.push(error(files[i].0, e.0, e.1));
        }
    }
    compile::compile(files, defs, &mut out);
    out
}

/// An `append: true` or `override:` item, or a rule item that only sets `enabled`.
fn is_change(item: &Node) -> bool {
    get_str(item, "append") == Some("true")
        || get(item, "override").is_some()
        || (get(item, "rule").is_some()
            && get(item, "condition").is_none()
            && get(item, "enabled").is_some())
}

type ItemError = (Pos, String);

fn required<'n>(item: &'n Node, key: &str) -> Result<&'n str, ItemError> {
    get_str(item, key).ok_or_else(|| (item.pos(), format!("missing `{key}`")))
}

fn condition(item: &Node, file: usize) -> Result<Condition, ItemError> {
    let node =
        get(item, "condition").ok_or_else(|| (item.pos(), "missing `condition`".to_string()))?;
    let text = node
        .as_str()
        .ok_or_else(|| (node.pos(), "`condition` is a string".to_string()))?;
    Ok(Condition {
        text: text.to_string(),
        file,
        node: node.clone(),
    })
}

fn exceptions(item: &Node) -> Vec<Node> {
    match get(item, "exceptions") {
        Some(Node::Seq(items, _)) => items.clone(),
        _ => Vec::new(),
    }
}

impl Defs {
    fn define(&mut self, file: usize, kind: &str, item: &Node) -> Result<(), ItemError> {
        match kind {
            "list" => {
                let name = required(item, "list")?;
                self.lists
                    .insert(name.to_string(), strings(get(item, "items")));
            }
            "macro" => {
                let name = required(item, "macro")?;
                self.macros.insert(name.to_string(), condition(item, file)?);
            }
            "rule" => {
                let name = required(item, "rule")?.to_string();
                let rule = FalcoRule {
                    desc: get_str(item, "desc").unwrap_or("").trim().to_string(),
                    condition: Some(condition(item, file)?),
                    output: get_str(item, "output").unwrap_or("").trim().to_string(),
                    priority: required(item, "priority")?.to_string(),
                    tags: strings(get(item, "tags")),
                    enabled: get_str(item, "enabled") != Some("false"),
                    exceptions: exceptions(item),
                    source: get_str(item, "source").map(str::to_string),
                    file,
                    pos: get(item, "rule").map_or(item.pos(), Node::pos),
                    name: name.clone(),
                };
                // A later definition of the same rule replaces the earlier one.
                self.rules.retain(|r| r.name != name);
                self.rules.push(rule);
            }
            _ => {} // required_*_version: accepted.
        }
        Ok(())
    }

    /// How an override treats `key`: `Some(true)` append, `Some(false)` replace.
    fn mode(item: &Node, key: &str) -> Option<bool> {
        if get_str(item, "append") == Some("true") {
            return get(item, key).map(|_| true);
        }
        match get(item, "override").and_then(|o| get_str(o, key)) {
            Some("append") => Some(true),
            Some("replace") => Some(false),
            _ => get(item, key).filter(|_| key == "enabled").map(|_| false),
        }
    }

    fn change(&mut self, file: usize, kind: &str, item: &Node) -> Result<(), ItemError> {
        let name = required(item, kind)?;
        let missing = || {
            (
                item.pos(),
                format!("{kind} `{name}` is appended to or overridden but not defined"),
            )
        };
        match kind {
            "list" => {
                let items = self.lists.get_mut(name).ok_or_else(missing)?;
                match Self::mode(item, "items") {
                    Some(true) => items.extend(strings(get(item, "items"))),
                    Some(false) => *items = strings(get(item, "items")),
                    None => {}
                }
            }
            "macro" => {
                let cond = self.macros.get_mut(name).ok_or_else(missing)?;
                match Self::mode(item, "condition") {
                    Some(true) => {
                        let more = condition(item, file)?;
                        cond.text = format!("{} {}", cond.text, more.text);
                    }
                    Some(false) => *cond = condition(item, file)?,
                    None => {}
                }
            }
            "rule" => {
                let rule = self
                    .rules
                    .iter_mut()
                    .find(|r| r.name == name)
                    .ok_or_else(missing)?;
                change_rule(rule, file, item)?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn change_rule(rule: &mut FalcoRule, file: usize, item: &Node) -> Result<(), ItemError> {
    match Defs::mode(item, "condition") {
        Some(true) => {
            let more = condition(item, file)?;
            if let Some(c) = &mut rule.condition {
                c.text = format!("{} {}", c.text, more.text);
            }
        }
        Some(false) => rule.condition = Some(condition(item, file)?),
        None => {}
    }
    match Defs::mode(item, "exceptions") {
        Some(true) => rule.exceptions.extend(exceptions(item)),
        Some(false) => rule.exceptions = exceptions(item),
        None => {}
    }
    let text = |k| get_str(item, k).unwrap_or("").trim().to_string();
    match Defs::mode(item, "output") {
        Some(true) => rule.output = format!("{} {}", rule.output, text("output")),
        Some(false) => rule.output = text("output"),
        None => {}
    }
    match Defs::mode(item, "desc") {
        Some(true) => rule.desc = format!("{} {}", rule.desc, text("desc")),
        Some(false) => rule.desc = text("desc"),
        None => {}
    }
    match Defs::mode(item, "tags") {
        Some(true) => rule.tags.extend(strings(get(item, "tags"))),
        Some(false) => rule.tags = strings(get(item, "tags")),
        None => {}
    }
    if Defs::mode(item, "priority").is_some() {
        rule.priority = text("priority");
    }
    if Defs::mode(item, "enabled").is_some() {
        rule.enabled = get_str(item, "enabled") != Some("false");
    }
    Ok(())
}
