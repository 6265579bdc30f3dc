//! `osprey check`: what this kernel offers, which hook each capability uses, privileges.

use std::process::ExitCode;

use clap::Args;
use osprey::kernel::features::{self, Feature};
use osprey::kernel::loader::{LoadOptions, LoadedCapability};
use osprey::kernel::privileges;
use osprey::{files, memory, net, process, profile, security, syscalls};
use serde_json::json;

use crate::{Failure, Output};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

struct CapabilityReport {
    name: &'static str,
    note: Option<&'static str>,
    ok: bool,
    error: Option<String>,
    roles: Vec<serde_json::Value>,
}

/// Network capabilities attach per interface: `check` tries them on loopback, where native
/// XDP does not exist (the rows say so); on a real NIC `osprey flows` picks native first.
const NET_PROBE_INTERFACE: &str = "lo";

fn check_capability(spec: osprey::kernel::loader::CapabilitySpec) -> CapabilityReport {
    let options = LoadOptions {
        dry_run: true,
        ring_bytes: Some(1 << 16),
        denied_programs: LoadOptions::denied_from_env(),
        interfaces: if spec.name == net::flows::SPEC.name {
            vec![NET_PROBE_INTERFACE.to_string()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    // A tc clsact fallback adds the qdisc; remove it again where there was none.
    let without_clsact = net::clsact::interfaces_without_clsact(&options.interfaces);
    let loaded = LoadedCapability::load(spec, &options);
    for name in &without_clsact {
        let _ = net::clsact::delete_clsact(name);
    }
    match loaded {
        Ok(cap) => CapabilityReport {
            name: spec.name,
            note: flows_note(spec),
            ok: true,
            error: None,
            roles: cap
                .outcomes
                .iter()
                .map(|o| {
                    json!({
                        "role": o.role,
                        "required": o.required,
                        "hook": o.chosen.map(|h| h.attach.label()),
                        "program": o.chosen.map(|h| h.program),
                        "rejected": o.rejected.iter().map(|(h, why)| json!({"hook": h.attach.label(), "reason": why})).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        },
        Err(e) => CapabilityReport {
            name: spec.name,
            note: flows_note(spec),
            ok: false,
            error: Some(e.to_string()),
            roles: Vec::new(),
        },
    }
}

fn flows_note(spec: osprey::kernel::loader::CapabilitySpec) -> Option<&'static str> {
    (spec.name == net::flows::SPEC.name).then_some(
        "probed on lo, which has no native XDP; `osprey flows` tries native XDP first on each interface (driver support), then generic",
    )
}

pub fn run(args: &CheckArgs) -> Result<ExitCode, Failure> {
    let caps_mask = privileges::effective();
    let missing = privileges::missing_for_tracing(caps_mask);
    let features: Vec<Feature> = if missing.is_empty() {
        features::probe_all()
    } else {
        Vec::new()
    };
    let capabilities: Vec<CapabilityReport> = if missing.is_empty() {
        [
            process::SPEC,
            files::SPEC,
            memory::SPEC,
            profile::SPEC,
            syscalls::SPEC,
            security::SPEC,
            security::connect_deny::SPEC,
            net::tcp::SPEC,
            net::flows::SPEC,
        ]
        .into_iter()
        .map(check_capability)
        .collect()
    } else {
        Vec::new()
    };
    let all_ok = missing.is_empty() && capabilities.iter().all(|c| c.ok);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let runtimes = osprey::container::probe::probe(&osprey::container::Sources::from_env());

    match args.output {
        Output::Json => {
            let doc = json!({
                "kernel": kernel.trim(),
                "ok": all_ok,
                "privileges": privileges::report(caps_mask).into_iter().map(|(n, has)| json!({"capability": n, "present": has})).collect::<Vec<_>>(),
                "missing_privileges": missing,
                "features": features,
                "capabilities": capabilities.iter().map(|c| json!({
                    "name": c.name, "ok": c.ok, "error": c.error, "roles": c.roles, "note": c.note,
                })).collect::<Vec<_>>(),
                "container_runtimes": runtimes,
            });
            println!("{doc}");
        }
        Output::Table => {
            println!("kernel {}", kernel.trim());
            let privs: Vec<String> = privileges::report(caps_mask)
                .into_iter()
                .map(|(n, has)| format!("{n}:{}", if has { "yes" } else { "no" }))
                .collect();
            println!("privileges {}", privs.join(" "));
            if !missing.is_empty() {
                println!(
                    "missing {} — cannot load BPF; nothing else can be checked",
                    missing.join(", ")
                );
            }
            if !features.is_empty() {
                println!("\n{:<22} {:<4} DETAIL", "FEATURE", "OK");
                for f in &features {
                    println!(
                        "{:<22} {:<4} {}",
                        f.name,
                        if f.available { "yes" } else { "no" },
                        f.detail
                    );
                }
            }
            println!(
                "\n{:<11} {:<36} {:<5} {:<7} DETAIL",
                "RUNTIME", "ENDPOINT", "FOUND", "REACHED"
            );
            for r in &runtimes {
                let yes = |b: bool| if b { "yes" } else { "no" };
                println!(
                    "{:<11} {:<36} {:<5} {:<7} {}",
                    r.runtime,
                    r.endpoint,
                    yes(r.found),
                    yes(r.reached),
                    r.detail
                );
            }
            if !capabilities.is_empty() {
                println!(
                    "\n{:<15} {:<13} {:<34} WHY NOT BETTER / WHY NOT AT ALL",
                    "CAPABILITY", "ROLE", "HOOK"
                );
                for c in &capabilities {
                    if let Some(note) = c.note {
                        println!("{:<15} {:<13} {:<34} ({note})", c.name, "", "");
                    }
                    if let Some(err) = &c.error {
                        println!("{:<15} {:<13} {:<34} {err}", c.name, "-", "unavailable");
                    }
                    for r in &c.roles {
                        let rejected: Vec<String> = r["rejected"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|x| {
                                format!(
                                    "{}: {}",
                                    x["hook"].as_str().unwrap_or(""),
                                    x["reason"].as_str().unwrap_or("")
                                )
                            })
                            .collect();
                        println!(
                            "{:<15} {:<13} {:<34} {}",
                            c.name,
                            r["role"].as_str().unwrap_or(""),
                            r["hook"].as_str().unwrap_or("unavailable"),
                            rejected.join("; ")
                        );
                    }
                }
            }
        }
    }
    if !missing.is_empty() {
        return Ok(ExitCode::from(77));
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(77)
    })
}
