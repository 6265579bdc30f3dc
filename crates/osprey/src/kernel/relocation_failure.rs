//! Names what an unsatisfiable CO-RE relocation wanted.
//!
//! When a relocation finds no match in the kernel's BTF, aya (like libbpf) replaces the
//! instruction with a call to the non-existent helper 0xbad2310 and leaves the refusal to the
//! verifier, whose log then says only `unknown#195896080`. Here we resolve the program's
//! relocations again, from the object's `.BTF`/`.BTF.ext` against the kernel's BTF, to say
//! which field or type this kernel lacks.

use std::collections::BTreeSet;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use osprey_bpf::btf::{Btf, Type, Words};

use super::describe_error;

/// How the verifier prints a call to the poison helper 0xbad2310.
const POISON: &str = "unknown#195896080";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// True when a verifier log shows a relocation aya could not satisfy.
pub fn is_poisoned(verifier_log: &str) -> bool {
    verifier_log.contains(POISON)
}

/// Like [`describe_error`], but when a CO-RE relocation of `program` (in the ELF `object`)
/// could not be satisfied, says which field or type is missing instead of the verifier's words.
pub fn describe_program_error(
    err: &aya::programs::ProgramError,
    object: &[u8],
    program: &str,
) -> String {
    if let aya::programs::ProgramError::LoadError { verifier_log, .. } = err {
        let log = verifier_log.to_string();
        if is_poisoned(&log) {
            let kernel = std::fs::read(KERNEL_BTF).ok();
            let kernel = kernel.as_deref().and_then(|k| Btf::parse(k).ok());
            let missing = kernel
                .map(|k| unsatisfied(object, program, &poisoned_insns(&log), &k))
                .unwrap_or_default();
            return explain(program, &missing);
        }
    }
    describe_error(err)
}

fn explain(program: &str, missing: &[String]) -> String {
    if missing.is_empty() {
        format!(
            "a CO-RE relocation could not be satisfied (program {program}): it needs a kernel \
             field or type this kernel lacks; the program cannot run here"
        )
    } else {
        format!(
            "CO-RE relocation failed: {} (program {program}); the program cannot run here",
            missing.join("; ")
        )
    }
}

/// Instruction indices the verifier reports as poisoned calls ("12: (85) call unknown#...").
fn poisoned_insns(log: &str) -> BTreeSet<u64> {
    log.lines()
        .filter(|line| line.contains(POISON))
        .filter_map(|line| line.split_once(':')?.0.trim().parse().ok())
        .collect()
}

/// Why each relocation of `program` that the kernel cannot satisfy fails, preferring those at
/// the instructions the verifier refused (guarded reads of missing fields are poisoned too, but
/// never reached).
fn unsatisfied(
    object: &[u8],
    program: &str,
    poisoned: &BTreeSet<u64>,
    kernel: &Btf,
) -> Vec<String> {
    let Some((local, relocations)) = object_relocations(object, program) else {
        return Vec::new();
    };
    let failures: Vec<(Option<u64>, String)> = relocations
        .iter()
        .filter_map(|(insn, relo)| Some((*insn, check(&local, kernel, relo)?)))
        .collect();
    let at_refused: Vec<&String> = failures
        .iter()
        .filter(|(insn, _)| insn.is_some_and(|i| poisoned.contains(&i)))
        .map(|(_, why)| why)
        .collect();
    let chosen = match at_refused.is_empty() {
        true => failures.iter().map(|(_, why)| why).collect(),
        false => at_refused,
    };
    let mut seen = BTreeSet::new();
    chosen
        .into_iter()
        .filter(|why| seen.insert(*why))
        .cloned()
        .collect()
}

/// One `bpf_core_relo` record of `.BTF.ext`.
#[derive(Debug)]
struct Relocation {
    type_id: u32,
    access: String,
    kind: u32,
}

/// A relocation with the index of its instruction in the loaded program, when known.
type Located = (Option<u64>, Relocation);

/// The object's BTF and the relocations that can affect `program`: those in its own body (with
/// their instruction index) and those in `.text`, whose subprograms it may call.
fn object_relocations(object: &[u8], program: &str) -> Option<(Btf, Vec<Located>)> {
    let elf = object::File::parse(object).ok()?;
    let symbol = elf
        .symbols()
        .find(|s| s.kind() == SymbolKind::Text && s.name() == Ok(program))?;
    let section = elf.section_by_index(symbol.section_index()?).ok()?;
    let section_name = section.name().ok()?;
    let (start, end) = (symbol.address(), symbol.address() + symbol.size());
    let btf = Btf::parse(elf.section_by_name(".BTF")?.data().ok()?).ok()?;
    let ext = elf.section_by_name(".BTF.ext")?.data().ok()?;
    let mut found = Vec::new();
    for (section, insn_off, relo) in parse_core_relocations(&btf, ext)? {
        let insn_off = u64::from(insn_off);
        if section == section_name && (start..end).contains(&insn_off) {
            found.push((Some((insn_off - start) / 8), relo));
        } else if section == ".text" {
            found.push((None, relo));
        }
    }
    Some((btf, found))
}

/// Reads the CO-RE records of `.BTF.ext`: (ELF section, byte offset of the instruction, record).
fn parse_core_relocations(btf: &Btf, ext: &[u8]) -> Option<Vec<(String, u32, Relocation)>> {
    let w = Words::new(ext).ok()?;
    let r = |at: usize| w.at(at).ok();
    let header_len = r(4)? as usize;
    if header_len < 32 {
        return Some(Vec::new()); // written before CO-RE existed
    }
    let start = header_len + r(24)? as usize;
    let end = start + r(28)? as usize;
    let record_size = r(start)? as usize;
    if record_size < 16 || end > w.len() {
        return None;
    }
    let mut found = Vec::new();
    let mut at = start + 4;
    while at + 8 <= end {
        let section = btf.string(r(at)?).to_string();
        let count = r(at + 4)? as usize;
        at += 8;
        for _ in 0..count {
            let relo = Relocation {
                type_id: r(at + 4)?,
                access: btf.string(r(at + 8)?).to_string(),
                kind: r(at + 12)?,
            };
            found.push((section.clone(), r(at)?, relo));
            at += record_size;
        }
    }
    Some(found)
}

/// Why the kernel cannot satisfy `relo`, or `None` if it can (or we cannot tell).
fn check(local: &Btf, kernel: &Btf, relo: &Relocation) -> Option<String> {
    let indices: Vec<usize> = relo
        .access
        .split(':')
        .map(|i| i.parse().ok())
        .collect::<Option<_>>()?;
    match relo.kind {
        // Field offset, size, signedness, shifts (field-exists never poisons).
        0 | 1 | 3 | 4 | 5 => check_field(local, kernel, relo.type_id, &indices),
        // Target type id and type size need the type itself.
        7 | 9 => {
            let root = local.get(relo.type_id).ok()?;
            if !named_family(root) {
                return None;
            }
            let name = essential(root.name());
            candidates(kernel, root, name)
                .next()
                .is_none()
                .then(|| format!("this kernel has no {} {name}", kind_word(root)))
        }
        // Enumerator value.
        11 => check_enum_value(local, kernel, relo.type_id, *indices.first()?),
        _ => None,
    }
}

/// One named step of a field access: a member by name, or an array element.
enum Step<'a> {
    Member { name: &'a str, local_type: u32 },
    Element,
}

fn check_field(local: &Btf, kernel: &Btf, type_id: u32, indices: &[usize]) -> Option<String> {
    let root_id = local.skip_aliases(type_id);
    let root = local.get(root_id).ok().filter(|t| named_family(t))?;
    // Anonymous members are left out, as libbpf does: the kernel may nest them differently.
    let mut steps = Vec::new();
    let mut current = root_id;
    for &index in indices.get(1..)? {
        match local.get(current).ok()? {
            Type::Struct { members, .. } => {
                let member = members.get(index)?;
                current = local.skip_aliases(member.ty);
                if !member.name.is_empty() {
                    steps.push(Step::Member {
                        name: &member.name,
                        local_type: current,
                    });
                }
            }
            Type::Array { elem, .. } => {
                current = local.skip_aliases(*elem);
                steps.push(Step::Element);
            }
            _ => return None,
        }
    }
    let root_name = essential(root.name());
    let owner = format!("this kernel's {} {root_name}", kind_word(root));
    let mut first_failure = None;
    for candidate in candidates(kernel, root, root_name) {
        match walk(local, kernel, candidate, &steps) {
            Ok(()) => return None,
            Err(why) => {
                first_failure.get_or_insert(format!("{owner} {why}"));
            }
        }
    }
    Some(
        first_failure
            .unwrap_or_else(|| format!("this kernel has no {} {root_name}", kind_word(root))),
    )
}

/// Follows `steps` through kernel type `root`; on failure says what is missing.
fn walk(local: &Btf, kernel: &Btf, root: u32, steps: &[Step]) -> Result<(), String> {
    let mut current = kernel.skip_aliases(root);
    let mut path = String::new();
    for step in steps {
        let t = kernel.get(current).map_err(|_| "has a broken type")?;
        match step {
            Step::Member { name, local_type } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                let target = find_member(kernel, current, name)
                    .ok_or_else(|| format!("has no field {path}"))?;
                if !compatible(local, *local_type, kernel, target) {
                    return Err(format!("has field {path} but of an incompatible type"));
                }
                current = target;
            }
            Step::Element => {
                let Type::Array { elem, .. } = t else {
                    return Err(format!("has field {path} but it is not an array"));
                };
                path.push_str("[]");
                current = kernel.skip_aliases(*elem);
            }
        }
    }
    Ok(())
}

/// The (alias-skipped) type of member `name` of composite `id`, looking inside anonymous
/// members as libbpf does.
fn find_member(btf: &Btf, id: u32, name: &str) -> Option<u32> {
    let Ok(Type::Struct { members, .. }) = btf.get(id) else {
        return None;
    };
    members.iter().find_map(|m| {
        let target = btf.skip_aliases(m.ty);
        if m.name.is_empty() {
            find_member(btf, target, name)
        } else {
            (m.name == name).then_some(target)
        }
    })
}

/// libbpf's field compatibility, loosely: same shape of type, sizes free to differ.
fn compatible(local: &Btf, local_id: u32, kernel: &Btf, kernel_id: u32) -> bool {
    let (Ok(l), Ok(k)) = (local.get(local_id), kernel.get(kernel_id)) else {
        return false;
    };
    match (l, k) {
        (Type::Struct { .. }, Type::Struct { .. }) | (Type::Enum { .. }, Type::Enum { .. }) => true,
        (Type::Array { elem: le, .. }, Type::Array { elem: ke, .. }) => compatible(
            local,
            local.skip_aliases(*le),
            kernel,
            kernel.skip_aliases(*ke),
        ),
        (Type::Int { .. }, Type::Int { .. })
        | (Type::Ptr { .. }, Type::Ptr { .. })
        | (Type::Float { .. }, Type::Float { .. })
        | (Type::Fwd { .. }, Type::Fwd { .. }) => true,
        _ => false,
    }
}

fn check_enum_value(local: &Btf, kernel: &Btf, type_id: u32, index: usize) -> Option<String> {
    let root = local.get(local.skip_aliases(type_id)).ok()?;
    let Type::Enum { values, .. } = root else {
        return None;
    };
    let name = essential(root.name());
    let value = essential(&values.get(index)?.0);
    let mut enums = candidates(kernel, root, name).peekable();
    if enums.peek().is_none() {
        return Some(format!("this kernel has no enum {name}"));
    }
    let found = enums.any(|id| match kernel.get(id) {
        Ok(Type::Enum { values, .. }) => values.iter().any(|(v, _)| essential(v) == value),
        _ => false,
    });
    (!found).then(|| format!("this kernel's enum {name} has no value {value}"))
}

/// Which kinds of type may stand for each other when matched by name (enum and enum64 are
/// one family, struct and union are not).
fn family(t: &Type) -> (u8, bool) {
    match t {
        Type::Struct { union, .. } => (1, *union),
        Type::Enum { .. } => (2, false),
        Type::Fwd { union, .. } => (3, *union),
        _ => (0, false),
    }
}

/// Whether types like `t` are matched by name (structs, unions, enums, declarations).
fn named_family(t: &Type) -> bool {
    family(t).0 != 0
}

/// Kernel types of `local`'s family whose name, without a `___flavor` suffix, is `name`.
fn candidates<'a>(kernel: &'a Btf, local: &Type, name: &'a str) -> impl Iterator<Item = u32> + 'a {
    let wanted = family(local);
    (1..kernel.types.len() as u32).filter(move |&id| {
        let t = &kernel.types[id as usize];
        family(t) == wanted && essential(t.name()) == name
    })
}

/// A name without its CO-RE flavor: `task_struct___v6` is `task_struct`.
fn essential(name: &str) -> &str {
    name.find("___").map_or(name, |at| &name[..at])
}

fn kind_word(t: &Type) -> &'static str {
    match t {
        Type::Struct { union: false, .. } => "struct",
        Type::Struct { union: true, .. } => "union",
        Type::Enum { .. } => "enum",
        _ => "type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "0: R1=ctx() R10=fp0\n0: (85) call bpf_get_current_task#35\n\
                       1: (85) call unknown#195896080\ninvalid func unknown#195896080\n\
                       processed 2 insns (limit 1000000)";

    fn fixture() -> &'static [u8] {
        osprey_bpf::BROKEN_CORE.bytes
    }

    #[test]
    fn reads_the_fixture_relocation() {
        let (btf, relocations) = object_relocations(fixture(), "broken_core").expect("relocations");
        let [(Some(1), relo)] = relocations.as_slice() else {
            panic!("expected one relocation at instruction 1: {relocations:?}");
        };
        assert_eq!((relo.kind, relo.access.as_str()), (0, "0:0"));
        let root = btf.get(relo.type_id).expect("root type");
        assert_eq!(root.name(), "task_struct___osprey_future");
    }

    #[test]
    fn finds_the_poisoned_instruction() {
        assert_eq!(poisoned_insns(LOG), BTreeSet::from([1]));
    }

    #[test]
    fn satisfied_by_a_btf_that_has_the_field() {
        // The object's own BTF has the field: nothing to report.
        let (own, _) = object_relocations(fixture(), "broken_core").expect("relocations");
        let missing = unsatisfied(fixture(), "broken_core", &BTreeSet::from([1]), &own);
        assert!(missing.is_empty(), "{missing:?}");
    }

    #[test]
    fn names_the_field_this_kernel_lacks() {
        let kernel = std::fs::read(KERNEL_BTF);
        if !osprey_workload::require(
            "names_the_field_this_kernel_lacks",
            kernel.is_ok(),
            &format!("no {KERNEL_BTF}"),
        ) {
            return;
        }
        let kernel = kernel.unwrap();
        let kernel = Btf::parse(&kernel).expect("kernel BTF parses");
        let task_struct = Type::Struct {
            name: "task_struct".into(),
            union: false,
            size: 0,
            members: Vec::new(),
        };
        assert!(candidates(&kernel, &task_struct, "task_struct")
            .next()
            .is_some());
        let missing = unsatisfied(fixture(), "broken_core", &poisoned_insns(LOG), &kernel);
        assert_eq!(
            missing,
            ["this kernel's struct task_struct has no field osprey_no_such_field"]
        );
        let text = explain("broken_core", &missing);
        assert!(text.contains("osprey_no_such_field"), "{text}");
    }

    #[test]
    fn generic_message_when_the_field_cannot_be_pinpointed() {
        let text = explain("p", &[]);
        assert!(
            text.contains("CO-RE relocation could not be satisfied"),
            "{text}"
        );
        let (own, _) = object_relocations(fixture(), "broken_core").expect("relocations");
        assert!(unsatisfied(b"not an elf", "p", &BTreeSet::new(), &own).is_empty());
    }

    #[test]
    fn finds_members_inside_anonymous_members() {
        // struct outer { union { int inner; }; } built by hand: ids 1 int, 2 union, 3 struct.
        let member = |name: &str, ty| osprey_bpf::btf::Member {
            name: name.into(),
            ty,
            bit_offset: 0,
            bitfield_size: 0,
        };
        let composite = |name: &str, union, members| Type::Struct {
            name: name.into(),
            union,
            size: 4,
            members,
        };
        let btf = Btf {
            types: vec![
                Type::Void,
                Type::Int {
                    size: 4,
                    signed: true,
                },
                composite("", true, vec![member("inner", 1)]),
                composite("outer", false, vec![member("", 2)]),
            ],
            strings: Vec::new(),
        };
        assert_eq!(find_member(&btf, 3, "inner"), Some(1));
        assert_eq!(find_member(&btf, 3, "missing"), None);
    }
}
