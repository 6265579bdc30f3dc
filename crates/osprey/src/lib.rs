//! Osprey: eBPF performance monitoring and runtime security.
//!
//! `kernel` loads and attaches BPF objects (hooks probed at run time); `pipeline` turns ring
//! buffer records into enriched events and writes them to sinks; each capability (`files`,
//! `process`) declares its hooks, decodes its records and describes how to present them.

pub mod agent;
pub mod capabilities;
pub mod check;
pub mod container;
pub mod files;
pub mod kernel;
pub mod memory;
pub mod net;
pub mod pipeline;
pub mod process;
pub mod profile;
pub mod security;
pub mod state_dir;
pub mod syscalls;
pub mod top;
pub mod wire;

pub use osprey_bpf::abi;
