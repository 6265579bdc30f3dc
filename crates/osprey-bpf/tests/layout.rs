//! The Rust mirror of the event ABI (`osprey_bpf::abi`) against the C side:
//! - every struct's size and every member's offset and shape, against the BTF inside the
//!   embedded objects (every object that carries the struct is checked);
//! - the enum values, against the objects' BTF where clang kept the enum and always
//!   against `bpf/include/events.h`;
//! - the `#define`d sizes the Rust side copies, against `events.h`.
//!
//! A struct that no object's BTF describes is a failure, not a skip: clang only emits BTF
//! for types reachable from a map, a global or a function signature, so such a struct must
//! be anchored in the BPF sources.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;

use object::{Object as _, ObjectSection as _};
use osprey_bpf::{abi, btf};

// ---------------------------------------------------------------------------------------
// Shapes: what a member is, comparable between a BTF type and a Rust field type.

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Int { size: usize, signed: bool },
    Array { len: usize, elem: Box<Shape> },
    Struct(String),
    Other(String),
}

impl Shape {
    fn int(size: usize, signed: bool) -> Shape {
        // A byte is a byte: `char` (signed on BPF) mirrors `u8`.
        Shape::Int {
            size,
            signed: signed && size > 1,
        }
    }

    fn of_btf(btf: &btf::Btf, id: u32) -> Result<Shape, String> {
        Ok(match btf.resolve(id)? {
            btf::Type::Int { size, signed } => Shape::int(*size as usize, *signed),
            btf::Type::Enum { size, signed, .. } => Shape::int(*size as usize, *signed),
            btf::Type::Array { elem, len } => Shape::Array {
                len: *len as usize,
                elem: Box::new(Shape::of_btf(btf, *elem)?),
            },
            btf::Type::Struct {
                name, union: false, ..
            } => Shape::Struct(name.clone()),
            btf::Type::Struct { name, .. } => Shape::Other(format!("union {name}")),
            btf::Type::Ptr { .. } => Shape::Other("a pointer".into()),
            btf::Type::Fwd { name, .. } => Shape::Other(format!("a declaration of {name}")),
            btf::Type::Float { size } => Shape::Other(format!("a float of {size} bytes")),
            btf::Type::Void => Shape::Other("void".into()),
            btf::Type::Other { kind } => Shape::Other(format!("BTF kind {kind}")),
            btf::Type::Alias { .. } => unreachable!("resolve() looks through aliases"),
        })
    }
}

trait Describe {
    fn shape() -> Shape;
}

macro_rules! describe_ints {
    ($($t:ty => $signed:literal),* $(,)?) => {
        $(impl Describe for $t {
            fn shape() -> Shape {
                Shape::int(size_of::<$t>(), $signed)
            }
        })*
    };
}
describe_ints!(u8 => false, u16 => false, u32 => false, u64 => false,
               i8 => true, i16 => true, i32 => true, i64 => true);

impl<T: Describe, const N: usize> Describe for [T; N] {
    fn shape() -> Shape {
        Shape::Array {
            len: N,
            elem: Box::new(T::shape()),
        }
    }
}

impl Describe for abi::TcpEndpoints {
    fn shape() -> Shape {
        Shape::Struct("osprey_tcp_endpoints".into())
    }
}

impl Describe for abi::EventHeader {
    fn shape() -> Shape {
        Shape::Struct("osprey_event_header".into())
    }
}

impl Describe for abi::BaselineSlot {
    fn shape() -> Shape {
        Shape::Struct("osprey_baseline_slot".into())
    }
}

impl Describe for abi::FaultKey {
    fn shape() -> Shape {
        Shape::Struct("osprey_fault_key".into())
    }
}

fn shape_of<F: Describe>(_: &F) -> Shape {
    F::shape()
}

// ---------------------------------------------------------------------------------------
// The Rust side of each struct.

struct RustField {
    name: &'static str,
    offset: usize,
    shape: Shape,
}

struct RustStruct {
    rust: &'static str,
    c: &'static str,
    size: usize,
    fields: Vec<RustField>,
    /// C flexible array members (`char data[]`): no Rust field, offset == size_of::<T>().
    flexible: &'static [&'static str],
}

/// `mirror!(Type as "c_name" { field, ... } flexible ["data"])`. The field list must name
/// every Rust field (the destructuring has no `..`, so a missing one does not compile);
/// C names equal the Rust names.
macro_rules! mirror {
    ($ty:ident as $c:literal { $($field:ident),* $(,)? } $(flexible [$($flex:literal),*])?) => {{
        let value = abi::$ty::default();
        let abi::$ty { $($field: _),* } = value;
        RustStruct {
            rust: stringify!($ty),
            c: $c,
            size: size_of::<abi::$ty>(),
            fields: vec![$(RustField {
                name: stringify!($field),
                offset: offset_of!(abi::$ty, $field),
                shape: shape_of(&value.$field),
            }),*],
            flexible: &[$($($flex),*)?],
        }
    }};
}

fn rust_structs() -> Vec<RustStruct> {
    vec![
        mirror!(EventHeader as "osprey_event_header" {
            kind, size, ts_boot_ns, pid, tid, ppid, uid, gid, _pad, cgroup_id, comm,
        }),
        mirror!(FileOpen as "osprey_file_open" {
            hdr, ret, flags, resolve, ino, dev, mode, dirfd, op, status, path_len,
            resolved_len, resolved_depth, _pad,
        } flexible ["data"]),
        mirror!(Exec as "osprey_exec" {
            hdr, ret, ino, dev, argc, old_tid, status, stdio_sockets, filename_len, args_len,
            exe_len, exe_depth, env_len, _pad,
        } flexible ["data"]),
        mirror!(Fork as "osprey_fork" { hdr, child_pid, child_tid, child_start_boot_ns }),
        mirror!(Exit as "osprey_exit" { hdr, start_boot_ns, exit_code, _pad }),
        mirror!(SecSyscall as "osprey_sec_syscall" {
            hdr, ret, args, nr, old_uid, old_euid, status, path_len, path2_len, resolved_len,
            addr_len, sock_type, sock_proto,
        } flexible ["data"]),
        mirror!(TcpEndpoints as "osprey_tcp_endpoints" {
            family, lport, rport, active, owner_known, laddr, raddr,
        }),
        mirror!(TcpState as "osprey_tcp_state" { hdr, sock, ep, old_state, new_state }),
        mirror!(TcpClose as "osprey_tcp_close" {
            hdr, sock, ep, start_boot_ns, bytes_sent, bytes_acked, bytes_received, segs_out,
            segs_in, data_segs_out, data_segs_in, retransmits, total_retrans, srtt_us,
            min_rtt_us, last_state, _pad,
        }),
        mirror!(FlowKey as "osprey_flow_key" {
            ifindex, direction, family, protocol, icmp_type, icmp_code, _pad, vlan, sport,
            dport, saddr, daddr,
        }),
        mirror!(FlowStats as "osprey_flow_stats" {
            packets, bytes, payload_bytes, first_mono_ns, last_mono_ns, tcp_flags, cgroup_id,
        }),
        mirror!(FlowCounters as "osprey_flow_counters" {
            inserts, insert_failed, non_ip, truncated,
        }),
        mirror!(Counters as "osprey_counters" { emitted, dropped, throttled, filtered }),
        mirror!(ProfileKey as "osprey_profile_key" { pid, kernel_stack, user_stack, _pad, comm }),
        mirror!(SyscallKey as "osprey_syscall_key" { pid, nr, err, _pad }),
        mirror!(SyscallStats as "osprey_syscall_stats" {
            count, errors, timed, total_ns, max_ns, comm,
        }),
        mirror!(BaselineKey as "osprey_baseline_key" { ino, dev, _pad }),
        mirror!(BaselineSlot as "osprey_baseline_slot" { window, count }),
        mirror!(Baseline as "osprey_baseline" { allowed, flags, _pad, slots, peak }),
        mirror!(BaselineEvent as "osprey_baseline_event" {
            hdr, ino, dev, nr, args, count, limit, op, _pad,
        }),
        mirror!(FimEvent as "osprey_fim_event" {
            hdr, ret, ino, arg, dev, nr, op, status, path_len, path2_len, resolved_len,
            resolved2_len, _pad,
        } flexible ["data"]),
        mirror!(ProfileUserStack as "osprey_profile_user_stack" {
            hdr, kernel_stack, stack_len, ip, sp, bp, user_stack, py_frames,
        } flexible ["data"]),
        mirror!(PyFrame as "osprey_py_frame" { code, instr }),
        mirror!(PyProc as "osprey_py_proc" {
            tstate_addr, ts_cframe, ts_native_tid, cframe_frame, frame_code, frame_previous,
            frame_instr, frame_entry, _pad,
        }),
        mirror!(FaultKey as "osprey_fault_key" { pid, dev, vma_start, ino }),
        mirror!(FaultCounts as "osprey_fault_counts" { minor, major, untyped, vma_end }),
        mirror!(FaultHeatKey as "osprey_fault_heat_key" { mapping, second, row }),
        mirror!(FaultMapping as "osprey_fault_mapping" {
            hdr, key, vma_end, pgoff, addr, vm_flags, class, fault_type, status, path_len,
            path_depth, _pad,
        } flexible ["data"]),
    ]
}

// ---------------------------------------------------------------------------------------
// Objects and header.

fn object_btfs() -> Vec<(&'static str, btf::Btf)> {
    osprey_bpf::ALL
        .iter()
        .map(|obj| {
            let file = object::File::parse(obj.bytes)
                .unwrap_or_else(|e| panic!("{}.bpf.o: not an ELF object: {e}", obj.name));
            let section = file.section_by_name(".BTF").unwrap_or_else(|| {
                panic!("{}.bpf.o has no .BTF section (built without -g?)", obj.name)
            });
            let data = section
                .data()
                .unwrap_or_else(|e| panic!("{}.bpf.o: reading .BTF: {e}", obj.name));
            let btf = btf::Btf::parse(data)
                .unwrap_or_else(|e| panic!("{}.bpf.o: parsing .BTF: {e}", obj.name));
            (obj.name, btf)
        })
        .collect()
}

fn events_h_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bpf/include/events.h")
}

/// events.h without comments.
fn events_h() -> String {
    let path = events_h_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find('/') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("/*") {
            let close = t.find("*/").expect("unterminated comment in events.h");
            out.push(' ');
            rest = &t[close + 2..];
        } else if tail.starts_with("//") {
            rest = &tail[tail.find('\n').unwrap_or(tail.len())..];
        } else {
            out.push('/');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A C integer constant expression of the forms events.h uses: `N`, `0xN`, `A << B`.
fn eval(expr: &str) -> Result<i128, String> {
    let expr = expr.trim();
    let expr = expr
        .strip_prefix('(')
        .and_then(|e| e.strip_suffix(')'))
        .unwrap_or(expr);
    if let Some((a, b)) = expr.split_once("<<") {
        return Ok(eval(a)? << eval(b)?);
    }
    let lit = expr.trim_end_matches(['u', 'U', 'l', 'L']);
    let parsed = match lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16),
        None => lit.parse(),
    };
    parsed.map_err(|_| {
        format!("cannot evaluate `{expr}`; teach eval() in crates/osprey-bpf/tests/layout.rs")
    })
}

/// Enumerators of `enum <name> { ... };` in events.h, in order.
fn header_enum(header: &str, name: &str) -> Result<Vec<(String, i128)>, String> {
    let open = format!("enum {name} {{");
    let start = header
        .find(&open)
        .ok_or_else(|| format!("`{open}` not found in {}", events_h_path().display()))?;
    let body = &header[start + open.len()..];
    let body = &body[..body.find('}').ok_or("unterminated enum")?];
    let mut next = 0;
    let mut out = Vec::new();
    for item in body.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (ident, value) = match item.split_once('=') {
            Some((ident, expr)) => (ident.trim(), eval(expr)?),
            None => (item, next),
        };
        out.push((ident.to_string(), value));
        next = value + 1;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The checks.

fn check_struct(
    rs: &RustStruct,
    obj: &str,
    btf: &btf::Btf,
    members: &[btf::Member],
    size: u32,
) -> Vec<String> {
    let at = format!("struct {} ({obj}.bpf.o) vs abi::{}", rs.c, rs.rust);
    let mut errors = Vec::new();
    if size as usize != rs.size {
        errors.push(format!("{at}: C size {size} != Rust size {}", rs.size));
    }
    let mut seen = Vec::new();
    for m in members {
        seen.push(m.name.as_str());
        if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
            errors.push(format!(
                "{at}: member `{}` is a bitfield; Rust cannot mirror it",
                m.name
            ));
            continue;
        }
        let offset = (m.bit_offset / 8) as usize;
        let shape = match Shape::of_btf(btf, m.ty) {
            Ok(shape) => shape,
            Err(e) => {
                errors.push(format!("{at}: member `{}`: {e}", m.name));
                continue;
            }
        };
        if let Some(f) = rs.fields.iter().find(|f| f.name == m.name) {
            if offset != f.offset {
                errors.push(format!(
                    "{at}: `{}` at C offset {offset} but Rust offset {}",
                    m.name, f.offset
                ));
            }
            if shape != f.shape {
                errors.push(format!(
                    "{at}: `{}` is {shape:?} in C but {:?} in Rust",
                    m.name, f.shape
                ));
            }
        } else if rs.flexible.contains(&m.name.as_str()) {
            if !matches!(shape, Shape::Array { len: 0, .. }) {
                errors.push(format!(
                    "{at}: `{}` should be a flexible array, is {shape:?}",
                    m.name
                ));
            }
            if offset != rs.size {
                errors.push(format!(
                    "{at}: flexible `{}` at C offset {offset}, but Rust size_of is {}",
                    m.name, rs.size
                ));
            }
        } else {
            errors.push(format!("{at}: C member `{}` has no Rust field", m.name));
        }
    }
    for name in rs
        .fields
        .iter()
        .map(|f| f.name)
        .chain(rs.flexible.iter().copied())
    {
        if !seen.contains(&name) {
            errors.push(format!("{at}: Rust field `{name}` has no C member"));
        }
    }
    errors
}

#[test]
fn structs_match_btf() {
    let objects = object_btfs();
    let mut errors = Vec::new();
    let mut report = String::new();
    for rs in rust_structs() {
        let mut found = Vec::new();
        for (obj, btf) in &objects {
            for ty in &btf.types {
                if let btf::Type::Struct {
                    name,
                    union: false,
                    size,
                    members,
                } = ty
                {
                    if name == rs.c {
                        found.push(*obj);
                        errors.extend(check_struct(&rs, obj, btf, members, *size));
                    }
                }
            }
        }
        if found.is_empty() {
            errors.push(format!(
                "struct {c} (abi::{}) is in no object's BTF ({}): clang emits a struct's BTF only \
                 when a global, map or function signature uses it (a pointer member of \
                 another struct only gives a forward declaration), so anchor it in the BPF \
                 sources, e.g. `struct {c} *const osprey_abi_{} = 0;` in a header every \
                 object includes",
                rs.rust,
                objects
                    .iter()
                    .map(|(o, _)| format!("{o}.bpf.o"))
                    .collect::<Vec<_>>()
                    .join(", "),
                rs.c.trim_start_matches("osprey_"),
                c = rs.c,
            ));
        }
        let _ = writeln!(report, "struct {:<20} checked in {found:?}", rs.c);
    }
    eprint!("{report}");
    assert!(
        errors.is_empty(),
        "ABI layout mismatch:\n  {}",
        errors.join("\n  ")
    );
}

type EnumTable = (&'static str, Vec<(&'static str, i128)>);

fn rust_enums() -> Vec<EnumTable> {
    use abi::{
        baseline_flags, baseline_op, fault_class, fault_error, fault_type, fim_op, kind, open_op,
        profile_error, status,
    };
    let v = |x: u32| i128::from(x);
    let w = |x: u16| i128::from(x);
    let b = |x: u8| i128::from(x);
    vec![
        (
            "osprey_kind",
            vec![
                ("OSPREY_KIND_FILE_OPEN", v(kind::FILE_OPEN)),
                ("OSPREY_KIND_EXEC", v(kind::EXEC)),
                ("OSPREY_KIND_FORK", v(kind::FORK)),
                ("OSPREY_KIND_EXIT", v(kind::EXIT)),
                ("OSPREY_KIND_PROFILE_SAMPLE", v(kind::PROFILE_SAMPLE)),
                (
                    "OSPREY_KIND_PROFILE_USER_STACK",
                    v(kind::PROFILE_USER_STACK),
                ),
                ("OSPREY_KIND_OFFCPU", v(kind::OFFCPU)),
                ("OSPREY_KIND_PAGE_FAULT", v(kind::PAGE_FAULT)),
                ("OSPREY_KIND_FAULT_MAPPING", v(kind::FAULT_MAPPING)),
                ("OSPREY_KIND_SEC_SYSCALL", v(kind::SEC_SYSCALL)),
                ("OSPREY_KIND_SYSCALL_COUNT", v(kind::SYSCALL_COUNT)),
                ("OSPREY_KIND_BASELINE", v(kind::BASELINE)),
                ("OSPREY_KIND_FIM", v(kind::FIM)),
                ("OSPREY_KIND_TCP_STATE", v(kind::TCP_STATE)),
                ("OSPREY_KIND_TCP_CLOSE", v(kind::TCP_CLOSE)),
            ],
        ),
        (
            "osprey_flow_direction",
            vec![
                (
                    "OSPREY_FLOW_INGRESS",
                    i128::from(abi::flow_direction::INGRESS),
                ),
                (
                    "OSPREY_FLOW_EGRESS",
                    i128::from(abi::flow_direction::EGRESS),
                ),
            ],
        ),
        (
            "osprey_profile_error",
            profile_error::ALL
                .iter()
                .map(|&(name, slot)| (name, v(slot)))
                .collect(),
        ),
        (
            "osprey_baseline_op",
            vec![
                ("OSPREY_BL_NEW_EXE", w(baseline_op::NEW_EXE)),
                ("OSPREY_BL_OUTSIDE", w(baseline_op::OUTSIDE)),
                ("OSPREY_BL_RATE", w(baseline_op::RATE)),
            ],
        ),
        (
            "osprey_baseline_flags",
            vec![("OSPREY_BL_UNKNOWN", v(baseline_flags::UNKNOWN))],
        ),
        (
            "osprey_fault_class",
            vec![
                ("OSPREY_FAULT_UNRESOLVED", b(fault_class::UNRESOLVED)),
                ("OSPREY_FAULT_HEAP", b(fault_class::HEAP)),
                ("OSPREY_FAULT_STACK", b(fault_class::STACK)),
                ("OSPREY_FAULT_ANON", b(fault_class::ANON)),
                ("OSPREY_FAULT_FILE", b(fault_class::FILE)),
                ("OSPREY_FAULT_VDSO", b(fault_class::VDSO)),
                ("OSPREY_FAULT_SPECIAL", b(fault_class::SPECIAL)),
            ],
        ),
        (
            "osprey_fault_type",
            vec![
                ("OSPREY_FAULT_MINOR", b(fault_type::MINOR)),
                ("OSPREY_FAULT_MAJOR", b(fault_type::MAJOR)),
                ("OSPREY_FAULT_UNTYPED", b(fault_type::UNTYPED)),
            ],
        ),
        (
            "osprey_fault_error",
            vec![
                ("OSPREY_FERR_VMA_BUSY", v(fault_error::VMA_BUSY)),
                (
                    "OSPREY_FERR_VMA_BUSY_CACHED",
                    v(fault_error::VMA_BUSY_CACHED),
                ),
                ("OSPREY_FERR_VMA_MISSING", v(fault_error::VMA_MISSING)),
                ("OSPREY_FERR_VMA_OTHER", v(fault_error::VMA_OTHER)),
                ("OSPREY_FERR_COUNTS_FULL", v(fault_error::COUNTS_FULL)),
                ("OSPREY_FERR_HEAT_FULL", v(fault_error::HEAT_FULL)),
                ("OSPREY_FERR_SLOTS", v(fault_error::SLOTS)),
            ],
        ),
        (
            "osprey_open_op",
            vec![
                ("OSPREY_OPEN", w(open_op::OPEN)),
                ("OSPREY_OPENAT", w(open_op::OPENAT)),
                ("OSPREY_OPENAT2", w(open_op::OPENAT2)),
                ("OSPREY_CREAT", w(open_op::CREAT)),
            ],
        ),
        (
            "osprey_status_bits",
            vec![
                ("OSPREY_ST_PATH_TRUNCATED", w(status::PATH_TRUNCATED)),
                (
                    "OSPREY_ST_RESOLVED_TRUNCATED",
                    w(status::RESOLVED_TRUNCATED),
                ),
                (
                    "OSPREY_ST_RESOLVED_FROM_FILE",
                    w(status::RESOLVED_FROM_FILE),
                ),
                ("OSPREY_ST_RESOLVED_BASE_DIR", w(status::RESOLVED_BASE_DIR)),
                ("OSPREY_ST_ARGS_TRUNCATED", w(status::ARGS_TRUNCATED)),
                ("OSPREY_ST_PATH_UNREADABLE", w(status::PATH_UNREADABLE)),
                ("OSPREY_ST_KILLED", w(status::KILLED)),
                ("OSPREY_ST_OLD_IDS", w(status::OLD_IDS)),
                ("OSPREY_ST_DENIED", w(status::DENIED)),
                ("OSPREY_ST_TARGET_SELF", w(status::TARGET_SELF)),
                ("OSPREY_ST_ENV_TRUNCATED", w(status::ENV_TRUNCATED)),
                (
                    "OSPREY_ST_RESOLVED2_BASE_DIR",
                    w(status::RESOLVED2_BASE_DIR),
                ),
                (
                    "OSPREY_ST_RESOLVED2_TRUNCATED",
                    w(status::RESOLVED2_TRUNCATED),
                ),
            ],
        ),
        (
            "osprey_fim_op",
            vec![
                ("OSPREY_FIM_OPEN_WRITE", w(fim_op::OPEN_WRITE)),
                ("OSPREY_FIM_CREATE", w(fim_op::CREATE)),
                ("OSPREY_FIM_WRITE", w(fim_op::WRITE)),
                ("OSPREY_FIM_TRUNCATE", w(fim_op::TRUNCATE)),
                ("OSPREY_FIM_CHMOD", w(fim_op::CHMOD)),
                ("OSPREY_FIM_CHOWN", w(fim_op::CHOWN)),
                ("OSPREY_FIM_UNLINK", w(fim_op::UNLINK)),
                ("OSPREY_FIM_RENAME", w(fim_op::RENAME)),
                ("OSPREY_FIM_LINK", w(fim_op::LINK)),
                ("OSPREY_FIM_SYMLINK", w(fim_op::SYMLINK)),
                ("OSPREY_FIM_MKDIR", w(fim_op::MKDIR)),
                ("OSPREY_FIM_MKNOD", w(fim_op::MKNOD)),
            ],
        ),
    ]
}

fn compare_enum(
    at: &str,
    c: &[(String, i128)],
    rust: &[(&'static str, i128)],
    errors: &mut Vec<String>,
) {
    let c: BTreeMap<&str, i128> = c.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let rust: BTreeMap<&str, i128> = rust.iter().copied().collect();
    for (name, value) in &c {
        match rust.get(name) {
            None => errors.push(format!("{at}: {name} = {value} has no Rust const")),
            Some(r) if r != value => {
                errors.push(format!("{at}: {name} = {value} but Rust has {r}"))
            }
            Some(_) => {}
        }
    }
    for name in rust.keys().filter(|n| !c.contains_key(*n)) {
        errors.push(format!("{at}: Rust const for {name} has no C enumerator"));
    }
}

#[test]
fn enums_match() {
    let objects = object_btfs();
    let header = events_h();
    let mut errors = Vec::new();
    for (name, rust) in rust_enums() {
        match header_enum(&header, name) {
            Ok(c) => compare_enum(&format!("enum {name} (events.h)"), &c, &rust, &mut errors),
            Err(e) => errors.push(e),
        }
        for (obj, btf) in &objects {
            for ty in &btf.types {
                if let btf::Type::Enum {
                    name: n, values, ..
                } = ty
                {
                    if n == name {
                        let at = format!("enum {name} ({obj}.bpf.o BTF)");
                        compare_enum(&at, values, &rust, &mut errors);
                    }
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "ABI enum mismatch:\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn defines_match_header() {
    let header = events_h();
    let define = |name: &str| -> i128 {
        let line = header
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some("#define") && words.next() == Some(name))
                    .then(|| words.collect::<Vec<_>>().join(" "))
            })
            .unwrap_or_else(|| panic!("#define {name} not found in events.h"));
        eval(&line).unwrap_or_else(|e| panic!("#define {name}: {e}"))
    };
    let usize_ = |x: usize| i128::try_from(x).unwrap();
    assert_eq!(define("OSPREY_COMM_LEN"), usize_(abi::COMM_LEN), "COMM_LEN");
    assert_eq!(define("OSPREY_PATH_MAX"), usize_(abi::PATH_MAX), "PATH_MAX");
    assert_eq!(define("OSPREY_ARGS_MAX"), usize_(abi::ARGS_MAX), "ARGS_MAX");
    assert_eq!(
        define("OSPREY_MAX_KINDS"),
        i128::from(abi::MAX_KINDS),
        "MAX_KINDS"
    );
}
