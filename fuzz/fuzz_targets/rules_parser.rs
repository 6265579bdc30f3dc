//! The rules loader must never panic or exhaust the stack, whatever the file says: it returns
//! rules or errors with positions inside the input. Besides the raw bytes, each input also
//! drives a generated file whose nesting (brackets, `not`, macro chains, YAML levels) and
//! size (expanded macros, list length) go far past the loader's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use osprey::security::rules::{self, limits};

fn check(name: &str, text: &str) {
    if let Err(errors) = rules::load(&[(name, text)]) {
        let lines = text.lines().count().max(1) + 1;
        for e in errors.0 {
            assert!(e.pos.line <= lines, "{e} beyond {lines} lines");
        }
    }
}

/// A file shaped by the first bytes: which construct nests and how deep or large it gets.
fn generated(data: &[u8]) -> Option<String> {
    let (&shape, rest) = data.split_first()?;
    let n = rest
        .iter()
        .take(3)
        .fold(0usize, |n, &b| n << 8 | usize::from(b))
        % (limits::MAX_NESTING * 300);
    let rule = |condition: &str| {
        format!("- rule: g\n  desc: d\n  severity: low\n  condition: \"{condition}\"\n")
    };
    Some(match shape % 6 {
        0 => rule(&format!("{}evt.kind = open{}", "(".repeat(n), ")".repeat(n))),
        1 => rule(&format!("{}evt.kind = open", "not ".repeat(n))),
        2 => (0..n)
            .map(|i| format!("- macro: m{i}\n  condition: m{}\n", i + 1))
            .chain([format!("- macro: m{n}\n  condition: proc.name = a\n")])
            .collect(),
        3 => (1..n.min(64))
            .map(|i| format!("- macro: m{i}\n  condition: m{0} or m{0}\n", i - 1))
            .chain(["- macro: m0\n  condition: proc.name = a\n".to_string()])
            .collect(),
        4 => format!("{}x\n", "- ".repeat(n)),
        _ => format!("- list: l\n  items: [{}]\n", vec!["a"; n * 4].join(", ")),
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(text) = generated(data) {
        check("generated.yaml", &text);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check("fuzz.yaml", text);
    // Conditions alone, with the default lists and macros in scope.
    let wrapped = format!("- rule: f\n  desc: d\n  severity: low\n  condition: {text:?}\n");
    let _ = rules::load(&[
        (rules::DEFAULT_RULES_NAME, rules::DEFAULT_RULES),
        ("fuzz.yaml", &wrapped),
    ]);
});
