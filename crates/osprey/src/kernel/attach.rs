//! Attaching one role of a loaded object: each hook alternative in turn, the first that
//! loads and attaches wins, the others are recorded with their reason.

use aya::{
    programs::{
        perf_event::PerfEventScope,
        tc::{self, TcAttachOptions},
        BtfTracePoint, FEntry, FExit, KProbe, LinkOrder, PerfEvent, Program, RawTracePoint,
        SchedClassifier, TcAttachType, TracePoint, Xdp,
    },
    Ebpf,
};

use super::hooks::{
    Attach, Hook, PerfSampling, Role, SoftwarePerfEvent, SyscallSet, ATTACH_CONFLICT,
};
use super::loader::{LoadOptions, RoleOutcome};
use super::{describe_error, relocation_failure::describe_program_error};

pub(super) fn unload(ebpf: &mut Ebpf, program: &str) {
    // Unloading drops the program's links too; errors mean it was not loaded.
    let _ = match ebpf.program_mut(program) {
        Some(Program::BtfTracePoint(p)) => p.unload(),
        Some(Program::RawTracePoint(p)) => p.unload(),
        Some(Program::TracePoint(p)) => p.unload(),
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::Lsm(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::PerfEvent(p)) => p.unload(),
        Some(Program::Xdp(p)) => p.unload(),
        Some(Program::SchedClassifier(p)) => p.unload(),
        Some(Program::CgroupSockAddr(p)) => p.unload(),
        _ => Ok(()),
    };
}

pub(super) fn attach_role(
    ebpf: &mut Ebpf,
    role: &Role,
    options: &LoadOptions,
    btf: &aya::Btf,
    object: &[u8],
    added_qdiscs: &mut AddedClsact,
) -> RoleOutcome {
    let mut rejected = Vec::new();
    for hook in hooks_in_order(role, options.prefer_every_syscall_hook) {
        if options.denied_programs.contains(hook.program) {
            rejected.push((*hook, "denied by OSPREY_DENY_PROGRAMS".to_string()));
            continue;
        }
        let attached = match hook.attach {
            Attach::Xdp(_) | Attach::TcxEgress | Attach::TcClsactEgress => {
                attach_net_hook(ebpf, hook, options, added_qdiscs)
            }
            Attach::Syscalls { event, .. } => match options.syscalls_of(role) {
                Some((SyscallSet::Only(names), _)) if names.len() <= MAX_PER_SYSCALL => {
                    attach_per_syscall(ebpf, hook, event, &names, object)
                }
                Some((SyscallSet::Only(names), _)) => Err(format!(
                    "{} syscalls, more than {MAX_PER_SYSCALL}: each per-syscall tracepoint takes \
                     the kernel an RCU grace period to detach, so many make stopping slow; \
                     the raw hook with its in-kernel syscall filter serves",
                    names.len()
                )),
                _ => Err("every syscall is wanted: a hook on all of them serves better".into()),
            },
            _ => attach_hook(
                ebpf,
                hook,
                btf,
                object,
                options.perf_sampling.unwrap_or(PerfSampling::Frequency(99)),
            ),
        };
        match attached {
            Ok(()) => {
                return RoleOutcome {
                    role: role.name,
                    required: role.required,
                    chosen: Some(*hook),
                    rejected,
                }
            }
            Err(why) => {
                unload(ebpf, hook.program);
                rejected.push((*hook, why));
            }
        }
    }
    RoleOutcome {
        role: role.name,
        required: role.required,
        chosen: None,
        rejected,
    }
}

/// A role's hooks best first; with `every_syscall_first`, its per-syscall tracepoints move
/// after its hooks on every syscall (`tp_btf`, `raw_tp`), the rest keeping their order.
fn hooks_in_order(role: &Role, every_syscall_first: bool) -> Vec<&Hook> {
    let hooks: Vec<&Hook> = role.hooks.iter().collect();
    if !every_syscall_first {
        return hooks;
    }
    let on_every_syscall = |h: &&Hook| {
        matches!(
            h.attach,
            Attach::BtfTracepoint("sys_enter" | "sys_exit")
                | Attach::RawTracepoint("sys_enter" | "sys_exit")
        )
    };
    let Some(last) = hooks.iter().rposition(on_every_syscall) else {
        return hooks;
    };
    let (per_syscall, others): (Vec<&Hook>, Vec<&Hook>) = hooks[..=last]
        .iter()
        .partition(|h| matches!(h.attach, Attach::Syscalls { .. }));
    others
        .into_iter()
        .chain(per_syscall)
        .chain(hooks[last + 1..].iter().copied())
        .collect()
}

/// `object` is the ELF the programs came from, to name the field when a CO-RE relocation failed.
fn attach_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    btf: &aya::Btf,
    object: &[u8],
    sampling: PerfSampling,
) -> Result<(), String> {
    let program = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} missing from the object", hook.program))?;
    let err = |e: aya::programs::ProgramError| describe_program_error(&e, object, hook.program);
    match hook.attach {
        Attach::BtfTracepoint(name) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(err)?;
            p.load(name, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::RawTracepoint(name) => {
            let p: &mut RawTracePoint = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(name).map_err(err)?;
        }
        Attach::Tracepoint(category, name) => {
            super::features::ensure_tracefs()?;
            let p: &mut TracePoint = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(category, name).map_err(err)?;
        }
        Attach::FEntry(function) => {
            let p: &mut FEntry = program.try_into().map_err(err)?;
            p.load(function, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::Lsm(hook) => {
            bpf_lsm_active()?;
            let p: &mut aya::programs::Lsm = program.try_into().map_err(err)?;
            p.load(hook, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::FExit(function) => {
            let p: &mut FExit = program.try_into().map_err(err)?;
            p.load(function, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        Attach::KProbe(function) | Attach::KRetProbe(function) => {
            let p: &mut KProbe = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(function, 0).map_err(err)?;
        }
        Attach::PerfEvent(event) => {
            let p: &mut PerfEvent = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            attach_every_cpu(p, event, sampling)?;
        }
        Attach::CgroupSockAddr(_) => {
            let p: &mut aya::programs::CgroupSockAddr = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            let path = super::cgroup::cgroup2_root()?;
            let root = std::fs::File::open(&path)
                .map_err(|e| format!("{} (cgroup v2 root): {e}", path.display()))?;
            // A bpf_link coexists with programs already attached (link_create takes no mode
            // flags: passing AllowMultiple fails with EINVAL).
            p.attach(root, aya::programs::CgroupAttachMode::Single)
                .map_err(err)?;
        }
        Attach::Xdp(_) | Attach::TcxEgress | Attach::TcClsactEgress => {
            return Err("network hooks attach through attach_net_hook".into())
        }
        Attach::Syscalls { .. } => {
            return Err("per-syscall hooks attach through attach_per_syscall".into())
        }
    }
    Ok(())
}

/// Most syscalls a role attaches per-syscall tracepoints for; beyond, its raw hook (one
/// program on every syscall, returning at once for the others) is used. Detaching a
/// per-syscall tracepoint waits for an RCU grace period under a global mutex: tens of ms
/// each on a busy machine, one after the other, at every stop.
pub const MAX_PER_SYSCALL: usize = 8;

/// Loads `hook`'s tracepoint program and attaches it to `syscalls/EVENT_NAME` of each
/// syscall in `names` this kernel has. A syscall without a tracepoint is one this kernel does
/// not implement (e.g. the module calls without module support): its calls fail with ENOSYS
/// and are not seen.
fn attach_per_syscall(
    ebpf: &mut Ebpf,
    hook: &Hook,
    event: &str,
    names: &[&str],
    object: &[u8],
) -> Result<(), String> {
    super::features::ensure_tracefs()?;
    let events = super::features::syscall_tracepoints_dir()?;
    let program = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} missing from the object", hook.program))?;
    let err = |e: aya::programs::ProgramError| describe_program_error(&e, object, hook.program);
    let p: &mut TracePoint = program.try_into().map_err(err)?;
    p.load().map_err(err)?;
    for name in names {
        let tracepoint = format!("{event}_{}", super::hooks::tracepoint_name(name));
        if events.join(&tracepoint).is_dir() {
            p.attach("syscalls", &tracepoint)
                .map_err(|e| format!("{tracepoint}: {}", err(e)))?;
        }
    }
    Ok(())
}

/// BPF LSM programs load wherever the kernel has CONFIG_BPF_LSM, but run only when "bpf" is
/// among the active LSMs.
fn bpf_lsm_active() -> Result<(), String> {
    let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if active.split(',').any(|l| l.trim() == "bpf") {
        return Ok(());
    }
    Err(format!(
        "\"bpf\" is not an active LSM (lsm={}); boot with lsm=...,bpf",
        active.trim()
    ))
}

/// Attaches a loaded perf event program to `event` on every online CPU.
fn attach_every_cpu(
    p: &mut PerfEvent,
    event: SoftwarePerfEvent,
    sampling: PerfSampling,
) -> Result<(), String> {
    let cpus = aya::util::online_cpus().map_err(|(what, e)| format!("reading {what}: {e}"))?;
    for cpu in cpus {
        p.attach(
            event.config(),
            PerfEventScope::AllProcessesOneCpu { cpu },
            sampling.policy(),
            false,
        )
        .map_err(|e| format!("cpu {cpu}: {}", describe_error(&e)))?;
    }
    Ok(())
}

/// Attaches an XDP or tc program to every interface in `options.interfaces`. A failure on
/// any interface fails the hook; the caller then unloads the program, which detaches it
/// from the interfaces done so far, so nothing stays attached. A clsact qdisc it adds is
/// recorded in `added_qdiscs`, whose owner removes it.
fn attach_net_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    options: &LoadOptions,
    added_qdiscs: &mut AddedClsact,
) -> Result<(), String> {
    if options.interfaces.is_empty() {
        return Err("no interface given".into());
    }
    let program = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} missing from the object", hook.program))?;
    let err = |e: aya::programs::ProgramError| describe_error(&e);
    match hook.attach {
        Attach::Xdp(mode) => {
            if options.xdp_mode.is_some_and(|m| m != mode) {
                return Err("not the XDP mode asked for".into());
            }
            let p: &mut Xdp = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            for name in &options.interfaces {
                p.attach(name, mode.aya()).map_err(|e| {
                    let busy = matches!(
                        &e,
                        aya::programs::ProgramError::SyscallError(s)
                            if matches!(s.io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST))
                    );
                    if busy {
                        format!("{name} {ATTACH_CONFLICT}; refusing to replace it")
                    } else {
                        format!("{name}: {}", describe_error(&e))
                    }
                })?;
            }
        }
        Attach::TcxEgress | Attach::TcClsactEgress => {
            let p: &mut SchedClassifier = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            for name in &options.interfaces {
                let how = if hook.attach == Attach::TcxEgress {
                    TcAttachOptions::TcxOrder(LinkOrder::default())
                } else {
                    // EEXIST: the interface already has a clsact qdisc, which is what we need
                    // (and not ours to remove).
                    match tc::qdisc_add_clsact(name) {
                        Ok(()) => added_qdiscs.0.push(name.clone()),
                        Err(e) => {
                            let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
                            if !exists {
                                return Err(format!(
                                    "{name}: clsact qdisc: {}",
                                    describe_error(&e)
                                ));
                            }
                        }
                    }
                    TcAttachOptions::Netlink(Default::default())
                };
                p.attach_with_options(name, TcAttachType::Egress, how)
                    .map_err(|e| format!("{name}: {}", describe_error(&e)))?;
            }
        }
        _ => return Err("not a network hook".into()),
    }
    Ok(())
}

/// clsact qdiscs a load added (by interface name), deleted when dropped: an interface
/// keeps no qdisc it did not have, whoever loaded the capability (command or agent).
#[derive(Default)]
pub(super) struct AddedClsact(Vec<String>);

impl Drop for AddedClsact {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = crate::net::clsact::delete_clsact(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(every_syscall_first: bool) -> Vec<&'static str> {
        hooks_in_order(&crate::files::SPEC.roles[0], every_syscall_first)
            .iter()
            .map(|h| h.program)
            .collect()
    }

    #[test]
    fn per_syscall_tracepoints_move_after_the_hooks_on_every_syscall_only_when_asked() {
        let all = [
            "files_open_fexit",
            "files_open_sc",
            "files_open_btf",
            "files_open_raw",
            "files_open_kretprobe",
            "files_open_tp",
        ];
        assert_eq!(programs(false), all);
        assert_eq!(
            programs(true),
            [
                "files_open_fexit",
                "files_open_btf",
                "files_open_raw",
                "files_open_sc",
                "files_open_kretprobe",
                "files_open_tp",
            ]
        );
    }
}
