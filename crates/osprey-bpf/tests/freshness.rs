//! The committed objects in `crates/osprey-bpf/objects` must be exactly what `make -C bpf`
//! builds from `bpf/*.bpf.c`. The rebuild needs clang-19 and llvm-strip-19 (plus make and
//! libbpf-dev); without them the test skips loudly, unless `CI` or `OSPREY_REQUIRE_BPF` is
//! set, where it fails.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const HINT: &str = "run `make -C bpf` and commit the objects";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bpf_dir() -> PathBuf {
    repo().join("bpf")
}

fn objects_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("objects")
}

/// Names `x` of the files `x<suffix>` directly in `dir`.
fn stems(dir: &Path, suffix: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading directory entry").file_name())
        .filter_map(|name| name.to_str()?.strip_suffix(suffix).map(str::to_owned))
        .collect()
}

fn sources() -> BTreeSet<String> {
    stems(&bpf_dir(), ".bpf.c")
}

fn committed() -> BTreeSet<String> {
    stems(&objects_dir(), ".bpf.o")
}

/// The second build of a source, `x.compat` for `x.bpf.c` (see bpf/Makefile).
const COMPAT: &str = ".compat";

/// The source each committed object is built from.
fn committed_sources() -> BTreeSet<String> {
    committed()
        .into_iter()
        .map(|name| {
            name.strip_suffix(COMPAT)
                .map_or(name.clone(), str::to_owned)
        })
        .collect()
}

fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn required() -> bool {
    ["CI", "OSPREY_REQUIRE_BPF"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

#[test]
fn every_source_has_a_committed_object() {
    let (sources, committed) = (sources(), committed_sources());
    assert!(!sources.is_empty(), "no *.bpf.c in {}", bpf_dir().display());
    let unbuilt: Vec<_> = sources.difference(&committed).collect();
    let orphaned: Vec<_> = committed.difference(&sources).collect();
    assert!(
        unbuilt.is_empty() && orphaned.is_empty(),
        "bpf/*.bpf.c and crates/osprey-bpf/objects/*.bpf.o differ: sources without an \
         object {unbuilt:?}, objects without a source {orphaned:?}; {HINT} (and delete \
         objects whose source is gone)"
    );
}

#[test]
fn every_committed_object_is_embedded() {
    let embedded: BTreeSet<String> = osprey_bpf::ALL
        .iter()
        .flat_map(|o| {
            let compat = o.compat.map(|_| format!("{}{COMPAT}", o.name));
            std::iter::once(o.name.to_owned()).chain(compat)
        })
        .collect();
    assert_eq!(
        embedded,
        committed(),
        "osprey_bpf::ALL must list every object in crates/osprey-bpf/objects"
    );
}

#[test]
fn committed_objects_match_a_fresh_build() {
    let missing: Vec<&str> = ["clang-19", "llvm-strip-19", "make"]
        .into_iter()
        .filter(|tool| !runs(tool))
        .collect();
    if !missing.is_empty() {
        assert!(
            !required(),
            "clang-19 required in CI for the freshness test: {missing:?} not on PATH \
             (apt-get install clang-19 llvm-19 libbpf-dev make)"
        );
        // Straight to the stderr handle: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPED committed_objects_match_a_fresh_build: {missing:?} not on PATH.\n\
             !! The committed BPF objects were NOT checked against bpf/*.bpf.c.\n\
             !! Install clang-19 llvm-19 libbpf-dev, or set OSPREY_REQUIRE_BPF=1 to fail.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }

    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bpf-freshness-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    assert!(
        !out.to_string_lossy().contains(char::is_whitespace),
        "make cannot take OUT={} (whitespace)",
        out.display()
    );

    // The Makefile's own flags and defaults (clang-19, llvm-strip-19): no overrides from
    // the environment, no jobserver or flags from an enclosing make.
    let build = Command::new("make")
        .arg("-C")
        .arg(bpf_dir())
        .arg(format!("OUT={}", out.display()))
        .env_remove("CLANG")
        .env_remove("STRIP")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("running make");
    assert!(
        build.status.success(),
        "`make -C bpf OUT={}` failed ({}):\n{}{}",
        out.display(),
        build.status,
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr),
    );

    let (built, committed) = (stems(&out, ".bpf.o"), committed());
    let mut problems = Vec::new();
    for name in &built {
        let file = format!("{name}.bpf.o");
        let fresh = fs::read(out.join(&file))
            .unwrap_or_else(|e| panic!("make did not produce {file}: {e}"));
        if !committed.contains(name) {
            problems.push(format!("{file}: not committed"));
            continue;
        }
        let old = fs::read(objects_dir().join(&file))
            .unwrap_or_else(|e| panic!("reading committed {file}: {e}"));
        if old != fresh {
            let first = old.iter().zip(&fresh).position(|(a, b)| a != b);
            problems.push(format!(
                "{file} differs from a fresh `make -C bpf` (committed {} bytes, \
                 fresh {} bytes, first difference at byte {})",
                old.len(),
                fresh.len(),
                first.map_or_else(|| old.len().min(fresh.len()).to_string(), |i| i.to_string()),
            ));
        }
    }
    for name in committed.difference(&built) {
        problems.push(format!(
            "{name}.bpf.o: committed but `make -C bpf` no longer builds it"
        ));
    }
    assert!(
        problems.is_empty(),
        "stale BPF objects in crates/osprey-bpf/objects: {HINT}.\n  {}\n(fresh build kept in {})",
        problems.join("\n  "),
        out.display()
    );
    let _ = fs::remove_dir_all(&out);
}
