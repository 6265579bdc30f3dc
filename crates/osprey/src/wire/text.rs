//! Byte strings from the kernel (paths, argv, comm) are not guaranteed UTF-8 or printable.
//! Tables get an escaped, unambiguous rendering; JSON gets the text plus, when the bytes are
//! not valid UTF-8, a lossless base64 copy (see docs/events.md).

use base64::Engine;

/// Escapes for a terminal: printable text as is; `\\`, `\n`, `\t`, `\r`, `\e`; other control
/// characters and invalid UTF-8 bytes as `\xNN`; C1 controls and the Unicode bidirectional
/// controls (which reorder what follows them on screen) as `\u{..}`.
pub fn escape_for_terminal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\x1b' => out.push_str("\\e"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if ('\u{80}'..='\u{9f}').contains(&c) || is_bidi_control(c) => {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Escapes text for XML/SVG character data and attribute values; characters XML 1.0
/// forbids become U+FFFD.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Unicode bidirectional formatting characters (ALM, LRM, RLM, LRE..RLO, LRI..PDI).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One argument of a command line for a table: escaped as [`escape_for_terminal`], and
/// single-quoted (shell style) when empty or holding spaces, quotes or shell syntax, so
/// that `"sp ace"` reads as one argument.
pub fn quote_arg_for_terminal(arg: &[u8]) -> String {
    let escaped = escape_for_terminal(arg);
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        escaped
    } else {
        format!("'{}'", escaped.replace('\'', "'\\''"))
    }
}

/// Text for JSON: the string when valid UTF-8 (serde escapes controls), else a lossy
/// string plus the exact bytes in base64.
pub fn json_text(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (std::borrow::Cow::Borrowed(s), None),
        Err(_) => (
            String::from_utf8_lossy(bytes),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// Writes `name` (and `name_b64` when needed) into a JSON map being serialized.
pub fn write_bytes_field<M: serde::ser::SerializeMap>(
    map: &mut M,
    name: &'static str,
    b64_name: &'static str,
    bytes: &[u8],
) -> Result<(), M::Error> {
    let (text, b64) = json_text(bytes);
    map.serialize_entry(name, &text)?;
    if let Some(b64) = b64 {
        map.serialize_entry(b64_name, &b64)?;
    }
    Ok(())
}

/// The bytes before the first NUL.
pub fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or(&[])
}

/// Joins leaf-first NUL-terminated path components into an absolute path.
pub fn join_components_leaf_first(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    for part in data.rsplit(|&b| b == 0).filter(|p| !p.is_empty()) {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Lexically joins a relative path onto an absolute base, folding `.` and `..` of the
/// relative path (the base's components are taken as they are). One allocation: every
/// component is appended as `/name`, and `..` cuts back to the previous `/`.
pub fn join_lexically(base: &[u8], relative: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + relative.len() + 2);
    let push = |out: &mut Vec<u8>, part: &[u8]| {
        out.push(b'/');
        out.extend_from_slice(part);
    };
    for part in base.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        push(&mut out, part);
    }
    for part in relative.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                let last = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(last);
            }
            p => push(&mut out, p),
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_invalid_bytes() {
        assert_eq!(
            escape_for_terminal(b"a\nb\x1b[31mc\xffd\\"),
            "a\\nb\\e[31mc\\xffd\\\\"
        );
        assert_eq!(escape_for_terminal("é".as_bytes()), "é");
        assert_eq!(escape_for_terminal("\u{85}".as_bytes()), "\\u{85}");
    }

    #[test]
    fn escapes_bidirectional_controls() {
        assert_eq!(
            escape_for_terminal("evil\u{202e}gnp.exe".as_bytes()),
            "evil\\u{202e}gnp.exe"
        );
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{2066}', '\u{2069}',
        ] {
            let shown = escape_for_terminal(c.to_string().as_bytes());
            assert_eq!(shown, format!("\\u{{{:x}}}", c as u32));
        }
    }

    #[test]
    fn arguments_that_need_it_are_quoted() {
        assert_eq!(quote_arg_for_terminal(b"--flag=a/b.c"), "--flag=a/b.c");
        assert_eq!(quote_arg_for_terminal("é".as_bytes()), "é");
        assert_eq!(quote_arg_for_terminal(b"sp ace"), "'sp ace'");
        assert_eq!(quote_arg_for_terminal(b""), "''");
        assert_eq!(quote_arg_for_terminal(b"it's"), "'it'\\''s'");
        assert_eq!(quote_arg_for_terminal(b"a\nb"), "'a\\nb'");
    }

    #[test]
    fn json_text_is_lossless_for_invalid_utf8() {
        let (text, b64) = json_text(b"ok");
        assert_eq!(text, "ok");
        assert!(b64.is_none());
        let (_, b64) = json_text(b"\xff\xfe");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.unwrap())
            .unwrap();
        assert_eq!(decoded, b"\xff\xfe");
    }

    #[test]
    fn joins_components_and_relative_paths() {
        assert_eq!(join_components_leaf_first(b"c\0b\0a\0"), b"/a/b/c");
        assert_eq!(join_components_leaf_first(b""), b"/");
        assert_eq!(join_lexically(b"/a/b", b"../c/./d"), b"/a/c/d");
        assert_eq!(join_lexically(b"/", b"../../x"), b"/x");
        assert_eq!(join_lexically(b"/a/../b", b".."), b"/a/..");
        assert_eq!(join_lexically(b"/a", b"../.."), b"/");
        assert_eq!(join_lexically(b"//a//", b"b//c/"), b"/a/b/c");
        assert_eq!(join_components_leaf_first(b"\0c\0\0b\0a"), b"/a/b/c");
    }
}
