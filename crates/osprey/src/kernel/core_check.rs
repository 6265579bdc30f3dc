//! Names what an unsatisfiable CO-RE relocation wanted.
//!
//! When a relocation finds no match in the kernel's BTF, aya (like libbpf) replaces the
//! instruction with a call to the non-existent helper 0xbad2310 and leaves the refusal to the
//! verifier, whose log then says only `unknown#195896080`. Here we resolve the program's
//! relocations again, from the object's `.BTF`/`.BTF.ext` against the kernel's BTF, to say
//! which field or type this kernel lacks.

use std::collections::BTreeSet;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::describe_error;

/// How the verifier prints a call to the poison helper 0xbad2310.
const POISON: &str = "unknown#195896080";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_ENUM64: u32 = 19;
const KIND_PTR: u32 = 2;
const KIND_INT: u32 = 1;
const KIND_FLOAT: u32 = 16;

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
            let kernel = kernel.as_deref().and_then(Btf::parse);
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
    let btf = Btf::parse(elf.section_by_name(".BTF")?.data().ok()?)?;
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
    let r = reader(ext)?;
    let header_len = r(4)? as usize;
    if header_len < 32 {
        return Some(Vec::new()); // written before CO-RE existed
    }
    let start = header_len + r(24)? as usize;
    let end = start + r(28)? as usize;
    let record_size = r(start)? as usize;
    if record_size < 16 || end > ext.len() {
        return None;
    }
    let mut found = Vec::new();
    let mut at = start + 4;
    while at + 8 <= end {
        let section = btf.name(r(at)?).to_string();
        let count = r(at + 4)? as usize;
        at += 8;
        for _ in 0..count {
            let relo = Relocation {
                type_id: r(at + 4)?,
                access: btf.name(r(at + 8)?).to_string(),
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
            let root = local.ty(relo.type_id)?;
            let name = essential(local.name(root.name));
            candidates(kernel, root.kind, name)
                .next()
                .is_none()
                .then(|| format!("this kernel has no {} {name}", kind_word(root.kind)))
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
    let root_id = local.skip_modifiers(type_id);
    let root = local.ty(root_id)?;
    // Anonymous members are left out, as libbpf does: the kernel may nest them differently.
    let mut steps = Vec::new();
    let mut current = root_id;
    for &index in indices.get(1..)? {
        let t = local.ty(current)?;
        if t.is_composite() {
            let member = t.members.get(index)?;
            current = local.skip_modifiers(member.target);
            let name = local.name(member.name);
            if !name.is_empty() {
                steps.push(Step::Member {
                    name,
                    local_type: current,
                });
            }
        } else if t.kind == KIND_ARRAY {
            current = local.skip_modifiers(t.target);
            steps.push(Step::Element);
        } else {
            return None;
        }
    }
    let root_name = essential(local.name(root.name));
    let owner = format!("this kernel's {} {root_name}", kind_word(root.kind));
    let mut first_failure = None;
    for candidate in candidates(kernel, root.kind, root_name) {
        match walk(local, kernel, candidate, &steps) {
            Ok(()) => return None,
            Err(why) => {
                first_failure.get_or_insert(format!("{owner} {why}"));
            }
        }
    }
    Some(
        first_failure
            .unwrap_or_else(|| format!("this kernel has no {} {root_name}", kind_word(root.kind))),
    )
}

/// Follows `steps` through kernel type `root`; on failure says what is missing.
fn walk(local: &Btf, kernel: &Btf, root: u32, steps: &[Step]) -> Result<(), String> {
    let mut current = kernel.skip_modifiers(root);
    let mut path = String::new();
    for step in steps {
        let t = kernel.ty(current).ok_or("has a broken type")?;
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
                if t.kind != KIND_ARRAY {
                    return Err(format!("has field {path} but it is not an array"));
                }
                path.push_str("[]");
                current = kernel.skip_modifiers(t.target);
            }
        }
    }
    Ok(())
}

/// The (modifier-skipped) type of member `name` of composite `id`, looking inside anonymous
/// members as libbpf does.
fn find_member(btf: &Btf, id: u32, name: &str) -> Option<u32> {
    let t = btf.ty(id)?;
    if !t.is_composite() {
        return None;
    }
    t.members.iter().find_map(|m| {
        let member_name = btf.name(m.name);
        let target = btf.skip_modifiers(m.target);
        if member_name.is_empty() {
            find_member(btf, target, name)
        } else {
            (member_name == name).then_some(target)
        }
    })
}

/// libbpf's field compatibility, loosely: same shape of type, sizes free to differ.
fn compatible(local: &Btf, local_id: u32, kernel: &Btf, kernel_id: u32) -> bool {
    let (Some(l), Some(k)) = (local.ty(local_id), kernel.ty(kernel_id)) else {
        return false;
    };
    let enumish = |kind| kind == KIND_ENUM || kind == KIND_ENUM64;
    match (l.kind, k.kind) {
        _ if l.is_composite() && k.is_composite() => true,
        (a, b) if enumish(a) && enumish(b) => true,
        (KIND_ARRAY, KIND_ARRAY) => compatible(
            local,
            local.skip_modifiers(l.target),
            kernel,
            kernel.skip_modifiers(k.target),
        ),
        (a, b) => a == b && matches!(a, KIND_INT | KIND_PTR | KIND_FLOAT | KIND_FWD),
    }
}

fn check_enum_value(local: &Btf, kernel: &Btf, type_id: u32, index: usize) -> Option<String> {
    let root = local.ty(local.skip_modifiers(type_id))?;
    let name = essential(local.name(root.name));
    let value = essential(local.name(root.members.get(index)?.name));
    let mut enums = candidates(kernel, root.kind, name).peekable();
    if enums.peek().is_none() {
        return Some(format!("this kernel has no enum {name}"));
    }
    let found = enums.filter_map(|id| kernel.ty(id)).any(|t| {
        t.members
            .iter()
            .any(|m| essential(kernel.name(m.name)) == value)
    });
    (!found).then(|| format!("this kernel's enum {name} has no value {value}"))
}

/// Kernel types of the same kind whose name, without a `___flavor` suffix, is `name`.
fn candidates<'a>(kernel: &'a Btf, kind: u32, name: &'a str) -> impl Iterator<Item = u32> + 'a {
    let family = |k| if k == KIND_ENUM64 { KIND_ENUM } else { k };
    (1..kernel.types.len() as u32).filter(move |&id| {
        let t = &kernel.types[id as usize];
        family(t.kind) == family(kind) && essential(kernel.name(t.name)) == name
    })
}

/// A name without its CO-RE flavor: `task_struct___v6` is `task_struct`.
fn essential(name: &str) -> &str {
    name.find("___").map_or(name, |at| &name[..at])
}

fn kind_word(kind: u32) -> &'static str {
    match kind {
        KIND_STRUCT => "struct",
        KIND_UNION => "union",
        KIND_ENUM | KIND_ENUM64 => "enum",
        _ => "type",
    }
}

/// Reads a u32 at byte `at` of a BTF blob (whose 0xeb9f magic is checked first), in host
/// order: objects built for the other byte order cannot load here anyway.
fn reader(data: &[u8]) -> Option<impl Fn(usize) -> Option<u32> + '_> {
    let magic = u16::from_ne_bytes(data.get(..2)?.try_into().ok()?);
    (magic == 0xeb9f).then_some(move |at: usize| {
        let bytes = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_ne_bytes(bytes.try_into().ok()?))
    })
}

/// A BTF type, reduced to what relocations look at.
struct Type {
    kind: u32,
    name: u32,
    /// Referred type: pointee, element, typedef or modifier target.
    target: u32,
    /// Struct/union members, or enumerators (target unused).
    members: Vec<Member>,
}

impl Type {
    fn new(kind: u32, name: u32, target: u32) -> Self {
        let members = Vec::new();
        Self {
            kind,
            name,
            target,
            members,
        }
    }

    fn is_composite(&self) -> bool {
        self.kind == KIND_STRUCT || self.kind == KIND_UNION
    }
}

struct Member {
    name: u32,
    target: u32,
}

/// The types and names of one BTF blob (kernel or object); type ids index `types`.
struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    fn parse(data: &[u8]) -> Option<Self> {
        let r = reader(data)?;
        let header_len = r(4)? as usize;
        let types_start = header_len + r(8)? as usize;
        let types_end = types_start + r(12)? as usize;
        let strings_start = header_len + r(16)? as usize;
        let strings_end = strings_start + r(20)? as usize;
        let strings = data.get(strings_start..strings_end)?.to_vec();
        let mut types = vec![Type::new(0, 0, 0)]; // id 0 is void
        let mut at = types_start;
        while at < types_end {
            let (name, info, size_or_type) = (r(at)?, r(at + 4)?, r(at + 8)?);
            let kind = (info >> 24) & 0x1f;
            let count = (info & 0xffff) as usize;
            at += 12;
            let mut t = Type::new(kind, name, size_or_type);
            let (extra, stride) = match kind {
                1 | 14 | 17 => (4, 0),               // int, var, decl tag
                KIND_ARRAY => (12, 0),               // element, index type, count
                KIND_STRUCT | KIND_UNION => (0, 12), // name, type, offset
                KIND_ENUM | 13 => (0, 8),            // enumerators; function parameters
                15 | KIND_ENUM64 => (0, 12),         // datasec variables; 64-bit enumerators
                0..=19 => (0, 0),
                _ => return None,
            };
            if kind == KIND_ARRAY {
                t.target = r(at)?;
            }
            if matches!(kind, KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64) {
                for i in 0..count {
                    let m = at + i * stride;
                    let target = if t.is_composite() { r(m + 4)? } else { 0 };
                    t.members.push(Member {
                        name: r(m)?,
                        target,
                    });
                }
            }
            at += extra + count * stride;
            types.push(t);
        }
        Some(Self { types, strings })
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    fn name(&self, offset: u32) -> &str {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Skips typedefs and const/volatile/restrict/type-tag modifiers.
    fn skip_modifiers(&self, mut id: u32) -> u32 {
        const MODIFIERS: [u32; 5] = [KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, 18];
        // Bounded: a malformed blob could loop.
        for _ in 0..64 {
            match self.ty(id) {
                Some(t) if MODIFIERS.contains(&t.kind) => id = t.target,
                _ => break,
            }
        }
        id
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
        let root = btf.ty(relo.type_id).expect("root type");
        assert_eq!(btf.name(root.name), "task_struct___osprey_future");
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
        let Some(kernel) = std::fs::read(KERNEL_BTF).ok() else {
            eprintln!("SKIPPED names_the_field_this_kernel_lacks: no {KERNEL_BTF}");
            return;
        };
        let kernel = Btf::parse(&kernel).expect("kernel BTF parses");
        assert!(candidates(&kernel, KIND_STRUCT, "task_struct")
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
        let btf = Btf {
            types: vec![
                Type::new(0, 0, 0),
                Type::new(KIND_INT, 1, 0),
                with_member(Type::new(KIND_UNION, 0, 0), 5, 1),
                with_member(Type::new(KIND_STRUCT, 11, 0), 0, 2),
            ],
            strings: b"\0int\0inner\0outer\0".to_vec(),
        };
        assert_eq!(btf.name(11), "outer");
        assert_eq!(find_member(&btf, 3, "inner"), Some(1));
        assert_eq!(find_member(&btf, 3, "missing"), None);
    }

    fn with_member(mut t: Type, name: u32, target: u32) -> Type {
        t.members.push(Member { name, target });
        t
    }
}
