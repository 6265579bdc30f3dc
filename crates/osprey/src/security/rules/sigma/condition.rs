//! Sigma's `condition`: search names, `1 of` / `all of` a name pattern or `them`, `not`,
//! `and`, `or` and brackets, compiled into an [`Expr`] over the searches' expressions.

use super::super::eval::glob_match;
use super::super::expr::Expr;
use super::super::limits::MAX_NESTING;

/// Why a condition did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CondError {
    /// Byte offset in the condition and message.
    Syntax(usize, String),
    /// Well formed, but needs what Osprey cannot provide.
    Unsupported(String),
}

/// A search of the detection: its expression, or why it cannot be evaluated.
pub type Search = Result<Expr, String>;

struct Parser<'a> {
    toks: Vec<(usize, &'a str)>,
    i: usize,
    searches: &'a [(String, Search)],
    depth: usize,
}

fn tokens(src: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in src.char_indices() {
        let single = c == '(' || c == ')' || c == '|';
        if c.is_whitespace() || single {
            if let Some(s) = start.take() {
                out.push((s, &src[s..i]));
            }
            if single {
                out.push((i, &src[i..i + 1]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, &src[s..]));
    }
    out
}

/// Compiles `condition` over the named searches.
pub fn compile(condition: &str, searches: &[(String, Search)]) -> Result<Expr, CondError> {
    let mut p = Parser {
        toks: tokens(condition),
        i: 0,
        searches,
        depth: 0,
    };
    let e = p.or()?;
    match p.toks.get(p.i) {
        None => Ok(e),
        Some(&(_, "|")) => Err(CondError::Unsupported(
            "aggregations in the condition (`| count() ...`) are not supported".into(),
        )),
        Some(&(at, t)) => Err(CondError::Syntax(
            at,
            format!("expected `and`, `or` or the end, found `{t}`"),
        )),
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.i).map(|t| t.1)
    }

    fn at(&self) -> usize {
        self.toks.get(self.i).map_or(0, |t| t.0)
    }

    fn or(&mut self) -> Result<Expr, CondError> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some("or") {
            self.i += 1;
            parts.push(self.and()?);
        }
        Ok(one_or(parts, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr, CondError> {
        let mut parts = vec![self.unary()?];
        while self.peek() == Some("and") {
            self.i += 1;
            parts.push(self.unary()?);
        }
        Ok(one_or(parts, Expr::And))
    }

    fn unary(&mut self) -> Result<Expr, CondError> {
        let at = self.at();
        if self.depth >= MAX_NESTING {
            return Err(CondError::Syntax(
                at,
                format!("condition nested deeper than {MAX_NESTING} levels"),
            ));
        }
        self.depth += 1;
        let e = self.primary();
        self.depth -= 1;
        e
    }

    fn primary(&mut self) -> Result<Expr, CondError> {
        let at = self.at();
        let Some(tok) = self.peek() else {
            return Err(CondError::Syntax(at, "condition ends too early".into()));
        };
        self.i += 1;
        match tok {
            "not" => Ok(Expr::Not(Box::new(self.unary()?))),
            "(" => {
                let e = self.or()?;
                if self.peek() != Some(")") {
                    return Err(CondError::Syntax(self.at(), "expected `)`".into()));
                }
                self.i += 1;
                Ok(e)
            }
            "1" | "any" | "all" if self.peek() == Some("of") => {
                self.i += 1;
                let all = tok == "all";
                let pattern = self.peek().unwrap_or("");
                let pat_at = self.at();
                self.i += 1;
                let chosen = self.matching(pattern, pat_at)?;
                Ok(if all {
                    one_or(chosen, Expr::And)
                } else {
                    one_or(chosen, Expr::Or)
                })
            }
            name => {
                let found = self.searches.iter().find(|s| s.0 == name);
                match found {
                    Some((_, Ok(e))) => Ok(e.clone()),
                    Some((_, Err(reason))) => Err(CondError::Unsupported(reason.clone())),
                    None => Err(CondError::Syntax(at, format!("no search named `{name}`"))),
                }
            }
        }
    }

    /// The searches `pattern` (a name with `*` wildcards, or `them`) names.
    fn matching(&self, pattern: &str, at: usize) -> Result<Vec<Expr>, CondError> {
        let mut out = Vec::new();
        for (name, search) in self.searches {
            let hit = if pattern == "them" {
                !name.starts_with('_')
            } else {
                glob_match(pattern.as_bytes(), name.as_bytes())
            };
            if hit {
                out.push(search.clone().map_err(CondError::Unsupported)?);
            }
        }
        if out.is_empty() {
            return Err(CondError::Syntax(
                at,
                format!("no search matches `{pattern}`"),
            ));
        }
        Ok(out)
    }
}

fn one_or(mut parts: Vec<Expr>, many: fn(Vec<Expr>) -> Expr) -> Expr {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        many(parts)
    }
}
