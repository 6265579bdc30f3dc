//! The `osprey check` report: the kernel, the privileges present and missing, the kernel
//! features probed, and for every capability the registry says to probe, the hook each of
//! its roles would use and why better ones were refused.

use serde::Serialize;
use serde_json::{json, Value};

use crate::capabilities::{Capability, Probe, REGISTRY};
use crate::kernel::features::{self, Feature};
use crate::kernel::loader::{LoadOptions, LoadedCapability};
use crate::kernel::privileges;
use crate::kernel::variant::VariantChoice;

#[derive(Debug, Serialize)]
pub struct CapabilityReport {
    pub name: &'static str,
    pub ok: bool,
    pub error: Option<String>,
    /// The build of the object in use (modern or compat) and why.
    pub variant: Option<VariantChoice>,
    /// Per role: hook and program chosen, hooks rejected with the reason.
    pub roles: Vec<Value>,
    pub note: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct PrivilegeReport {
    pub capability: &'static str,
    pub present: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub kernel: String,
    /// Every privilege present and every capability loadable.
    pub ok: bool,
    pub privileges: Vec<PrivilegeReport>,
    /// Without these nothing can be loaded, so nothing else is probed.
    pub missing_privileges: Vec<&'static str>,
    pub features: Vec<Feature>,
    pub capabilities: Vec<CapabilityReport>,
    /// Container runtimes found on the host and whether their metadata is reachable.
    pub container_runtimes: Vec<crate::container::probe::RuntimeProbe>,
}

impl CheckReport {
    /// Probes everything (loads each capability without attaching; qdiscs a network
    /// probe adds are removed with it).
    pub fn build() -> Self {
        let mask = privileges::effective();
        let missing = privileges::missing_for_tracing(mask);
        let probing = missing.is_empty();
        let features = if probing {
            features::probe_all()
        } else {
            Vec::new()
        };
        let capabilities: Vec<CapabilityReport> = if probing {
            REGISTRY.iter().filter_map(probe).collect()
        } else {
            Vec::new()
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        CheckReport {
            kernel: kernel.trim().to_string(),
            ok: probing && capabilities.iter().all(|c| c.ok),
            privileges: privileges::report(mask)
                .into_iter()
                .map(|(capability, present)| PrivilegeReport {
                    capability,
                    present,
                })
                .collect(),
            missing_privileges: missing,
            features,
            capabilities,
            container_runtimes: crate::container::probe::probe(
                &crate::container::Sources::from_env(),
            ),
        }
    }
}

/// Loads one capability without attaching; none when the registry says not to probe it.
fn probe(capability: &Capability) -> Option<CapabilityReport> {
    let spec = capability.spec;
    let (interfaces, note) = match capability.probe {
        Probe::No => return None,
        Probe::Load => (Vec::new(), None),
        Probe::LoadWithNote(note) => (Vec::new(), Some(note)),
        Probe::OnInterface { interface, note } => (vec![interface.to_string()], Some(note)),
    };
    let options = LoadOptions {
        dry_run: true,
        ring_bytes: Some(1 << 16),
        denied_programs: LoadOptions::denied_from_env(),
        interfaces,
        ..Default::default()
    };
    let (ok, error, variant, roles) = match LoadedCapability::load(spec, &options) {
        Ok(cap) => {
            let roles = cap.outcomes.iter().map(role_json).collect();
            (true, None, Some(cap.variant.clone()), roles)
        }
        Err(e) => (false, Some(e.to_string()), None, Vec::new()),
    };
    Some(CapabilityReport {
        name: spec.name,
        ok,
        error,
        variant,
        roles,
        note,
    })
}

fn role_json(o: &crate::kernel::loader::RoleOutcome) -> Value {
    json!({
        "role": o.role,
        "required": o.required,
        "hook": o.chosen.map(|h| h.attach.label()),
        "program": o.chosen.map(|h| h.program),
        "rejected": o.rejected.iter().map(|(h, why)| json!({"hook": h.attach.label(), "reason": why})).collect::<Vec<_>>(),
    })
}
