//! The rules loader must never panic, whatever the file says: it returns rules or errors
//! with positions inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match osprey::security::rules::load(&[("fuzz.yaml", text)]) {
        Ok(_) => {}
        Err(errors) => {
            let lines = text.lines().count().max(1) + 1;
            for e in errors.0 {
                assert!(e.pos.line <= lines, "{e} beyond {lines} lines");
            }
        }
    }
    // Conditions alone, with the default lists and macros in scope.
    let wrapped = format!("- rule: f\n  desc: d\n  severity: low\n  condition: {text:?}\n");
    let _ = osprey::security::rules::load(&[
        ("<default rules>", osprey::security::rules::DEFAULT_RULES),
        ("fuzz.yaml", &wrapped),
    ]);
});
