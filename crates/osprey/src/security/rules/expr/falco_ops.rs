//! Falco's operators beyond Osprey's own, parsed into the same expressions: `exists`,
//! `pmatch` and `intersects` (sets), `icontains`, `iglob`, `regex` and the byte-string
//! `bcontains`/`bstartswith` (hex operands).

use super::{perr, Expr, FieldId, Literal, Op, PResult, Parser, Pattern, Type};

/// Falco's operators beyond Osprey's own (`exists` takes no value; `pmatch` and
/// `intersects` take a set).
pub(super) const FALCO_OPS: &[(&str, Op)] = &[
    ("icontains", Op::IContains),
    ("iglob", Op::IGlob),
    ("regex", Op::Regex),
    ("bcontains", Op::Contains),
    ("bstartswith", Op::StartsWith),
    ("exists", Op::Exists),
    ("pmatch", Op::StartsWith),
    ("intersects", Op::Eq),
];

impl Parser<'_> {
    /// Falco's operators: `exists`, set operators (`pmatch`, `intersects`) and string ones.
    pub(super) fn falco_comparison(
        &mut self,
        field: FieldId,
        ty: Type,
        word: &str,
        op: Op,
        at: usize,
    ) -> PResult<Expr> {
        self.grow(at, 1)?;
        let cmp = |op, value| Expr::Cmp { field, op, value };
        match word {
            "exists" => return Ok(cmp(Op::Exists, Literal::Bool(true))),
            "intersects" => {
                let set = self.set(ty)?;
                return Ok(Expr::In { field, set });
            }
            "pmatch" => {
                // Path prefix match: the directory itself or anything below it.
                let set = self.set(ty)?;
                let mut any = Vec::new();
                for l in set {
                    let Literal::Str(mut dir) = l else { continue };
                    while dir.len() > 1 && dir.ends_with(b"/") {
                        dir.pop();
                    }
                    any.push(cmp(Op::Eq, Literal::Str(dir.clone())));
                    dir.push(b'/');
                    any.push(cmp(Op::StartsWith, Literal::Str(dir)));
                }
                return Ok(Expr::Or(any));
            }
            _ => {}
        }
        if ty != Type::Str {
            return perr(at, format!("operator `{word}` applies to strings"));
        }
        let v = self.next();
        let Literal::Str(bytes) = self.literal(&v, Type::Str, word)? else {
            unreachable!("a string field's literal is a string")
        };
        Ok(match op {
            Op::Regex => match regex::bytes::Regex::new(&String::from_utf8_lossy(&bytes)) {
                Ok(re) => cmp(Op::Regex, Literal::Regex(Pattern(re))),
                Err(e) => return perr(v.at, format!("bad regular expression: {e}")),
            },
            Op::IContains | Op::IGlob => cmp(op, Literal::Str(bytes.to_ascii_lowercase())),
            _ if word.starts_with('b') => cmp(op, Literal::Str(hex_bytes(&bytes, v.at)?)),
            _ => cmp(op, Literal::Str(bytes)),
        })
    }
}

/// The bytes of a `bcontains`/`bstartswith` operand written in hex.
fn hex_bytes(text: &[u8], at: usize) -> PResult<Vec<u8>> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let value = |d: u8| (d as char).to_digit(16);
    if !digits.len().is_multiple_of(2) {
        return perr(at, "a byte string is an even number of hex digits");
    }
    digits
        .chunks(2)
        .map(|p| match (value(p[0]), value(p[1])) {
            (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
            _ => perr(at, "a byte string is written in hex digits"),
        })
        .collect()
}
