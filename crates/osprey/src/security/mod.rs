//! Runtime security (`osprey secure`): security-relevant syscall events, the rules engine,
//! the detect stage that turns matching events into alerts, and enforcement.

pub mod baseline;
pub mod connect_deny;
pub mod detect;
pub mod enforce;
pub mod fim;
pub mod kernel_maps;
pub mod lsm;
pub mod rules;
pub mod state;
pub mod syscall;

use crate::abi::kind;
use crate::kernel::loader::{CapabilitySpec, Role};

pub const SPEC: CapabilitySpec = CapabilitySpec {
    name: "security",
    object: osprey_bpf::SECURITY,
    roles: &[
        Role {
            name: "syscall-exit",
            required: true,
            hooks: crate::sys_exit_hooks!("security_exit"),
        },
        // Without it setid events still arrive, but without the ids from before the call.
        Role {
            name: "setid-enter",
            required: false,
            hooks: crate::sys_enter_hooks!("security_enter"),
        },
    ],
    kinds: &[
        (kind::SEC_SYSCALL, "security"),
        (kind::BASELINE, "baseline"),
        (kind::FIM, "fim"),
    ],
    default_ring_bytes: 8 << 20,
};
