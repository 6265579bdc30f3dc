//! The condition language: lexer, parser (with type checking against the field schema,
//! macro expansion and list expansion) and evaluator.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | MACRO | FIELD op value | FIELD "in" set
//! op      := = | != | < | > | <= | >= | startswith | endswith | contains | glob
//! set     := "(" item ("," item)* ")" | LIST     item := value | LIST
//! value   := "quoted" | 'quoted' | bare-word | integer (decimal, 0x.., 0o.., or 0NNN octal)
//! ```

use std::collections::HashMap;

use super::fields::{self, FieldId, Type};
use super::lex::{lex, Tok, Token};
use super::limits::{MAX_CONDITION_NODES, MAX_NESTING};
pub use super::literal::{Cidr, Pattern};

mod falco_ops;
use falco_ops::FALCO_OPS;

/// A located error inside one condition string: `offset` is a byte offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

pub(super) fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        offset,
        message: message.into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    StartsWith,
    EndsWith,
    Contains,
    Glob,
    /// Case-insensitive forms (the literal is stored lowercased): Sigma's default matching
    /// and Falco's `icontains`.
    IEq,
    IStartsWith,
    IEndsWith,
    IContains,
    IGlob,
    /// The literal is a [`Literal::Regex`], searched anywhere in the value.
    Regex,
    /// The literal is a [`Literal::Cidr`]; the value is an IP address.
    Cidr,
    /// The field has a value on this event (literal ignored).
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Str(Vec<u8>),
    Int(i64),
    Bool(bool),
    Regex(Pattern),
    Cidr(Cidr),
}

/// A type-checked condition, macros and lists expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        field: FieldId,
        op: Op,
        value: Literal,
    },
    In {
        field: FieldId,
        set: Vec<Literal>,
    },
}

/// What names mean while parsing: macros (already parsed) and lists.
#[derive(Default)]
pub struct Scope {
    pub macros: HashMap<String, Expr>,
    pub lists: HashMap<String, Vec<String>>,
    /// Macros that cannot be used and why (Falco macros that need what Osprey lacks).
    pub unusable: HashMap<String, String>,
}

/// What a field name means in a dialect.
pub enum FieldRef {
    Known(FieldId, Type),
    /// A field of the dialect that Osprey's events cannot provide, and why.
    Unsupported(String),
    Unknown,
}

/// The condition language spoken: Osprey's own, or Falco's (its field names mapped onto
/// Osprey's, its extra operators, `=` on a list field meaning any element).
pub struct Dialect<'d> {
    pub field: &'d dyn Fn(&str) -> FieldRef,
    pub falco: bool,
}

/// Why a condition did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A macro that exists but has not been parsed yet.
    Pending(String),
    Error(ExprError),
    /// Well formed, but needs what Osprey cannot provide.
    Unsupported(String),
}

fn osprey_field(name: &str) -> FieldRef {
    match fields::lookup(name) {
        Some((id, ty)) => FieldRef::Known(id, ty),
        None => FieldRef::Unknown,
    }
}

pub const OSPREY: Dialect<'static> = Dialect {
    field: &osprey_field,
    falco: false,
};

struct Parser<'s> {
    toks: Vec<Token>,
    i: usize,
    scope: &'s Scope,
    /// Names of macros that are defined but not yet parsed, for ordering in the caller.
    pending: &'s dyn Fn(&str) -> bool,
    /// Open brackets and `not`s around the current token.
    depth: usize,
    /// Nodes of the condition built so far (macros and lists expanded).
    nodes: usize,
    dialect: &'s Dialect<'s>,
    /// Set when the condition needs what Osprey cannot provide.
    unsupported: Option<String>,
}

const STR_OPS: &[(&str, Op)] = &[
    ("startswith", Op::StartsWith),
    ("endswith", Op::EndsWith),
    ("contains", Op::Contains),
    ("glob", Op::Glob),
];

/// Parses and type-checks a condition. `pending(name)` says whether `name` is a macro that
/// exists but has not been parsed yet; such a reference fails with `Err(Ok(name))` so the
/// caller can parse that macro first.
pub fn parse(
    src: &str,
    scope: &Scope,
    pending: &dyn Fn(&str) -> bool,
) -> Result<Expr, Result<String, ExprError>> {
    parse_in(src, scope, pending, &OSPREY).map_err(|f| match f {
        Failure::Pending(name) => Ok(name),
        Failure::Error(e) => Err(e),
        Failure::Unsupported(message) => Err(ExprError { offset: 0, message }),
    })
}

/// [`parse`] in a dialect, telling unsupported fields and macros from errors.
pub fn parse_in(
    src: &str,
    scope: &Scope,
    pending: &dyn Fn(&str) -> bool,
    dialect: &Dialect<'_>,
) -> Result<Expr, Failure> {
    let toks = lex(src).map_err(Failure::Error)?;
    let mut p = Parser {
        toks,
        i: 0,
        scope,
        pending,
        depth: 0,
        nodes: 0,
        dialect,
        unsupported: None,
    };
    let parsed = p.or().and_then(|e| {
        let t = p.peek();
        if t.tok != Tok::End {
            return perr(
                t.at,
                format!(
                    "expected `and`, `or` or the end, found {}",
                    describe(&t.tok)
                ),
            );
        }
        Ok(e)
    });
    match (parsed, p.unsupported) {
        (Ok(e), _) => Ok(e),
        (Err(_), Some(reason)) => Err(Failure::Unsupported(reason)),
        (Err(Ok(name)), None) => Err(Failure::Pending(name)),
        (Err(Err(e)), None) => Err(Failure::Error(e)),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Op(o) => format!("`{o}`"),
        Tok::Word(w) => format!("`{w}`"),
        Tok::Quoted(q) => format!("\"{q}\""),
        Tok::End => "the end of the condition".into(),
    }
}

type PResult<T> = Result<T, Result<String, ExprError>>;

fn perr<T>(offset: usize, message: impl Into<String>) -> PResult<T> {
    Err(Err(ExprError {
        offset,
        message: message.into(),
    }))
}

impl Parser<'_> {
    fn peek(&self) -> Token {
        self.toks[self.i.min(self.toks.len() - 1)].clone()
    }

    fn next(&mut self) -> Token {
        let t = self.peek();
        self.i += 1;
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x == w)
    }

    fn or(&mut self) -> PResult<Expr> {
        let mut parts = vec![self.and()?];
        while self.is_word("or") {
            self.next();
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> PResult<Expr> {
        let mut parts = vec![self.unary()?];
        while self.is_word("and") {
            self.next();
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Expr::And(parts)
        })
    }

    /// Runs `inner` one nesting level deeper, refusing to go past the limit.
    fn nested(
        &mut self,
        at: usize,
        inner: impl FnOnce(&mut Self) -> PResult<Expr>,
    ) -> PResult<Expr> {
        if self.depth >= MAX_NESTING {
            return perr(
                at,
                format!("condition nested deeper than {MAX_NESTING} levels (brackets, `not` and macros)"),
            );
        }
        self.depth += 1;
        let e = inner(self);
        self.depth -= 1;
        e
    }

    /// Counts `n` more nodes, refusing to go past the limit.
    fn grow(&mut self, at: usize, n: usize) -> PResult<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_CONDITION_NODES {
            return perr(
                at,
                format!("condition larger than {MAX_CONDITION_NODES} terms once macros and lists are expanded"),
            );
        }
        Ok(())
    }

    fn unary(&mut self) -> PResult<Expr> {
        let t = self.next();
        match t.tok {
            Tok::Word(w) if w == "not" => {
                self.grow(t.at, 1)?;
                self.nested(t.at, |p| Ok(Expr::Not(Box::new(p.unary()?))))
            }
            Tok::LParen => self.nested(t.at, |p| {
                let e = p.or()?;
                let close = p.next();
                if close.tok != Tok::RParen {
                    return perr(
                        close.at,
                        format!("expected `)`, found {}", describe(&close.tok)),
                    );
                }
                Ok(e)
            }),
            Tok::Word(w) => {
                let next = self.peek();
                let falco = self.dialect.falco;
                let is_comparison = matches!(&next.tok, Tok::Op(_))
                    || matches!(&next.tok, Tok::Word(x) if x == "in"
                        || STR_OPS.iter().any(|s| s.0 == x)
                        || (falco && FALCO_OPS.iter().any(|s| s.0 == x)));
                if is_comparison {
                    self.comparison(&w, t.at)
                } else {
                    self.macro_ref(&w, t.at)
                }
            }
            other => perr(
                t.at,
                format!("expected a condition, found {}", describe(&other)),
            ),
        }
    }

    fn macro_ref(&mut self, name: &str, at: usize) -> PResult<Expr> {
        if let Some(e) = self.scope.macros.get(name) {
            // Every stored macro is within the limits, so measuring it recurses boundedly.
            if self.depth + e.depth() > MAX_NESTING {
                return perr(
                    at,
                    format!("macro `{name}` nests this condition deeper than {MAX_NESTING} levels"),
                );
            }
            self.grow(at, e.nodes())?;
            return Ok(e.clone());
        }
        if (self.pending)(name) {
            return Err(Ok(name.to_string()));
        }
        if let Some(reason) = self.scope.unusable.get(name) {
            self.unsupported = Some(format!("macro `{name}`: {reason}"));
            return perr(at, "unusable macro");
        }
        if fields::lookup(name).is_some() {
            return perr(at, format!("field `{name}` must be compared with an operator (= != < > in startswith endswith contains glob)"));
        }
        let mut msg = format!("undefined macro `{name}`");
        if let Some(s) = fields::nearest(name, self.scope.macros.keys().map(String::as_str)) {
            msg.push_str(&format!(" (did you mean `{s}`?)"));
        } else if let Some(s) = fields::nearest(name, fields::FIELDS.iter().map(|f| f.0)) {
            msg.push_str(&format!(
                " (did you mean the field `{s}` with an operator?)"
            ));
        }
        perr(at, msg)
    }

    fn comparison(&mut self, name: &str, at: usize) -> PResult<Expr> {
        let (field, ty) = match (self.dialect.field)(name) {
            FieldRef::Known(field, ty) => (field, ty),
            FieldRef::Unsupported(reason) => {
                self.unsupported = Some(reason);
                return perr(at, "unsupported field");
            }
            FieldRef::Unknown if self.dialect.falco => {
                self.unsupported = Some(format!("field `{name}` is not provided by Osprey"));
                return perr(at, "unsupported field");
            }
            FieldRef::Unknown => {
                let mut msg = format!("unknown field `{name}`");
                if let Some(s) = fields::nearest(name, fields::FIELDS.iter().map(|f| f.0)) {
                    msg.push_str(&format!(" (did you mean `{s}`?)"));
                }
                return perr(at, msg);
            }
        };
        if self.dialect.falco {
            if let Tok::Word(w) = &self.peek().tok {
                if let Some(&(word, op)) = FALCO_OPS.iter().find(|s| s.0 == w) {
                    self.next();
                    return self.falco_comparison(field, ty, word, op, at);
                }
            }
        }
        let op_tok = self.next();
        let op = match &op_tok.tok {
            Tok::Op("=") => Op::Eq,
            Tok::Op("!=") => Op::Ne,
            Tok::Op("<") => Op::Lt,
            Tok::Op(">") => Op::Gt,
            Tok::Op("<=") => Op::Le,
            Tok::Op(">=") => Op::Ge,
            Tok::Word(w) if w == "in" => {
                let set = self.set(ty)?;
                self.grow(at, 1 + set.len())?;
                return Ok(Expr::In { field, set });
            }
            Tok::Word(w) => STR_OPS
                .iter()
                .find(|s| s.0 == w)
                .map(|s| s.1)
                .expect("checked"),
            _ => unreachable!("checked by the caller"),
        };
        let allowed = match op {
            Op::Eq | Op::Ne => ty != Type::StrList || self.dialect.falco,
            Op::Lt | Op::Gt | Op::Le | Op::Ge => ty == Type::Int,
            Op::Contains => matches!(ty, Type::Str | Type::StrList),
            _ => ty == Type::Str,
        };
        if !allowed {
            return perr(
                op_tok.at,
                format!(
                    "operator {} does not apply to `{name}`, {}",
                    describe(&op_tok.tok),
                    ty.name()
                ),
            );
        }
        let value_ty = if ty == Type::StrList { Type::Str } else { ty };
        let v = self.next();
        let value = self.literal(&v, value_ty, name)?;
        self.grow(at, 1)?;
        Ok(Expr::Cmp { field, op, value })
    }

    fn set(&mut self, ty: Type) -> PResult<Vec<Literal>> {
        let item_ty = if ty == Type::StrList { Type::Str } else { ty };
        if ty == Type::Bool {
            return perr(self.peek().at, "`in` does not apply to a boolean field");
        }
        let open = self.next();
        let mut out = Vec::new();
        match &open.tok {
            Tok::Word(w) if self.scope.lists.contains_key(w) => {
                return self.list_items(w, item_ty, open.at);
            }
            Tok::LParen => {}
            other => {
                return perr(
                    open.at,
                    format!(
                        "expected `(` or a list name after `in`, found {}",
                        describe(other)
                    ),
                );
            }
        }
        loop {
            let t = self.next();
            match &t.tok {
                Tok::Word(w) if self.scope.lists.contains_key(w) => {
                    out.extend(self.list_items(w, item_ty, t.at)?);
                }
                Tok::RParen if out.is_empty() => return Ok(out),
                _ => out.push(self.literal(&t, item_ty, "set")?),
            }
            let sep = self.next();
            match sep.tok {
                Tok::Comma => continue,
                Tok::RParen => return Ok(out),
                other => {
                    return perr(
                        sep.at,
                        format!("expected `,` or `)`, found {}", describe(&other)),
                    )
                }
            }
        }
    }

    fn list_items(&self, name: &str, ty: Type, at: usize) -> PResult<Vec<Literal>> {
        self.scope.lists[name]
            .iter()
            .map(|item| {
                parse_literal(item, ty).ok_or_else(|| {
                    Err(ExprError {
                        offset: at,
                        message: format!("list `{name}` item `{item}` is not {}", ty.name()),
                    })
                })
            })
            .collect()
    }

    fn literal(&self, t: &Token, ty: Type, what: &str) -> PResult<Literal> {
        let text = match &t.tok {
            Tok::Word(w) | Tok::Quoted(w) => w,
            other => return perr(t.at, format!("expected a value, found {}", describe(other))),
        };
        if matches!(t.tok, Tok::Quoted(_)) && ty == Type::Str {
            return Ok(Literal::Str(text.as_bytes().to_vec()));
        }
        match parse_literal(text, ty) {
            Some(l) => Ok(l),
            None => perr(
                t.at,
                format!("`{text}` is not {} (compared with `{what}`)", ty.name()),
            ),
        }
    }
}

fn parse_literal(text: &str, ty: Type) -> Option<Literal> {
    match ty {
        Type::Str | Type::StrList => Some(Literal::Str(text.as_bytes().to_vec())),
        Type::Bool => match text {
            "true" => Some(Literal::Bool(true)),
            "false" => Some(Literal::Bool(false)),
            _ => None,
        },
        Type::Int => parse_int(text).map(Literal::Int),
        // Falco's lists of networks quote their items ('"10.0.0.0/8"').
        Type::Net => Cidr::parse(text.trim_matches('"')).map(Literal::Cidr),
    }
}

/// Decimal, 0x hex, 0o octal, or C-style leading-zero octal (modes read naturally: 04000).
pub fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let v = if let Some(h) = body.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = body.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::super::eval::glob_match;
    use super::*;

    fn p(src: &str) -> Result<Expr, ExprError> {
        let mut scope = Scope::default();
        scope
            .lists
            .insert("shells".into(), vec!["bash".into(), "sh".into()]);
        let m = parse("proc.name = cat", &scope, &|_| false).unwrap();
        scope.macros.insert("is_cat".into(), m);
        parse(src, &scope, &|_| false).map_err(|e| e.unwrap_err())
    }

    #[test]
    fn parses_precedence_and_sets() {
        let e =
            p("proc.name in (shells, zsh) and not file.path startswith /tmp or is_cat").unwrap();
        let Expr::Or(parts) = e else {
            panic!("or at top")
        };
        assert_eq!(parts.len(), 2);
        let Expr::And(and) = &parts[0] else { panic!() };
        let Expr::In { set, .. } = &and[0] else {
            panic!()
        };
        assert_eq!(set.len(), 3);
        assert!(matches!(and[1], Expr::Not(_)));
    }

    #[test]
    fn rejects_with_offsets_and_suggestions() {
        let e = p("proc.nme = x").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(
            e.message.contains("did you mean `proc.name`"),
            "{}",
            e.message
        );
        let e = p("proc.name = a and proc.pid = abc").unwrap_err();
        assert_eq!(e.offset, 29);
        assert!(
            e.message.contains("`abc` is not an integer"),
            "{}",
            e.message
        );
        let e = p("proc.name startswith x and is_ct").unwrap_err();
        assert!(
            e.message
                .contains("undefined macro `is_ct` (did you mean `is_cat`?)"),
            "{}",
            e.message
        );
        let e = p("proc.pid startswith 1").unwrap_err();
        assert_eq!(e.offset, 9);
        let e = p("(proc.pid = 1").unwrap_err();
        assert!(e.message.contains("expected `)`"));
        assert!(p("proc.name = \"unterminated").is_err());
        assert!(p("proc.name = x y").is_err());
        assert!(p("evt.failed in (true)").is_err());
    }

    #[test]
    fn integers_and_globs() {
        assert_eq!(parse_int("04000"), Some(2048));
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("-1"), Some(-1));
        assert!(glob_match(b"/home/*/.ssh/id_*", b"/home/a/.ssh/id_rsa"));
        assert!(glob_match(b"/proc/*/mem", b"/proc/12/mem"));
        assert!(!glob_match(b"/proc/*/mem", b"/proc/12/maps"));
        assert!(glob_match(b"a?c", b"abc"));
    }
}
