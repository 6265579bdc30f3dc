//! Having an integration test makes `cargo test --workspace` build the `osprey-workload` binary
//! into `target/<profile>/`, where every other crate's tests find it ([`osprey_workload::binary`]).
//! Without it a clean checkout's tests would find no workload.

#[test]
fn the_workload_binary_is_built_where_other_crates_tests_look_for_it() {
    let built = std::path::Path::new(env!("CARGO_BIN_EXE_osprey-workload"));
    assert!(built.is_file(), "{} was not built", built.display());
    let out = std::process::Command::new(built)
        .args(["bench-getppid", "10"])
        .output()
        .expect("run osprey-workload");
    assert!(out.status.success(), "{out:?}");
    let per_call: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ns per call");
    assert!(per_call > 0.0);
}
