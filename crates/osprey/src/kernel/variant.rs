//! Which build of a capability object this kernel gets: the modern one where the kernel has
//! every helper it needs (by the helper's function in the kernel BTF, as `has_bpf_loop`
//! decides), else the compat one built from the same source for 5.10-class kernels.
//! OSPREY_BPF_VARIANT=compat (or modern) forces the choice, to exercise the compat builds.

use aya::Btf;
use aya_obj::btf::BtfKind;
use serde::Serialize;

/// One of the two builds of an object (bpf/Makefile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Modern,
    Compat,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Modern => "modern",
            Variant::Compat => "compat",
        }
    }
}

/// The build chosen for an object, and why.
#[derive(Debug, Clone, Serialize)]
pub struct VariantChoice {
    pub variant: Variant,
    pub reason: String,
}

/// The kernel release that added a helper, for the reasons shown to users.
fn since(helper: &str) -> &'static str {
    match helper {
        "bpf_get_current_task_btf" => "5.11",
        "bpf_for_each_map_elem" => "5.13, callbacks",
        "bpf_task_pt_regs" => "5.15",
        "bpf_find_vma" => "5.17",
        _ => "a newer kernel",
    }
}

/// What OSPREY_BPF_VARIANT asks for, if anything.
fn forced() -> Option<Variant> {
    match std::env::var("OSPREY_BPF_VARIANT").ok()?.as_str() {
        "compat" => Some(Variant::Compat),
        "modern" => Some(Variant::Modern),
        _ => None,
    }
}

/// The bytes to load for `object` on the kernel described by `btf`, and why those.
pub fn choose(object: &osprey_bpf::Object, btf: &Btf) -> (&'static [u8], VariantChoice) {
    let has = |helper: &str| btf.id_by_type_name_kind(helper, BtfKind::Func).is_ok();
    choose_with(object, forced(), has)
}

fn choose_with(
    object: &osprey_bpf::Object,
    forced: Option<Variant>,
    has: impl Fn(&str) -> bool,
) -> (&'static [u8], VariantChoice) {
    let modern = |reason: String| {
        let choice = VariantChoice {
            variant: Variant::Modern,
            reason,
        };
        (object.bytes, choice)
    };
    let Some(compat) = object.compat else {
        return modern("one build: needs nothing beyond Linux 5.10".into());
    };
    let compat = |reason: String| {
        let choice = VariantChoice {
            variant: Variant::Compat,
            reason,
        };
        (compat, choice)
    };
    match forced {
        Some(Variant::Compat) => return compat("OSPREY_BPF_VARIANT=compat".into()),
        Some(Variant::Modern) => return modern("OSPREY_BPF_VARIANT=modern".into()),
        None => {}
    }
    let missing: Vec<String> = object
        .needs
        .iter()
        .filter(|helper| !has(helper))
        .map(|helper| format!("{helper} ({})", since(helper)))
        .collect();
    if missing.is_empty() {
        modern(format!("the kernel has {}", object.needs.join(", ")))
    } else {
        compat(format!("the kernel lacks {}", missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_lacking_one_helper_gets_the_compat_build_and_is_told_which() {
        let memory = osprey_bpf::MEMORY;
        let (bytes, choice) = choose_with(&memory, None, |h| h != "bpf_find_vma");
        assert_eq!(choice.variant, Variant::Compat);
        assert_eq!(Some(bytes.as_ptr()), memory.compat.map(<[u8]>::as_ptr));
        assert_eq!(choice.reason, "the kernel lacks bpf_find_vma (5.17)");

        let (bytes, choice) = choose_with(&memory, None, |_| true);
        assert_eq!(choice.variant, Variant::Modern);
        assert_eq!(bytes.as_ptr(), memory.bytes.as_ptr());
        assert!(choice.reason.contains("bpf_find_vma"), "{}", choice.reason);
    }

    #[test]
    fn objects_with_one_build_and_forced_choices() {
        let (_, choice) = choose_with(&osprey_bpf::ENFORCE, Some(Variant::Compat), |_| false);
        assert_eq!(choice.variant, Variant::Modern, "enforce has one build");
        let (_, choice) = choose_with(&osprey_bpf::FILES, Some(Variant::Compat), |_| true);
        assert_eq!(choice.variant, Variant::Compat);
        assert_eq!(choice.reason, "OSPREY_BPF_VARIANT=compat");
        let (_, choice) = choose_with(&osprey_bpf::FILES, Some(Variant::Modern), |_| false);
        assert_eq!(choice.variant, Variant::Modern);
    }
}
