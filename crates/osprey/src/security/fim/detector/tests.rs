use super::*;

fn state(sha: &str, size: u64, mode: u32, ino: u64) -> FileState {
    FileState {
        kind: FileKind::File,
        sha256: Some(sha.to_string()),
        mode,
        uid: 0,
        gid: 0,
        size,
        mtime_ns: 1,
        dev: 1,
        ino,
    }
}

fn ops(list: &[Op]) -> BTreeSet<Op> {
    list.iter().copied().collect()
}

#[test]
fn one_verdict_per_settled_change() {
    let a = state("aa", 3, 0o644, 7);
    let b = state("bb", 9, 0o644, 7);
    let empty = state("e3", 0, 0o644, 7);
    let other_inode = state("cc", 3, 0o644, 8);
    let chmodded = state("aa", 3, 0o4755, 7);
    let cases = [
        (
            ops(&[Op::OpenWrite, Op::Write]),
            Some(&a),
            Some(&b),
            Some(Verdict::Modify),
        ),
        (
            ops(&[Op::OpenTruncate, Op::Write]),
            Some(&a),
            Some(&b),
            Some(Verdict::Modify),
        ),
        (
            ops(&[Op::OpenWrite, Op::Truncate]),
            Some(&a),
            Some(&empty),
            Some(Verdict::Truncate),
        ),
        (
            ops(&[Op::OpenTruncate]),
            Some(&a),
            Some(&empty),
            Some(Verdict::Truncate),
        ),
        (ops(&[Op::Unlink]), Some(&a), None, Some(Verdict::Delete)),
        (
            ops(&[Op::RenameAway]),
            Some(&a),
            None,
            Some(Verdict::Rename),
        ),
        (
            ops(&[Op::RenameOnto]),
            Some(&a),
            Some(&other_inode),
            Some(Verdict::Rename),
        ),
        (
            ops(&[Op::Chmod]),
            Some(&a),
            Some(&chmodded),
            Some(Verdict::Chmod),
        ),
        (ops(&[Op::Chown]), Some(&a), Some(&a), Some(Verdict::Chown)),
        (
            ops(&[Op::Create, Op::Write]),
            None,
            Some(&a),
            Some(Verdict::Create),
        ),
        (
            ops(&[Op::OpenWrite]),
            Some(&a),
            Some(&a),
            Some(Verdict::OpenWrite),
        ),
        // A temporary file renamed on before it settled: the destination reports it.
        (ops(&[Op::Create, Op::RenameAway]), None, None, None),
        (ops(&[Op::Unlink]), None, None, None),
    ];
    for (ops, before, after, want) in cases {
        assert_eq!(classify(&ops, before, after), want, "{ops:?}");
    }
}

#[test]
fn strongest_operation_sorts_last() {
    assert!(Op::Unlink > Op::Write && Op::Write > Op::OpenWrite && Op::RenameAway > Op::Create);
    for v in Verdict::ALL {
        assert!(v.rule().starts_with("fim."));
        assert!(!v.tags().is_empty());
    }
}
