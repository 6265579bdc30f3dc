//! File integrity monitoring (`osprey secure --watch PATH`).
//!
//! At start every watched file gets a baseline (SHA-256 and mode/uid/gid/size/mtime) in a
//! database kept in the state directory (`db`). Watched inodes, watched directories and the
//! watched roots as path prefixes go into kernel maps (`kernel`), so the security object's
//! sys_exit handler sends only calls that may touch them (`event`, bpf/include/fim.h). The
//! detector (`detector`) resolves their paths exactly, waits for each change to settle and
//! raises one alert per change with the before/after hashes and a metadata diff.

pub mod db;
pub mod detector;
pub mod event;
pub mod kernel;
