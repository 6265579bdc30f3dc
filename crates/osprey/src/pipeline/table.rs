//! Aligned text tables whose columns grow to fit their widest cell, so that a long value
//! (`syscall-enter`, `ENAMETOOLONG`, a large average) never pushes the columns after it
//! out of line. Cells are given already escaped.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Renders `header` and `rows` with one space between columns; the last column is not
/// padded. Widths count characters.
pub fn render(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let titles: Vec<String> = header.iter().map(|(h, _)| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&titles).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let (width, align) = (widths[i], header[i].1);
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            if i > 0 {
                line.push(' ');
            }
            match align {
                Align::Right => {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_grow_to_their_widest_cell() {
        let text = render(
            &[
                ("ROLE", Align::Left),
                ("AVG", Align::Right),
                ("NOTE", Align::Left),
            ],
            &[
                vec!["syscall-enter".into(), "1".into(), "x".into()],
                vec!["exec".into(), "123456789.123".into(), "y".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ROLE                    AVG NOTE");
        assert_eq!(lines[1], "syscall-enter             1 x");
        assert_eq!(lines[2], "exec          123456789.123 y");
    }
}
