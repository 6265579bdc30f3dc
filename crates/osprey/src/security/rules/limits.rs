//! Bounds on what rule files may ask of the loader, so that hostile or generated input is
//! refused with a located error instead of exhausting the stack or memory. The parser and
//! evaluator recurse once per nesting level, so the nesting bound also bounds their stack.

/// Largest rule file read, in bytes (the embedded defaults are a small fraction of it).
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Deepest nesting of YAML sequences and mappings in a rule file.
pub const MAX_YAML_DEPTH: usize = 32;
/// Deepest nesting of a condition: brackets and `not`, counting the macros it uses, and
/// the longest chain of macros that refer to one another.
pub const MAX_NESTING: usize = 100;
/// Most comparisons, operators and set items in one condition after macros and lists are
/// expanded (a macro used twice counts twice).
pub const MAX_CONDITION_NODES: usize = 100_000;
/// Most items in one `list`.
pub const MAX_LIST_ITEMS: usize = 100_000;
