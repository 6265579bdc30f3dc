//! The capability registry: every capability declared once, with what each part of Osprey
//! needs to know about it. `osprey check` probes the entries that say so, `osprey top`
//! recognises programs by the hooks of every entry, and the agent loads an entry's spec
//! when the module it names is enabled. Adding a capability is one entry here (and its
//! module under `agent/modules.rs` if the agent runs it).

use crate::kernel::loader::CapabilitySpec;
use crate::{agent, files, memory, net, process, profile, security, syscalls};

/// What `osprey check` does with a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Not probed on its own (another entry's probe covers it).
    No,
    /// Loaded without attaching, to report the hook each role would use.
    Load,
    /// As `Load`, with a note for the reader.
    LoadWithNote(&'static str),
    /// Network hooks attach per interface: tried on this one, with a note for the reader.
    OnInterface {
        interface: &'static str,
        note: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Capability {
    /// Its programs, roles and hooks (the spec's name is the capability's name).
    pub spec: CapabilitySpec,
    /// What it observes or does, in a few words.
    pub display: &'static str,
    pub probe: Probe,
    /// The agent module that loads it; none: the agent does not.
    pub agent: Option<AgentModule>,
}

/// The agent module that loads a capability, and that module's defaults (what a
/// `[modules.NAME]` section leaves unsaid).
#[derive(Debug, Clone, Copy)]
pub struct AgentModule {
    pub module: &'static str,
    pub enabled: bool,
    /// Events per second per process (kernel token bucket); 0: unlimited.
    pub rate_limit: u64,
    /// Ring buffer size in MiB; 0: the capability's default.
    pub ring_mib: u32,
}

impl AgentModule {
    const fn on(module: &'static str, ring_mib: u32) -> Option<Self> {
        Some(Self {
            module,
            enabled: true,
            rate_limit: 0,
            ring_mib,
        })
    }
}

/// Every capability, in the order `osprey check` reports them.
pub const REGISTRY: &[Capability] = &[
    Capability {
        spec: process::SPEC,
        display: "process lifecycle",
        probe: Probe::Load,
        agent: AgentModule::on("process", 2),
    },
    Capability {
        spec: files::SPEC,
        display: "file opens",
        probe: Probe::LoadWithNote(
            "as the agent and `osprey secure` attach it; `osprey files` tries tp_btf/sys_exit and raw_tp/sys_exit before per-syscall tracepoints: cheaper per open",
        ),
        // Every open on a busy host is a lot of log: off unless asked, then limited per
        // process. (The security module sees the opens its rules name either way.)
        agent: Some(AgentModule {
            module: "files",
            enabled: false,
            rate_limit: 200,
            ring_mib: 4,
        }),
    },
    Capability {
        spec: memory::SPEC,
        display: "page faults",
        probe: Probe::Load,
        agent: None,
    },
    Capability {
        spec: profile::SPEC,
        display: "CPU profile",
        probe: Probe::Load,
        agent: AgentModule::on("profile", 0),
    },
    Capability {
        spec: syscalls::SPEC,
        display: "system calls",
        probe: Probe::Load,
        agent: None,
    },
    Capability {
        spec: security::SPEC,
        display: "security events",
        probe: Probe::Load,
        // Security events and the rules' prefiltered opens are rare: 1 MiB each.
        agent: AgentModule::on("security", 1),
    },
    Capability {
        spec: agent::security::OPENS_SPEC,
        display: "file opens for rules",
        probe: Probe::No,
        agent: AgentModule::on("security", 1),
    },
    Capability {
        spec: security::lsm::SPEC,
        display: "LSM enforcement",
        probe: Probe::No,
        agent: None,
    },
    Capability {
        spec: security::connect_deny::SPEC,
        display: "connect enforcement",
        probe: Probe::Load,
        agent: None,
    },
    Capability {
        spec: net::tcp::SPEC,
        display: "TCP connections",
        probe: Probe::Load,
        // Connection events are small and few: 1 MiB holds about 10k of them. Every MiB of
        // ring is 2 MiB of the agent's RSS (the kernel maps the data twice).
        agent: AgentModule::on("tcp", 1),
    },
    Capability {
        spec: net::flows::SPEC,
        display: "network flows",
        probe: Probe::OnInterface {
            interface: "lo",
            note: "probed on lo, which has no native XDP; `osprey flows` tries native XDP first on each interface (driver support), then generic",
        },
        agent: AgentModule::on("flows", 0),
    },
];

/// The kernel keeps BPF_OBJ_NAME_LEN - 1 bytes of a program's name.
const KERNEL_NAME_LEN: usize = 15;

/// The capability a loaded program belongs to, by the name the kernel reports for it.
pub fn by_program(kernel_name: &str) -> Option<&'static Capability> {
    REGISTRY.iter().find(|c| {
        c.spec.roles.iter().flat_map(|role| role.hooks).any(|hook| {
            let declared = hook.program.as_bytes();
            &declared[..declared.len().min(KERNEL_NAME_LEN)] == kernel_name.as_bytes()
        })
    })
}

/// The names among `names` that are no program of any capability (an OSPREY_DENY_PROGRAMS
/// entry that names none is a typo).
pub fn unknown_programs<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    names
        .into_iter()
        .map(String::as_str)
        .filter(|name| {
            !REGISTRY
                .iter()
                .flat_map(|c| c.spec.roles)
                .flat_map(|role| role.hooks)
                .any(|hook| hook.program == *name)
        })
        .collect()
}

/// The names of the capabilities an agent module loads, in registry order.
pub fn of_module(module: &str) -> impl Iterator<Item = &'static str> + '_ {
    REGISTRY
        .iter()
        .filter(move |c| c.agent.is_some_and(|a| a.module == module))
        .map(|c| c.spec.name)
}

/// The agent module that loads a capability.
pub fn module_of(capability: &str) -> Option<&'static str> {
    let entry = REGISTRY.iter().find(|c| c.spec.name == capability)?;
    entry.agent.map(|a| a.module)
}

/// An agent module's defaults (from its first capability).
///
/// Panics on a name no entry gives: module names are compile-time constants.
pub fn module_defaults(module: &str) -> AgentModule {
    REGISTRY
        .iter()
        .find_map(|c| c.agent.filter(|a| a.module == module))
        .unwrap_or_else(|| panic!("no capability of agent module {module} in the registry"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_on_the_kernels_15_byte_prefix() {
        let name = |n: &str| by_program(n).map(|c| c.spec.name);
        assert_eq!(name("files_open_btf"), Some("files"));
        let long = files::SPEC.roles[0].hooks[0].program;
        if long.len() > KERNEL_NAME_LEN {
            assert_eq!(name(&long[..KERNEL_NAME_LEN]), Some("files"));
        }
        assert_eq!(name("files_open_bt"), None);
        assert_eq!(name("sd_fw_ingress"), None);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|c| c.spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
    }

    #[test]
    fn every_agent_module_has_capabilities_and_defaults() {
        for m in crate::agent::modules::MODULES {
            assert!(of_module(m.name()).next().is_some(), "{}", m.name());
            assert_eq!(module_defaults(m.name()).module, m.name());
        }
    }

    #[test]
    fn security_module_loads_its_opens() {
        let names: Vec<&str> = of_module("security").collect();
        assert_eq!(names, ["security", "security-opens"]);
    }

    /// The syscall numbers (`NR_NAME` constants, as names) a C function of bpf/ mentions.
    fn c_syscalls(file: &str, function: &str) -> std::collections::BTreeSet<String> {
        let path = format!("{}/../../bpf/{file}", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let start = source
            .find(&format!(" {function}("))
            .unwrap_or_else(|| panic!("{function} not in {file}"));
        let body = &source[start..];
        let body = &body[..body.find("\n}\n").expect("end of the function")];
        let nr = regex::Regex::new(r"\bNR_([A-Z0-9_]+)").unwrap();
        nr.captures_iter(body)
            .map(|c| c[1].to_ascii_lowercase())
            .collect()
    }

    /// Every per-syscall role's list is exactly the syscalls its C handler acts on: a
    /// syscall added on one side only would be missed (or attached for nothing).
    #[test]
    fn per_syscall_lists_match_the_c_handlers() {
        let handlers = [
            ("files", "open-exit", "files.bpf.c", "on_open_exit"),
            ("security-opens", "open-exit", "files.bpf.c", "on_open_exit"),
            ("process", "exec-failed", "process.bpf.c", "on_exec_exit"),
            ("tcp", "accept-owner", "tcp.bpf.c", "on_accept_exit"),
            (
                "security",
                security::SYSCALL_EXIT,
                "security.bpf.c",
                "layout_of",
            ),
            (
                "security",
                security::SETID_ENTER,
                "security.bpf.c",
                "changes_uids",
            ),
        ];
        let mut checked = 0;
        for cap in REGISTRY {
            for role in cap.spec.roles {
                let Some((list, _)) = role.syscall_hook() else {
                    continue;
                };
                let (_, _, file, function) = handlers
                    .iter()
                    .find(|h| h.0 == cap.spec.name && h.1 == role.name)
                    .unwrap_or_else(|| {
                        panic!("{}/{}: add its handler here", cap.spec.name, role.name)
                    });
                let rust: std::collections::BTreeSet<String> =
                    list.iter().map(|s| s.to_string()).collect();
                assert_eq!(
                    rust,
                    c_syscalls(file, function),
                    "{}/{}",
                    cap.spec.name,
                    role.name
                );
                for name in list {
                    assert!(crate::syscalls::syscall_number(name).is_some(), "{name}");
                }
                checked += 1;
            }
        }
        assert!(checked >= handlers.len(), "{checked} roles checked");
        let fim: std::collections::BTreeSet<String> = security::fim::kernel::SYSCALLS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(fim, c_syscalls("include/fim.h", "fim_call_of"));
    }
}
