//! User-space unwinding with framehop, from the .eh_frame / .eh_frame_hdr CFI of the
//! binaries mapped in the process: whole copied stacks (DWARF unwinding), and the first
//! frame of frame-pointer stacks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use super::auto::DwarfEnd;
use super::frame::CodeAddr;
use super::procmaps::{Mapping, ProcessMaps};

const MAX_FRAMES: usize = 128;

/// A section of a memory-mapped binary. Mapping instead of reading keeps the cost of a
/// big library (rustc's is hundreds of MB) to the few pages of CFI an unwind touches.
#[derive(Clone)]
pub struct Data {
    file: Arc<memmap2::Mmap>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.file[self.range.clone()]
    }
}

/// What framehop needs of one binary, read once per path.
#[derive(Clone)]
struct ElfUnwindInfo {
    text_svma: Option<std::ops::Range<u64>>,
    text: Option<Data>,
    eh_frame_svma: Option<std::ops::Range<u64>>,
    eh_frame: Option<Data>,
    eh_frame_hdr_svma: Option<std::ops::Range<u64>>,
    eh_frame_hdr: Option<Data>,
    debug_frame: Option<Data>,
    /// Executable PT_LOAD segments as (file offset, file size, vaddr), for the load bias.
    exec_segments: Vec<(u64, u64, u64)>,
}

fn read_elf(path: &Path) -> Option<ElfUnwindInfo> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: a read-only private mapping of a binary some process runs; binaries are
    // replaced by rename, not rewritten in place, so the bytes stay as mapped.
    let mapped = Arc::new(unsafe { memmap2::Mmap::map(&file) }.ok()?);
    let elf = object::File::parse(&mapped[..]).ok()?;
    let section = |name: &str| {
        let s = elf.section_by_name(name)?;
        let (offset, size) = s.file_range()?;
        let data = Data {
            file: mapped.clone(),
            range: usize::try_from(offset).ok()?..usize::try_from(offset + size).ok()?,
        };
        (data.range.end <= mapped.len()).then_some(())?;
        Some((s.address()..s.address() + s.size(), data))
    };
    let (text_svma, text) = section(".text").unzip();
    let (eh_frame_svma, eh_frame) = section(".eh_frame").unzip();
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr").unzip();
    let debug_frame = section(".debug_frame").map(|(_, d)| d);
    let exec_segments = elf
        .segments()
        .filter(|s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0))
        .map(|s| {
            let (off, size) = s.file_range();
            (off, size, s.address())
        })
        .collect();
    Some(ElfUnwindInfo {
        text_svma,
        text,
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        debug_frame,
        exec_segments,
    })
}

impl ElfUnwindInfo {
    /// Address where svma 0 of the file lies in the process, from the mapping of `m`.
    /// Mappings start at page boundaries, segments need not: match by page.
    fn base_avma(&self, m: &Mapping) -> u64 {
        self.exec_segments
            .iter()
            .find(|&&(off, size, _)| (off & !0xfff..off + size.max(1)).contains(&m.offset))
            .map(|&(off, _, vaddr)| {
                m.start
                    .wrapping_sub(m.offset)
                    .wrapping_add(off)
                    .wrapping_sub(vaddr)
            })
            .unwrap_or(m.start.wrapping_sub(m.offset))
    }

    fn module(&self, m: &Mapping) -> Module<Data> {
        Module::new(
            m.path.display().to_string(),
            m.start..m.end,
            self.base_avma(m),
            ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: self.text_svma.clone(),
                text: self.text.clone(),
                eh_frame_svma: self.eh_frame_svma.clone(),
                eh_frame: self.eh_frame.clone(),
                eh_frame_hdr_svma: self.eh_frame_hdr_svma.clone(),
                eh_frame_hdr: self.eh_frame_hdr.clone(),
                debug_frame: self.debug_frame.clone(),
                stubs_svma: None,
                stub_helper_svma: None,
                got_svma: None,
                unwind_info: None,
                text_segment_svma: None,
                text_segment: None,
            },
        )
    }
}

/// Unwinders per process, built from the maps captured when the process was first seen.
#[derive(Default)]
pub struct DwarfUnwinder {
    elves: HashMap<PathBuf, Option<ElfUnwindInfo>>,
    processes: HashMap<u32, UnwinderX86_64<Data>>,
    cache: Option<Box<CacheX86_64>>,
    pub failed: u64,
}

/// Registers and stack window of one sample.
pub struct StackCopy<'a> {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub stack: &'a [u8],
}

impl StackCopy<'_> {
    /// The word at `addr`, if the copy holds it.
    fn read(&self, addr: u64) -> Result<u64, ()> {
        let at = usize::try_from(addr.checked_sub(self.sp).ok_or(())?).map_err(|_| ())?;
        let bytes = self.stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
    }
}

impl DwarfUnwinder {
    fn unwinder(&mut self, pid: u32, maps: &ProcessMaps) -> &UnwinderX86_64<Data> {
        let elves = &mut self.elves;
        self.processes.entry(pid).or_insert_with(|| {
            let mut unwinder = UnwinderX86_64::new();
            for m in maps.get(pid) {
                let info = elves
                    .entry(m.path.clone())
                    .or_insert_with(|| read_elf(&m.path));
                if let Some(info) = info {
                    unwinder.add_module(info.module(m));
                }
            }
            unwinder
        })
    }

    /// Forgets a process (its pid may be reused by another program).
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// The kernel's frame-pointer walk `fp` (innermost first, `fp[0]` the sampled
    /// instruction) with its first frame checked against the CFI: where the sampled
    /// instruction has no frame set up (a frameless leaf, a prologue, an epilogue), the
    /// walk started at the caller's frame and skipped the caller; its return address,
    /// found through the CFI in the words copied at sp, is put back.
    pub fn fix_first_frame(
        &mut self,
        pid: u32,
        maps: &ProcessMaps,
        copy: &StackCopy<'_>,
        fp: &[u64],
    ) -> Vec<CodeAddr> {
        let mut frames: Vec<CodeAddr> = fp
            .iter()
            .enumerate()
            .map(|(i, &addr)| CodeAddr {
                addr,
                is_return: i > 0,
            })
            .collect();
        if fp.first() != Some(&copy.ip) {
            return frames;
        }
        let mut cache = self.cache.take().unwrap_or_default();
        let unwinder = self.unwinder(pid, maps);
        let mut read_stack = |addr: u64| copy.read(addr);
        let regs = UnwindRegsX86_64::new(copy.ip, copy.sp, copy.bp);
        let mut iter = unwinder.iter_frames(copy.ip, regs, &mut cache, &mut read_stack);
        let caller = match (iter.next(), iter.next()) {
            (Ok(Some(_)), Ok(Some(FrameAddress::ReturnAddress(ra)))) => Some(ra.get()),
            _ => None,
        };
        self.cache = Some(cache);
        // The same return address as the walk's: the frame was set up, nothing is missing.
        if let Some(ra) = caller.filter(|&ra| fp.get(1) != Some(&ra)) {
            frames.insert(
                1,
                CodeAddr {
                    addr: ra,
                    is_return: true,
                },
            );
        }
        frames
    }

    /// User frames, innermost first, and how the unwind ended.
    pub fn unwind(
        &mut self,
        pid: u32,
        maps: &ProcessMaps,
        copy: &StackCopy<'_>,
    ) -> (Vec<CodeAddr>, DwarfEnd) {
        let mut cache = self.cache.take().unwrap_or_default();
        let unwinder = self.unwinder(pid, maps);
        let end = copy.sp + copy.stack.len() as u64;
        let mut read_past_window = false;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            if addr >= end {
                read_past_window = true;
            }
            copy.read(addr)
        };
        let regs = UnwindRegsX86_64::new(copy.ip, copy.sp, copy.bp);
        let mut iter = unwinder.iter_frames(copy.ip, regs, &mut cache, &mut read_stack);
        let mut frames = Vec::new();
        let mut failed = false;
        while frames.len() < MAX_FRAMES {
            match iter.next() {
                Ok(Some(FrameAddress::InstructionPointer(ip))) => frames.push(CodeAddr {
                    addr: ip,
                    is_return: false,
                }),
                Ok(Some(FrameAddress::ReturnAddress(ra))) => frames.push(CodeAddr {
                    addr: ra.get(),
                    is_return: true,
                }),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        self.cache = Some(cache);
        if failed {
            self.failed += 1;
        }
        let end = match (failed, read_past_window) {
            (false, _) => DwarfEnd::Complete,
            (true, true) => DwarfEnd::Cut,
            (true, false) => DwarfEnd::Failed,
        };
        (frames, end)
    }
}
