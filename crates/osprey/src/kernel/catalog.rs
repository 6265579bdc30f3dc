//! Every capability Osprey can load, for checks that must know all program names (an
//! OSPREY_DENY_PROGRAMS entry that names none of them is a typo).

use super::loader::CapabilitySpec;
use crate::{agent, files, memory, net, process, profile, security, syscalls};

/// The capabilities `osprey check` reports on, in its order.
pub const CHECKED: &[CapabilitySpec] = &[
    process::SPEC,
    files::SPEC,
    memory::SPEC,
    profile::SPEC,
    syscalls::SPEC,
    security::SPEC,
    security::connect_deny::SPEC,
    net::tcp::SPEC,
    net::flows::SPEC,
];

/// The others: the LSM enforcement object, and the files object the security module loads
/// under a name of its own.
const OTHERS: &[CapabilitySpec] = &[security::lsm::SPEC, agent::security::OPENS_SPEC];

/// Every capability spec, each once.
pub fn all() -> impl Iterator<Item = &'static CapabilitySpec> {
    CHECKED.iter().chain(OTHERS)
}

/// The names among `names` that are no program of any capability.
pub fn unknown_programs<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    names
        .into_iter()
        .map(String::as_str)
        .filter(|name| {
            !all()
                .flat_map(|spec| spec.roles)
                .flat_map(|role| role.hooks)
                .any(|hook| hook.program == *name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_no_program_are_unknown() {
        let names = [
            "files_open_fexit".to_string(),
            "files_opne_fexit".to_string(),
        ];
        assert_eq!(unknown_programs(&names), ["files_opne_fexit"]);
    }
}
