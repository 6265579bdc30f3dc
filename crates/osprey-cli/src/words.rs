//! Figures for people rather than programs.

/// The non-zero counters of a JSON object in words: `none`, or
/// `ring dropped 3, user stack faults 1` (for loss counters in table mode).
pub fn counters_text(counters: &serde_json::Value) -> String {
    let parts: Vec<String> = counters
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
        .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::counters_text;

    #[test]
    fn counters_read_as_words_not_json() {
        assert_eq!(
            counters_text(&serde_json::json!({"ring_dropped": 0})),
            "none"
        );
        assert_eq!(
            counters_text(&serde_json::json!({"ring_dropped": 3, "user_stack_faults": 1, "x": 0})),
            "ring dropped 3, user stack faults 1"
        );
    }
}
