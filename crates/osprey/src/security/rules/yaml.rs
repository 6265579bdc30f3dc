//! A YAML tree whose every node remembers where it came from, so rule errors can point at
//! the offending token (yaml-rust2's own tree forgets positions).

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::limits::MAX_YAML_DEPTH;

/// 1-based line and column in the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar {
        text: String,
        style: TScalarStyle,
        pos: Pos,
        /// Byte offset of the scalar's first character in the source.
        offset: usize,
    },
    Seq(Vec<Node>, Pos),
    Map(Vec<(Node, Node)>, Pos),
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq(_, pos) | Node::Map(_, pos) => *pos,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    keys: Vec<Option<Node>>,
    docs: Vec<Node>,
    /// Char index → byte offset (yaml-rust2 markers count chars).
    char_to_byte: Vec<usize>,
    /// Where a collection opened beyond [`MAX_YAML_DEPTH`] (parsing stops there).
    too_deep_at: Option<Pos>,
}

impl Builder {
    fn pos(&self, m: &Marker) -> (Pos, usize) {
        let byte = self
            .char_to_byte
            .get(m.index())
            .copied()
            .unwrap_or_else(|| self.char_to_byte.last().copied().unwrap_or(0));
        (
            Pos {
                line: m.line(),
                col: m.col() + 1,
            },
            byte,
        )
    }

    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Node::Seq(items, _)) => items.push(node),
            Some(Node::Map(entries, _)) => {
                let slot = self.keys.last_mut().expect("key slot per open map");
                match slot.take() {
                    None => *slot = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
            Some(Node::Scalar { .. }) => unreachable!("scalars are never open"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let (pos, offset) = self.pos(&mark);
        let opens = matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..));
        if opens && self.stack.len() >= MAX_YAML_DEPTH {
            self.too_deep_at = Some(pos);
            return;
        }
        match ev {
            Event::Scalar(text, style, _, _) => self.push_value(Node::Scalar {
                text,
                style,
                pos,
                offset,
            }),
            Event::SequenceStart(..) => self.stack.push(Node::Seq(Vec::new(), pos)),
            Event::MappingStart(..) => {
                self.stack.push(Node::Map(Vec::new(), pos));
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(node) = self.stack.pop() {
                    if matches!(node, Node::Map(..)) {
                        self.keys.pop();
                    }
                    self.push_value(node);
                }
            }
            // Aliases are not supported: they would hide where a value was written.
            Event::Alias(_) => self.push_value(Node::Scalar {
                text: String::new(),
                style: TScalarStyle::Plain,
                pos,
                offset,
            }),
            _ => {}
        }
    }
}

/// Parses the first document; `Err((pos, message))` on a YAML syntax error.
pub fn parse(source: &str) -> Result<Option<Node>, (Pos, String)> {
    let mut builder = Builder {
        char_to_byte: source
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(source.len()))
            .collect(),
        ..Default::default()
    };
    // Events are pulled one by one: yaml-rust2's own `load` recurses once per level.
    let mut parser = Parser::new_from_str(source);
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            let m = e.marker();
            (
                Pos {
                    line: m.line(),
                    col: m.col() + 1,
                },
                e.info().to_string(),
            )
        })?;
        let done = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
        builder.on_event(ev, mark);
        if let Some(pos) = builder.too_deep_at {
            return Err((pos, format!("nested deeper than {MAX_YAML_DEPTH} levels")));
        }
        if done {
            break;
        }
    }
    Ok(builder.docs.into_iter().next())
}

/// Where byte `offset` of a scalar's value lies in the source. Values of quoted and block
/// scalars differ from their source text (quotes, indentation, folded lines), so the value
/// is aligned to the source character by character, skipping what YAML removed.
pub fn locate_in_scalar(source: &str, node: &Node, offset: usize) -> Pos {
    let Node::Scalar {
        text,
        style,
        offset: start,
        pos,
    } = node
    else {
        return node.pos();
    };
    let mut src = source.get(*start..).unwrap_or("").char_indices().peekable();
    // Quoted scalars are marked at the quote; block scalars at their first content line.
    if matches!(
        style,
        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
    ) {
        src.next();
    }
    let mut at = 0usize; // byte index into source after `start`
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            continue;
        }
        // Advance the source to the next occurrence of this character.
        for (j, s) in src.by_ref() {
            if s == c {
                at = j;
                break;
            }
        }
        if i >= offset {
            return position_of(source, start + at).unwrap_or(*pos);
        }
    }
    position_of(source, start + at).unwrap_or(*pos)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn position_of(source: &str, byte: usize) -> Option<Pos> {
    let before = source.get(..byte)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(Pos {
        line,
        col: source[line_start..byte].chars().count() + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_at(node: &Node, path: &[&str]) -> Node {
        let mut n = node.clone();
        for key in path {
            let Node::Map(entries, _) = n else { panic!() };
            n = entries
                .into_iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .unwrap()
                .1;
        }
        n
    }

    #[test]
    fn positions_of_plain_quoted_and_block_scalars() {
        let src = "a: x = 1\nb: \"y = 2\"\nc: |\n  first\n  zz = 3\nd: >\n  k\n  qq\n";
        let doc = parse(src).unwrap().unwrap();
        let a = scalar_at(&doc, &["a"]);
        assert_eq!(a.pos(), Pos { line: 1, col: 4 });
        assert_eq!(locate_in_scalar(src, &a, 4), Pos { line: 1, col: 8 });
        let b = scalar_at(&doc, &["b"]);
        assert_eq!(locate_in_scalar(src, &b, 4), Pos { line: 2, col: 9 });
        let c = scalar_at(&doc, &["c"]);
        assert_eq!(c.as_str(), Some("first\nzz = 3\n"));
        assert_eq!(locate_in_scalar(src, &c, 6), Pos { line: 5, col: 3 });
        let d = scalar_at(&doc, &["d"]);
        assert_eq!(d.as_str(), Some("k qq\n"));
        assert_eq!(locate_in_scalar(src, &d, 2), Pos { line: 8, col: 3 });
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (pos, _) = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(pos.line >= 2, "{pos:?}");
    }
}
