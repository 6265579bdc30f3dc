//! `osprey check`: what this kernel offers, which hook each capability uses, privileges.
//! The report is the library's (`osprey::check`); this renders it.

use std::process::ExitCode;

use clap::Args;
use osprey::check::{CapabilityReport, CheckReport};

use crate::{Failure, Output};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(args: &CheckArgs) -> Result<ExitCode, Failure> {
    let report = CheckReport::build();
    match args.output {
        Output::Json => {
            println!(
                "{}",
                serde_json::to_value(&report).map_err(|e| Failure::Runtime(e.into()))?
            );
        }
        Output::Table => print_table(&report),
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(77)
    })
}

fn print_table(report: &CheckReport) {
    println!("kernel {}", report.kernel);
    let privs: Vec<String> = report
        .privileges
        .iter()
        .map(|p| format!("{}:{}", p.capability, if p.present { "yes" } else { "no" }))
        .collect();
    println!("privileges {}", privs.join(" "));
    if !report.missing_privileges.is_empty() {
        println!(
            "missing {} — cannot load BPF; nothing else can be checked",
            report.missing_privileges.join(", ")
        );
    }
    if !report.features.is_empty() {
        println!("\n{:<22} {:<4} DETAIL", "FEATURE", "OK");
        for f in &report.features {
            let ok = if f.available { "yes" } else { "no" };
            println!("{:<22} {ok:<4} {}", f.name, f.detail);
        }
    }
    println!(
        "\n{:<11} {:<36} {:<5} {:<7} DETAIL",
        "RUNTIME", "ENDPOINT", "FOUND", "REACHED"
    );
    for r in &report.container_runtimes {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let (found, reached) = (yes(r.found), yes(r.reached));
        println!(
            "{:<11} {:<36} {found:<5} {reached:<7} {}",
            r.runtime, r.endpoint, r.detail
        );
    }
    if !report.capabilities.is_empty() {
        println!(
            "\n{:<15} {:<13} {:<34} WHY NOT BETTER / WHY NOT AT ALL",
            "CAPABILITY", "ROLE", "HOOK"
        );
        for c in &report.capabilities {
            print_capability(c);
        }
    }
}

fn print_capability(c: &CapabilityReport) {
    if let Some(note) = c.note {
        println!("{:<15} {:<13} {:<34} ({note})", c.name, "", "");
    }
    if let Some(v) = &c.variant {
        let build = format!("{} build", v.variant.label());
        println!("{:<15} {:<13} {:<34} {}", c.name, "object", build, v.reason);
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
