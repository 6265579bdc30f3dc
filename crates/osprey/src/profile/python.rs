//! CPython frames in native stacks. For a process running CPython 3.11, the kernel program
//! reads the interpreter's frame chain at each sample (the thread state current in the
//! runtime, when it is the sampled thread's: the thread holding the GIL) and sends, per
//! Python frame, its code object and last instruction. Code objects are immutable: their
//! name, file and line table are read once from /proc/PID/mem (the process is neither
//! stopped nor traced). Each native `_PyEval_EvalFrameDefault` frame is replaced by the
//! Python frames it runs: up to and including the frame entered from C.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

use super::frame::{CodeAddr, Frame, RawFrame};
use super::procmaps::{Mapping, ProcessMaps};
use crate::abi::PyProc;

/// Field offsets of CPython 3.11 on x86-64 (PyThreadState, _PyCFrame,
/// _PyInterpreterFrame), checked against Debian's python3.11.
const PY311: PyProc = PyProc {
    tstate_addr: 0,
    ts_cframe: 56,
    ts_native_tid: 160,
    cframe_frame: 8,
    frame_code: 32,
    frame_previous: 48,
    frame_instr: 56,
    frame_entry: 68,
    _pad: 0,
};
/// PyCodeObject 3.11: co_firstlineno, co_filename, co_qualname, co_linetable and the
/// start of the instructions (co_code_adaptive).
const CODE_FIRSTLINENO: u64 = 72;
const CODE_FILENAME: u64 = 112;
const CODE_QUALNAME: u64 = 128;
const CODE_LINETABLE: u64 = 136;
const CODE_INSTRUCTIONS: u64 = 184;
/// Compact ASCII str data, and bytes: size and data.
const ASCII_STATE: u64 = 32;
const ASCII_DATA: u64 = 48;
const BYTES_SIZE: u64 = 16;
const BYTES_DATA: u64 = 32;
const MAX_LINETABLE: u64 = 1 << 20;

/// One CPython process: where the kernel finds its frames, and its eval loop's code.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub config: PyProc,
    pub eval: std::ops::Range<u64>,
}

struct Code {
    name: String,
    file: String,
    first_line: u32,
    linetable: Vec<u8>,
}

/// Interpreters found and code objects read, per process.
#[derive(Default)]
pub struct Python {
    interpreters: HashMap<u32, Option<Interpreter>>,
    codes: HashMap<(u32, u64), Option<Arc<Code>>>,
}

impl Python {
    /// Looks for the interpreter of `pid` (a CPython 3.11 binary or library mapped) the
    /// first time the process is seen: what the kernel needs to read its frames, if found.
    pub fn discover(&mut self, pid: u32, maps: &ProcessMaps) -> Option<PyProc> {
        if self.interpreters.contains_key(&pid) {
            return None;
        }
        let found = find_interpreter(maps.get(pid));
        let config = found.as_ref().map(|i| i.config);
        self.interpreters.insert(pid, found);
        config
    }

    /// Native frames (innermost first) with each eval loop frame replaced by the Python
    /// frames (`(code | entered_from_c, instr)`, innermost first) it runs.
    pub fn interleave(
        &mut self,
        pid: u32,
        native: Vec<CodeAddr>,
        py: &[(u64, u64)],
    ) -> Vec<RawFrame> {
        let Some(eval) = self
            .interpreters
            .get(&pid)
            .and_then(|i| i.as_ref())
            .map(|i| i.eval.clone())
        else {
            return native.into_iter().map(RawFrame::Native).collect();
        };
        let mut out = Vec::with_capacity(native.len() + py.len());
        let mut next = 0;
        for a in native {
            if !eval.contains(&a.lookup()) || next >= py.len() {
                out.push(RawFrame::Native(a));
                continue;
            }
            while let Some(&(code, instr)) = py.get(next) {
                next += 1;
                if let Some(f) = self.frame(pid, code & !1, instr) {
                    out.push(RawFrame::Python(f));
                }
                if code & 1 != 0 {
                    break;
                }
            }
        }
        out
    }

    fn frame(&mut self, pid: u32, code_addr: u64, instr: u64) -> Option<Arc<Frame>> {
        let code = self
            .codes
            .entry((pid, code_addr))
            .or_insert_with(|| read_code(pid, code_addr).map(Arc::new))
            .clone()?;
        let index = instr.checked_sub(code_addr + CODE_INSTRUCTIONS)? / 2;
        Some(Arc::new(Frame {
            name: code.name.clone(),
            module: "[python]".into(),
            file: Some(code.file.clone()),
            line: line_of(&code.linetable, code.first_line, index),
            kernel: false,
        }))
    }

    /// Forgets everything read of a process.
    pub fn forget(&mut self, pid: u32) {
        self.interpreters.remove(&pid);
        self.codes.retain(|(p, _), _| *p != pid);
    }
}

fn find_interpreter(maps: &[Mapping]) -> Option<Interpreter> {
    let m = maps.iter().find(|m| is_python311(&m.path))?;
    let data = std::fs::read(&m.path).ok()?;
    let elf = object::File::parse(&data[..]).ok()?;
    let symbol = |name: &str| {
        elf.dynamic_symbols()
            .chain(elf.symbols())
            .find(|s| s.name() == Ok(name))
            .map(|s| (s.address(), s.size()))
    };
    let (get, _) = symbol("_PyThreadState_UncheckedGet")?;
    let (eval, eval_size) = symbol("_PyEval_EvalFrameDefault")?;
    // `mov rax, [rip + disp32]; ret`: the address of the current thread state pointer.
    let code = file_bytes(&elf, &data, get, 8)?;
    if code[..3] != [0x48, 0x8b, 0x05] || code[7] != 0xc3 {
        return None;
    }
    let disp = i32::from_le_bytes(code[3..7].try_into().ok()?);
    let tstate_vaddr = get.wrapping_add(7).wrapping_add_signed(i64::from(disp));
    let bias = load_bias(&elf, maps.iter().filter(|x| x.path == m.path), eval)?;
    Some(Interpreter {
        config: PyProc {
            tstate_addr: tstate_vaddr.wrapping_add(bias),
            ..PY311
        },
        eval: eval.wrapping_add(bias)..eval.wrapping_add(bias + eval_size),
    })
}

fn is_python311(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "python3.11" || n.starts_with("libpython3.11"))
}

/// `len` bytes of the file at virtual address `vaddr`.
fn file_bytes<'a>(
    elf: &object::File<'_>,
    data: &'a [u8],
    vaddr: u64,
    len: u64,
) -> Option<&'a [u8]> {
    elf.segments().find_map(|s| {
        let (off, size) = s.file_range();
        let at = vaddr.checked_sub(s.address())?;
        (at + len <= size).then_some(())?;
        data.get(usize::try_from(off + at).ok()?..usize::try_from(off + at + len).ok()?)
    })
}

/// Load bias of the ELF in the process, from the mapping holding the code at `vaddr`.
fn load_bias<'m>(
    elf: &object::File<'_>,
    mut mappings: impl Iterator<Item = &'m Mapping>,
    vaddr: u64,
) -> Option<u64> {
    let file_offset = elf.segments().find_map(|s| {
        let (off, size) = s.file_range();
        let at = vaddr.checked_sub(s.address())?;
        (at < size).then_some(off + at)
    })?;
    let m = mappings.find(|m| (m.offset..m.offset + (m.end - m.start)).contains(&file_offset))?;
    Some((m.start + (file_offset - m.offset)).wrapping_sub(vaddr))
}

struct Memory(std::fs::File);

impl Memory {
    fn bytes(&self, addr: u64, len: u64) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        self.0.read_exact_at(&mut buf, addr).ok()?;
        Some(buf)
    }

    fn u64(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(addr, 8)?.try_into().ok()?))
    }

    /// A str object's text (compact ASCII only; others are named by their address).
    fn ascii(&self, obj: u64) -> Option<String> {
        let state = self.u64(obj + ASCII_STATE)?;
        let len = self.u64(obj + 16)?;
        // state bits: interned (2), kind (3), compact (1), ascii (1).
        let compact_ascii = state & (1 << 5) != 0 && state & (1 << 6) != 0;
        if !compact_ascii || len > 4096 {
            return Some(format!("[str 0x{obj:x}]"));
        }
        String::from_utf8(self.bytes(obj + ASCII_DATA, len)?).ok()
    }
}

fn read_code(pid: u32, addr: u64) -> Option<Code> {
    let mem = Memory(std::fs::File::open(format!("/proc/{pid}/mem")).ok()?);
    let linetable = mem.u64(addr + CODE_LINETABLE)?;
    let table_len = mem.u64(linetable + BYTES_SIZE)?.min(MAX_LINETABLE);
    Some(Code {
        name: mem.ascii(mem.u64(addr + CODE_QUALNAME)?)?,
        file: mem.ascii(mem.u64(addr + CODE_FILENAME)?)?,
        first_line: mem.u64(addr + CODE_FIRSTLINENO)? as u32,
        linetable: mem.bytes(linetable + BYTES_DATA, table_len)?,
    })
}

/// The source line of instruction `index` from a 3.11 location table (entries of a
/// header byte: 1, code (4 bits), length - 1 (3 bits); then per code a line delta and
/// columns as 6-bit varints).
pub fn line_of(table: &[u8], first_line: u32, index: u64) -> Option<u32> {
    let mut bytes = table.iter().copied();
    let varint = |bytes: &mut dyn Iterator<Item = u8>| -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let b = bytes.next()?;
            value |= u64::from(b & 63) << shift;
            shift += 6;
            if b & 64 == 0 || shift > 60 {
                return Some(value);
            }
        }
    };
    let mut line = i64::from(first_line);
    let mut at = 0u64;
    while let Some(header) = bytes.next() {
        let code = (header >> 3) & 15;
        let len = u64::from(header & 7) + 1;
        let delta = match code {
            15 => None,
            14 => {
                let v = varint(&mut bytes)?;
                for _ in 0..3 {
                    varint(&mut bytes)?;
                }
                Some(signed(v))
            }
            13 => Some(signed(varint(&mut bytes)?)),
            10..=12 => {
                bytes.next()?;
                bytes.next()?;
                Some(i64::from(code) - 10)
            }
            _ => {
                bytes.next()?;
                Some(0)
            }
        };
        if let Some(d) = delta {
            line += d;
        }
        if (at..at + len).contains(&index) {
            return delta.and_then(|_| u32::try_from(line).ok());
        }
        at += len;
    }
    None
}

fn signed(v: u64) -> i64 {
    if v & 1 != 0 {
        -((v >> 1) as i64)
    } else {
        (v >> 1) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_table_lines() {
        // Two units at the first line (short form), three one line later (one-line form,
        // delta 1), one without location, two at line - 2 (no-column form, svarint 5).
        let table = [
            0x80 | 1,
            0,
            0x80 | (11 << 3) | 2,
            0,
            4,
            0x80 | (15 << 3),
            0x80 | (13 << 3) | 1,
            5,
        ];
        assert_eq!(line_of(&table, 10, 0), Some(10));
        assert_eq!(line_of(&table, 10, 1), Some(10));
        assert_eq!(line_of(&table, 10, 4), Some(11));
        assert_eq!(line_of(&table, 10, 5), None);
        assert_eq!(line_of(&table, 10, 6), Some(9));
        assert_eq!(line_of(&table, 10, 9), None);
    }
}
