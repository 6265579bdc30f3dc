//! Sigma searches: `Field|modifier...: value(s)` mappings compiled into comparisons on
//! Osprey's fields, case-insensitive as Sigma specifies (regular expressions and base64
//! forms excepted).

use base64::Engine;
use yaml_rust2::scanner::TScalarStyle;

use super::super::expr::{Cidr, Expr, Literal, Op, Pattern};
use super::super::fields;
use super::super::yaml::{Node, Pos};
use super::condition::Search;

/// The log source categories Osprey's events provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    ProcessCreation,
    FileEvent,
    NetworkConnection,
}

/// How a Sigma field's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    /// `Initiated`: every connect Osprey sees was initiated by the process.
    Initiated,
}

pub fn field_id(name: &str) -> fields::FieldId {
    fields::lookup(name)
        .unwrap_or_else(|| panic!("field {name} is in the schema"))
        .0
}

fn cmp(field: &str, op: Op, value: Literal) -> Expr {
    Expr::Cmp {
        field: field_id(field),
        op,
        value,
    }
}

fn str_lit(s: &str) -> Literal {
    Literal::Str(s.as_bytes().to_vec())
}

impl Category {
    pub fn parse(name: &str) -> Option<Category> {
        Some(match name {
            "process_creation" => Category::ProcessCreation,
            "file_event" => Category::FileEvent,
            "network_connection" => Category::NetworkConnection,
            _ => return None,
        })
    }

    /// What every event of the category is: a successful exec, a file created (an
    /// O_CREAT open, a rename or link onto the path), a connect to an IP address.
    pub fn base(self) -> Expr {
        let ok = || cmp("evt.failed", Op::Eq, Literal::Bool(false));
        let kind = |k: &str| cmp("evt.kind", Op::Eq, str_lit(k));
        match self {
            Category::ProcessCreation => Expr::And(vec![kind("exec"), ok()]),
            Category::FileEvent => Expr::And(vec![
                Expr::Or(vec![
                    Expr::And(vec![
                        kind("open"),
                        cmp("file.create", Op::Eq, Literal::Bool(true)),
                    ]),
                    Expr::In {
                        field: field_id("evt.kind"),
                        set: vec![str_lit("rename"), str_lit("link")],
                    },
                ]),
                ok(),
            ]),
            Category::NetworkConnection => Expr::And(vec![
                kind("connect"),
                Expr::In {
                    field: field_id("net.family"),
                    set: vec![str_lit("inet"), str_lit("inet6")],
                },
            ]),
        }
    }

    /// The Osprey field a Sigma field reads, or why there is none.
    fn field(self, name: &str) -> Result<(&'static str, Kind), String> {
        let common = match name {
            "CommandLine" => Some("proc.cmdline"),
            "ParentImage" => Some("proc.pexe"),
            "ParentCommandLine" => Some("proc.pcmdline"),
            "User" => Some("user.name"),
            _ => None,
        };
        if let Some(f) = common {
            return Ok((f, Kind::Str));
        }
        let this = match (self, name) {
            (Category::ProcessCreation, "Image") => ("file.path", Kind::Str),
            (_, "Image") => ("proc.exe", Kind::Str),
            (_, "ProcessId") => ("proc.pid", Kind::Int),
            (_, "ParentProcessId") => ("proc.ppid", Kind::Int),
            (Category::FileEvent, "TargetFilename") => ("file.target", Kind::Str),
            (Category::NetworkConnection, "DestinationIp") => ("net.ip", Kind::Str),
            (Category::NetworkConnection, "DestinationPort") => ("net.port", Kind::Int),
            (Category::NetworkConnection, "Initiated") => ("evt.kind", Kind::Initiated),
            _ => return Err(unsupported_field(self, name)),
        };
        Ok(this)
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::ProcessCreation => "process_creation",
            Category::FileEvent => "file_event",
            Category::NetworkConnection => "network_connection",
        }
    }
}

fn unsupported_field(category: Category, name: &str) -> String {
    match name {
        "OriginalFileName" => {
            "field OriginalFileName: PE version information, which Linux executables do not have"
                .into()
        }
        "CurrentDirectory" => {
            "field CurrentDirectory: exec events do not record the working directory".into()
        }
        "LogonId" => {
            "field LogonId: exec events do not record the login session (audit loginuid)".into()
        }
        "DestinationHostname" => {
            "field DestinationHostname: connect events carry the address, not a DNS name".into()
        }
        "SourceIp" | "SourcePort" | "SourceHostname" => {
            format!("field {name}: connect events do not record the local address")
        }
        _ => format!(
            "field {name} is not provided for {} events",
            category.name()
        ),
    }
}

/// A search: a mapping (every entry holds), a list of mappings (any holds), or keywords.
/// `Ok(Err(reason))`: well formed but unsupported; `Err`: malformed, at a position.
pub fn search(category: Category, node: &Node) -> Result<Search, (Pos, String)> {
    match node {
        Node::Map(entries, _) => {
            let mut all = Vec::new();
            for (key, value) in entries {
                match field_match(category, key, value)? {
                    Ok(e) => all.push(e),
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            Ok(Ok(Expr::And(all)))
        }
        Node::Seq(items, _) if items.iter().all(|i| matches!(i, Node::Map(..))) => {
            let mut any = Vec::new();
            for item in items {
                match search(category, item)? {
                    Ok(e) => any.push(e),
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            Ok(Ok(Expr::Or(any)))
        }
        _ => Ok(Err(
            "keyword searches (values without a field) are not supported".into(),
        )),
    }
}

/// The modifiers Osprey implements.
const MODIFIERS: &[&str] = &[
    "contains",
    "startswith",
    "endswith",
    "all",
    "re",
    "i",
    "m",
    "s",
    "cidr",
    "base64",
    "base64offset",
    "windash",
    "exists",
    "lt",
    "lte",
    "gt",
    "gte",
];

fn field_match(category: Category, key: &Node, value: &Node) -> Result<Search, (Pos, String)> {
    let Some(key_text) = key.as_str() else {
        return Err((key.pos(), "search keys are field names".into()));
    };
    let mut parts = key_text.split('|');
    let name = parts.next().unwrap_or_default();
    let mods: Vec<&str> = parts.collect();
    if let Some(m) = mods.iter().find(|m| !MODIFIERS.contains(m)) {
        return Ok(Err(format!("value modifier `{m}` is not supported")));
    }
    let (field, kind) = match category.field(name) {
        Ok(f) => f,
        Err(reason) => return Ok(Err(reason)),
    };
    let values: Vec<&Node> = match value {
        Node::Seq(items, _) => items.iter().collect(),
        Node::Scalar { .. } => vec![value],
        Node::Map(_, pos) => return Err((*pos, format!("`{key_text}` takes a value or a list"))),
    };
    let mut exprs = Vec::new();
    for v in values {
        match one_value(field, kind, &mods, v)? {
            Ok(e) => exprs.push(e),
            Err(reason) => return Ok(Err(reason)),
        }
    }
    Ok(Ok(if mods.contains(&"all") {
        Expr::And(exprs)
    } else {
        Expr::Or(exprs)
    }))
}

fn is_null(v: &Node) -> bool {
    matches!(v, Node::Scalar { text, style: TScalarStyle::Plain, .. } if text.is_empty() || text == "null" || text == "~")
}

fn one_value(field: &str, kind: Kind, mods: &[&str], v: &Node) -> Result<Search, (Pos, String)> {
    let Some(text) = v.as_str() else {
        return Err((v.pos(), "values are scalars".into()));
    };
    let exists = || cmp(field, Op::Exists, Literal::Bool(true));
    if mods.contains(&"exists") {
        return Ok(Ok(match text {
            "true" => exists(),
            _ => Expr::Not(Box::new(exists())),
        }));
    }
    if is_null(v) {
        return Ok(Ok(Expr::Not(Box::new(exists()))));
    }
    match kind {
        Kind::Initiated if text == "true" => Ok(Ok(cmp(field, Op::Eq, str_lit("connect")))),
        Kind::Initiated => Ok(Err(
            "Initiated: false (accepted connections) is not traced; connects are".into(),
        )),
        Kind::Int => int_value(field, mods, text, v.pos()),
        Kind::Str => Ok(str_value(field, mods, text)),
    }
}

fn int_value(field: &str, mods: &[&str], text: &str, pos: Pos) -> Result<Search, (Pos, String)> {
    let Ok(n) = text.parse::<i64>() else {
        return Err((pos, format!("`{text}` is not a number")));
    };
    let op = match mods.first().copied() {
        None => Op::Eq,
        Some("lt") => Op::Lt,
        Some("lte") => Op::Le,
        Some("gt") => Op::Gt,
        Some("gte") => Op::Ge,
        Some(m) => return Ok(Err(format!("modifier `{m}` on the number field {field}"))),
    };
    Ok(Ok(cmp(field, op, Literal::Int(n))))
}

/// A string value with its modifiers: regular expression, network, base64 forms, dash
/// variants, or a (wildcard) match.
fn str_value(field: &str, mods: &[&str], text: &str) -> Search {
    if mods.contains(&"re") {
        let flags: String = ["i", "m", "s"]
            .iter()
            .filter(|f| mods.contains(f))
            .copied()
            .collect();
        let source = if flags.is_empty() {
            text.to_string()
        } else {
            format!("(?{flags}){text}")
        };
        return match regex::bytes::Regex::new(&source) {
            Ok(re) => Ok(cmp(field, Op::Regex, Literal::Regex(Pattern(re)))),
            Err(e) => Err(format!("regular expression `{text}` is not supported: {e}")),
        };
    }
    if mods.contains(&"cidr") {
        return match Cidr::parse(text) {
            Some(net) => Ok(cmp(field, Op::Cidr, Literal::Cidr(net))),
            None => Err(format!("`{text}` is not a network (cidr)")),
        };
    }
    let position = ["contains", "startswith", "endswith"]
        .into_iter()
        .find(|m| mods.contains(m));
    if mods.contains(&"base64") || mods.contains(&"base64offset") {
        let forms = if mods.contains(&"base64offset") {
            base64_offsets(text.as_bytes())
        } else {
            vec![base64::engine::general_purpose::STANDARD.encode(text)]
        };
        let op = match position {
            Some("contains") => Op::Contains,
            Some("startswith") => Op::StartsWith,
            Some(_) => Op::EndsWith,
            None => Op::Eq,
        };
        let any = forms.iter().map(|f| cmp(field, op, str_lit(f))).collect();
        return Ok(Expr::Or(any));
    }
    let variants = if mods.contains(&"windash") {
        windash(text)
    } else {
        vec![text.to_string()]
    };
    Ok(Expr::Or(
        variants
            .iter()
            .map(|t| matching(field, position, t))
            .collect(),
    ))
}

/// A case-insensitive match; `*` and `?` are wildcards unless escaped with `\`.
fn matching(field: &str, position: Option<&str>, text: &str) -> Expr {
    let lower = text.to_ascii_lowercase();
    let wild = lower.contains(['*', '?']) && !lower.contains("\\*") && !lower.contains("\\?");
    let plain = lower.replace("\\*", "*").replace("\\?", "?");
    if wild {
        let pattern = match position {
            Some("contains") => format!("*{lower}*"),
            Some("startswith") => format!("{lower}*"),
            Some(_) => format!("*{lower}"),
            None => lower,
        };
        return cmp(field, Op::IGlob, str_lit(&pattern));
    }
    let op = match position {
        Some("contains") => Op::IContains,
        Some("startswith") => Op::IStartsWith,
        Some(_) => Op::IEndsWith,
        None => Op::IEq,
    };
    cmp(field, op, str_lit(&plain))
}

/// The value with its dashes also written as `/`, en dash, em dash and horizontal bar.
fn windash(text: &str) -> Vec<String> {
    let mut out = vec![text.to_string()];
    for dash in ["/", "\u{2013}", "\u{2014}", "\u{2015}"] {
        out.push(text.replace('-', dash));
    }
    out
}

/// The three base64 forms of `value` at byte offsets 0, 1 and 2 of an encoded stream,
/// without the characters that depend on the neighbouring bytes.
fn base64_offsets(value: &[u8]) -> Vec<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    (0..3)
        .map(|shift| {
            let mut padded = vec![b' '; shift];
            padded.extend_from_slice(value);
            let encoded = engine.encode(&padded);
            let start = [0, 2, 3][shift];
            let end_cut = [0, 3, 2][(value.len() + shift) % 3];
            let end = encoded.len().saturating_sub(end_cut);
            encoded.get(start..end.max(start)).unwrap_or("").to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_offsets_match_the_encoded_stream() {
        let forms = base64_offsets(b"/bin/bash");
        let engine = base64::engine::general_purpose::STANDARD;
        for prefix in ["", "a", "ab"] {
            let encoded = engine.encode(format!("{prefix}/bin/bash -i"));
            assert!(
                forms.iter().any(|f| encoded.contains(f.as_str())),
                "{encoded} holds one of {forms:?}"
            );
        }
    }
}
