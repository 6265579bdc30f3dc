//! Runtime security (`osprey secure`, the agent's security module): security-relevant
//! syscall events, the rules engine, the detect stage that turns matching events into
//! alerts, and enforcement; `session` puts them together once for both users.

pub mod baseline;
pub mod classes;
pub mod connect_deny;
pub mod detect;
pub mod enforce;
mod enforce_object;
pub mod facts;
pub mod fim;
pub mod kernel_maps;
pub mod kill;
pub mod lsm;
pub mod rules;
pub mod session;
pub mod state;
pub mod syscall;

use crate::abi::kind;
use crate::kernel::loader::{CapabilitySpec, Role};

/// The security object's sys_enter role: the uids before the setid-family calls that can
/// change them, and what syscall baselines need.
pub const SETID_ENTER: &str = "setid-enter";

/// The security object's sys_exit role: one event per security-relevant syscall (and FIM).
pub const SYSCALL_EXIT: &str = "syscall-exit";

/// Syscalls `syscall-exit` handles: those of `syscall::SYSCALLS` (layout_of in
/// bpf/security.bpf.c), plus FIM's when it is on.
pub const EXIT_SYSCALLS: &[&str] = &syscall::SYSCALL_NAMES;

/// Syscalls whose entry `setid-enter` handles (changes_uids in bpf/security.bpf.c): few
/// enough for per-syscall tracepoints, so that no other syscall runs it. The other setid
/// calls leave the real and effective uid as they were. With baselines, every syscall.
pub const SETID_SYSCALLS: &[&str] = &["setuid", "setreuid", "setresuid"];

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "security",
    object: osprey_bpf::SECURITY,
    roles: &[
        Role {
            name: SYSCALL_EXIT,
            required: true,
            hooks: crate::sys_exit_hooks!("security_exit", EXIT_SYSCALLS),
        },
        // Without it setuid, setreuid and setresuid events still arrive, but their ids from
        // before the call are unknown.
        Role {
            name: SETID_ENTER,
            required: false,
            hooks: crate::sys_enter_hooks!("security_enter", SETID_SYSCALLS),
        },
    ],
    kinds: &[
        (kind::SEC_SYSCALL, "security"),
        (kind::BASELINE, "baseline"),
        (kind::FIM, "fim"),
    ],
    default_ring_bytes: 8 << 20,
};
