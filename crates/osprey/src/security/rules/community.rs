//! Telling rule files apart by content (Osprey's own, Sigma, Falco), and the YAML helpers
//! the community loaders share.

use super::yaml::{self, Node, Pos};
use super::RuleError;

pub(super) enum Format {
    Osprey,
    /// One Sigma rule: a mapping with `detection`.
    Sigma(Node),
    /// A Falco rules file: a list of items of which at least one has a key only Falco uses
    /// (`priority`, `required_engine_version`, `required_plugin_versions`, `append`, `override`).
    Falco(Node),
}

const FALCO_ONLY_KEYS: &[&str] = &[
    "priority",
    "required_engine_version",
    "required_plugin_versions",
    "append",
    "override",
];

/// `text` with every line that only closes a flow collection (`]`, `}`) indented two more
/// spaces: yaml-cpp, which Falco uses, accepts such a bracket at its key's indentation, which
/// YAML parsers stricter about flow indentation refuse. Line numbers are unchanged.
pub(super) fn indent_flow_closers(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        if matches!(body.trim_end(), "]" | "}") {
            out.push_str("  ");
        }
        out.push_str(line);
    }
    out
}

/// The format of a file; one that does not parse is Osprey's (whose loader reports why).
pub(super) fn classify(text: &str) -> Format {
    let Ok(Some(doc)) = yaml::parse(text) else {
        return Format::Osprey;
    };
    let is_falco = |n: &Node| match n {
        Node::Map(kv, _) => kv
            .iter()
            .any(|(k, _)| k.as_str().is_some_and(|k| FALCO_ONLY_KEYS.contains(&k))),
        _ => false,
    };
    match &doc {
        Node::Map(..) if get(&doc, "detection").is_some() => Format::Sigma(doc),
        Node::Seq(items, _) if items.iter().any(is_falco) => Format::Falco(doc),
        _ => Format::Osprey,
    }
}

/// The value of `key` in a mapping.
pub(super) fn get<'n>(map: &'n Node, key: &str) -> Option<&'n Node> {
    match map {
        Node::Map(kv, _) => kv
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|kv| &kv.1),
        _ => None,
    }
}

/// The string value of `key` in a mapping.
pub(super) fn get_str<'n>(map: &'n Node, key: &str) -> Option<&'n str> {
    get(map, key).and_then(Node::as_str)
}

/// A scalar or a list of scalars, as strings (other nodes are skipped).
pub(super) fn strings(node: Option<&Node>) -> Vec<String> {
    match node {
        Some(Node::Seq(items, _)) => items
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        Some(n) => n.as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
        None => Vec::new(),
    }
}

pub(super) fn error(file: &str, pos: Pos, message: impl Into<String>) -> RuleError {
    RuleError {
        file: file.to_string(),
        pos,
        message: message.into(),
    }
}
