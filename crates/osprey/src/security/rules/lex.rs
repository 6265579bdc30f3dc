//! The condition language's lexer: words, quoted strings, operators and brackets, each
//! with its byte offset in the condition.

use super::expr::{err, ExprError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    LParen,
    RParen,
    Comma,
    Op(&'static str),
    Word(String),
    Quoted(String),
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    pub at: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || "_.:/-*?~+@[]%{}$#^\\".contains(c)
}

pub(super) fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let mut out = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        let single = |t| Token { tok: t, at: i };
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(single(match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Comma,
                }));
            }
            '=' => {
                chars.next();
                out.push(single(Tok::Op("=")));
            }
            '!' | '<' | '>' => {
                chars.next();
                if chars.peek().map(|p| p.1) == Some('=') {
                    chars.next();
                    out.push(single(Tok::Op(match c {
                        '!' => "!=",
                        '<' => "<=",
                        _ => ">=",
                    })));
                } else if c == '!' {
                    return err(i, "`!` must be followed by `=` (use `not` for negation)");
                } else {
                    out.push(single(Tok::Op(if c == '<' { "<" } else { ">" })));
                }
            }
            '"' | '\'' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, d)) = chars.next() {
                    if d == c {
                        closed = true;
                        break;
                    }
                    if d == '\\' && c == '"' {
                        match chars.next() {
                            Some((_, e)) => text.push(e),
                            None => break,
                        }
                    } else {
                        text.push(d);
                    }
                }
                if !closed {
                    return err(i, "unterminated string");
                }
                out.push(single(Tok::Quoted(text)));
            }
            c if is_word_char(c) => {
                let mut word = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if !is_word_char(d) {
                        break;
                    }
                    word.push(d);
                    chars.next();
                }
                out.push(single(Tok::Word(word)));
            }
            other => return err(i, format!("unexpected character `{other}`")),
        }
    }
    out.push(Token {
        tok: Tok::End,
        at: src.len(),
    });
    Ok(out)
}
