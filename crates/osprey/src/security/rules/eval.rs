//! Evaluating a parsed condition on an event, and the questions the kernel compilers ask
//! of it (conjuncts, equalities).

use super::expr::{Expr, Literal, Op};
use super::fields::{Value, View};

/// `*` any run of bytes (including `/`), `?` one byte; everything else literal.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn literal_eq(v: &Value<'_>, l: &Literal) -> bool {
    match (v, l) {
        (Value::Str(s), Literal::Str(x)) => s.as_ref() == x.as_slice(),
        (Value::Int(i), Literal::Int(x)) => i == x,
        (Value::Bool(b), Literal::Bool(x)) => b == x,
        (Value::StrList(items), Literal::Str(x)) => items.contains(&x.as_slice()),
        (Value::Str(s), Literal::Cidr(net)) => std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse().ok())
            .is_some_and(|ip| net.contains(ip)),
        _ => false,
    }
}

impl Literal {
    /// A string literal as UTF-8 text (paths, names, addresses).
    pub fn text(&self) -> Option<String> {
        match self {
            Literal::Str(s) => String::from_utf8(s.clone()).ok(),
            _ => None,
        }
    }
}

impl Expr {
    /// Levels of nesting: 1 for a comparison.
    pub fn depth(&self) -> usize {
        match self {
            Expr::And(parts) | Expr::Or(parts) => {
                1 + parts.iter().map(Expr::depth).max().unwrap_or(0)
            }
            Expr::Not(e) => 1 + e.depth(),
            Expr::Cmp { .. } | Expr::In { .. } => 1,
        }
    }

    /// Terms, `not`s and set items, as the parser's size limit counts them.
    pub fn nodes(&self) -> usize {
        match self {
            Expr::And(parts) | Expr::Or(parts) => parts.iter().map(Expr::nodes).sum(),
            Expr::Not(e) => 1 + e.nodes(),
            Expr::Cmp { .. } => 1,
            Expr::In { set, .. } => 1 + set.len(),
        }
    }

    /// The terms of a top-level `and` (the expression itself otherwise): what the compilers
    /// of rules for the kernel (kill, deny) decide term by term.
    pub fn conjuncts(&self) -> Vec<&Expr> {
        match self {
            Expr::And(parts) => parts.iter().collect(),
            e => vec![e],
        }
    }

    /// `field = x` or `field in (...)`: the field's name and the literals it must equal.
    pub fn equality(&self) -> Option<(&'static str, Vec<&Literal>)> {
        match self {
            Expr::Cmp {
                field,
                op: Op::Eq,
                value,
            } => Some((super::fields::name(*field), vec![value])),
            Expr::In { field, set } => Some((super::fields::name(*field), set.iter().collect())),
            _ => None,
        }
    }

    pub fn eval(&self, view: &View<'_>) -> bool {
        match self {
            Expr::And(parts) => parts.iter().all(|p| p.eval(view)),
            Expr::Or(parts) => parts.iter().any(|p| p.eval(view)),
            Expr::Not(e) => !e.eval(view),
            Expr::In { field, set } => match view.get(*field) {
                Some(v) => set.iter().any(|l| literal_eq(&v, l)),
                None => false,
            },
            Expr::Cmp { field, op, value } => {
                let Some(v) = view.get(*field) else {
                    return false;
                };
                match (op, &v, value) {
                    (Op::Eq, _, _) => literal_eq(&v, value),
                    (Op::Ne, _, _) => !literal_eq(&v, value),
                    (Op::Lt, Value::Int(a), Literal::Int(b)) => a < b,
                    (Op::Gt, Value::Int(a), Literal::Int(b)) => a > b,
                    (Op::Le, Value::Int(a), Literal::Int(b)) => a <= b,
                    (Op::Ge, Value::Int(a), Literal::Int(b)) => a >= b,
                    (Op::StartsWith, Value::Str(s), Literal::Str(x)) => s.starts_with(x),
                    (Op::EndsWith, Value::Str(s), Literal::Str(x)) => s.ends_with(x),
                    (Op::Contains, Value::Str(s), Literal::Str(x)) => {
                        x.is_empty() || s.windows(x.len()).any(|w| w == x.as_slice())
                    }
                    (Op::Contains, Value::StrList(_), _) => literal_eq(&v, value),
                    (Op::Glob, Value::Str(s), Literal::Str(x)) => glob_match(x, s),
                    (Op::Exists, _, _) => true,
                    (Op::Regex, Value::Str(s), Literal::Regex(re)) => re.0.is_match(s),
                    (Op::Cidr, Value::Str(s), Literal::Cidr(net)) => std::str::from_utf8(s)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .is_some_and(|ip| net.contains(ip)),
                    (Op::IEq, Value::Str(s), Literal::Str(x)) => s.eq_ignore_ascii_case(x),
                    (Op::IStartsWith, Value::Str(s), Literal::Str(x)) => {
                        s.len() >= x.len() && s[..x.len()].eq_ignore_ascii_case(x)
                    }
                    (Op::IEndsWith, Value::Str(s), Literal::Str(x)) => {
                        s.len() >= x.len() && s[s.len() - x.len()..].eq_ignore_ascii_case(x)
                    }
                    (Op::IContains, Value::Str(s), Literal::Str(x)) => {
                        x.is_empty() || s.windows(x.len()).any(|w| w.eq_ignore_ascii_case(x))
                    }
                    (Op::IGlob, Value::Str(s), Literal::Str(x)) => {
                        glob_match(x, &s.to_ascii_lowercase())
                    }
                    _ => false,
                }
            }
        }
    }
}
