//! Collects a profile while it runs: reads the kernel's count map periodically to capture
//! the maps of new processes (so they can be symbolized after they exit); unwinds user
//! stacks as they arrive (frame-pointer walks with their first frame fixed, copied windows
//! with DWARF), choosing per process in auto mode; at the end turns stack ids into
//! symbolized, aggregated stacks.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap};

use super::auto::{self, AutoUnwind, DwarfEnd, Unwinder};
use super::frame::{CodeAddr, Frame};
use super::procmaps::ProcessMaps;
use super::symbolize::Symbolizer;
use super::unwind::{DwarfUnwinder, StackCopy};
use super::{
    BinaryUnwinder, Losses, Profile, ProfileKind, ProfileOptions, StackSample, UserStack,
    LEAF_BYTES, MAX_STACK_WINDOW,
};
use crate::abi::{profile_error as perr, ProfileKey, COMM_LEN};
use crate::kernel::loader::{LoadError, LoadedCapability};
use crate::pipeline::event::Header;
use crate::pipeline::text::until_nul;

/// How often the count map is scanned for new processes.
const SCAN_EVERY: Duration = Duration::from_millis(100);
/// DWARF samples of a process looked at before deciding whether its window is too small.
const WINDOW_DECIDE_AFTER: u64 = 8;

/// The user stack window of one process unwound with DWARF, and how it has fared.
#[derive(Debug, Clone, Copy)]
struct Window {
    bytes: u32,
    /// Samples since the window last changed, and how many of them it cut.
    samples: u64,
    cut: u64,
}

/// (pid, comm, kernel stack id, user frames (None: lost), unwinder) of event samples.
type UserKey = (u32, [u8; COMM_LEN], i32, Option<Vec<CodeAddr>>, Unwinder);

pub struct Collector {
    options: ProfileOptions,
    counts: BpfHashMap<MapData, ProfileKey, u64>,
    stacks: StackTraceMap<MapData>,
    errors: PerCpuArray<MapData, u64>,
    /// pid → bytes of user stack the kernel copies per sample.
    dwarf_pids: BpfHashMap<MapData, u32, u32>,
    windows: HashMap<u32, Window>,
    cut_by_window: u64,
    /// Keys of the count map already seen.
    seen_keys: HashSet<ProfileKey>,
    pub maps: ProcessMaps,
    unwinder: DwarfUnwinder,
    user_counts: HashMap<UserKey, u64>,
    /// Frame-pointer walks read from the stack map, by id.
    fp_stacks: HashMap<i32, Option<Vec<u64>>>,
    pub auto: AutoUnwind,
    last_scan: Option<Instant>,
    scan_every: Duration,
    /// Samples counted so far (approximate while running: the last scan's view).
    pub samples_seen: u64,
}

fn map_error(cap: &LoadedCapability, what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Map {
        capability: cap.spec.name,
        reason: format!("{what}: {e}"),
    }
}

impl Collector {
    pub fn new(cap: &mut LoadedCapability, options: ProfileOptions) -> Result<Self, LoadError> {
        let counts_name = match options.kind {
            ProfileKind::Cpu => "profile_counts",
            ProfileKind::OffCpu => "offcpu_times",
        };
        let counts = BpfHashMap::try_from(cap.take_map(counts_name)?)
            .map_err(|e| map_error(cap, counts_name, e))?;
        let stacks = StackTraceMap::try_from(cap.take_map("profile_stacks")?)
            .map_err(|e| map_error(cap, "profile_stacks", e))?;
        let errors = PerCpuArray::try_from(cap.take_map("profile_errors")?)
            .map_err(|e| map_error(cap, "profile_errors", e))?;
        let dwarf_pids = BpfHashMap::try_from(cap.take_map("dwarf_pids")?)
            .map_err(|e| map_error(cap, "dwarf_pids", e))?;
        let mut pids: BpfHashMap<MapData, u32, u8> =
            BpfHashMap::try_from(cap.take_map("profile_pids")?)
                .map_err(|e| map_error(cap, "profile_pids", e))?;
        let mut maps = ProcessMaps::default();
        for &pid in &options.pids {
            pids.insert(pid, 1, 0)
                .map_err(|e| map_error(cap, "profile_pids", e))?;
            maps.observe(pid);
        }
        Ok(Self {
            options,
            counts,
            stacks,
            errors,
            dwarf_pids,
            windows: HashMap::new(),
            cut_by_window: 0,
            seen_keys: HashSet::new(),
            maps,
            unwinder: DwarfUnwinder::default(),
            user_counts: HashMap::new(),
            fp_stacks: HashMap::new(),
            auto: AutoUnwind::default(),
            last_scan: None,
            scan_every: SCAN_EVERY,
            samples_seen: 0,
        })
    }

    /// How often `tick` scans the count map (default 100 ms); a long-running profiler at a
    /// low frequency scans less often to stay cheap.
    pub fn set_scan_interval(&mut self, every: Duration) {
        self.scan_every = every;
    }

    /// Periodic work between ring drains; cheap when called more often than SCAN_EVERY.
    pub fn tick(&mut self) {
        if self
            .last_scan
            .is_some_and(|t| t.elapsed() < self.scan_every)
        {
            return;
        }
        self.last_scan = Some(Instant::now());
        let mut total = 0;
        for (key, value) in self.counts.iter().filter_map(Result::ok) {
            total += value;
            if self.seen_keys.insert(key) {
                self.maps.observe(key.pid);
            }
        }
        self.samples_seen = self.user_counts.values().sum::<u64>() + total;
    }

    /// Tells the kernel how much stack to copy for `pid`.
    fn set_window(&mut self, pid: u32, bytes: u32) -> bool {
        if self.dwarf_pids.insert(pid, bytes, 0).is_err() {
            return false;
        }
        self.windows.insert(
            pid,
            Window {
                bytes,
                samples: 0,
                cut: 0,
            },
        );
        true
    }

    /// Doubles the window of a process when a quarter of its stacks did not fit: deep
    /// stacks (a big future on main's stack, deep recursion) otherwise stop early.
    fn judge_window(&mut self, pid: u32, copied: usize, cut: bool) {
        let window = self.windows.entry(pid).or_insert(Window {
            bytes: self.options.user_stack_bytes,
            samples: 0,
            cut: 0,
        });
        window.samples += 1;
        // A copy shorter than the window reached the top of the stack: nothing more to get.
        if cut && copied >= window.bytes as usize {
            window.cut += 1;
            self.cut_by_window += 1;
        }
        let (bytes, samples, cut) = (window.bytes, window.samples, window.cut);
        if samples >= WINDOW_DECIDE_AFTER && bytes < MAX_STACK_WINDOW {
            if cut * 4 > samples {
                self.set_window(pid, (bytes * 2).min(MAX_STACK_WINDOW));
            } else if let Some(w) = self.windows.get_mut(&pid) {
                // Judge the recent past only.
                w.samples /= 2;
                w.cut /= 2;
            }
        }
    }

    pub fn on_user_stack(&mut self, header: &Header, sample: &UserStack) {
        let pid = header.pid;
        self.maps.observe(pid);
        let copy = StackCopy {
            ip: sample.ip,
            sp: sample.sp,
            bp: sample.bp,
            stack: &sample.stack,
        };
        let fp = self
            .fp_stack(sample.user_stack)
            .map(|walk| self.unwinder.fix_first_frame(pid, &self.maps, &copy, &walk));
        let (frames, unwinder) = if sample.stack.len() > LEAF_BYTES as usize {
            let (dwarf, end) = self.unwinder.unwind(pid, &self.maps, &copy);
            self.judge_window(pid, sample.stack.len(), end == DwarfEnd::Cut);
            match fp {
                Some(fp) => self.judge_auto(pid, fp, dwarf, end),
                None => (Some(dwarf), Unwinder::Dwarf),
            }
        } else {
            (fp, Unwinder::FramePointer)
        };
        let mut comm = [0u8; COMM_LEN];
        let n = header.comm.len().min(COMM_LEN);
        comm[..n].copy_from_slice(&header.comm[..n]);
        *self
            .user_counts
            .entry((pid, comm, sample.kernel_stack, frames, unwinder))
            .or_default() += 1;
    }

    /// A sample of a process under trial (auto): both unwinds compared, the DWARF one kept
    /// (or the frame-pointer one where DWARF stopped short). Once decided, the kernel is
    /// told what to copy from then on.
    fn judge_auto(
        &mut self,
        pid: u32,
        fp: Vec<CodeAddr>,
        dwarf: Vec<CodeAddr>,
        end: DwarfEnd,
    ) -> (Option<Vec<CodeAddr>>, Unwinder) {
        let agreement = auto::agree(&fp, &dwarf, end);
        match self.auto.judge(pid, agreement) {
            Some(Unwinder::FramePointer) => {
                let _ = self.dwarf_pids.insert(pid, LEAF_BYTES, 0);
                self.windows.remove(&pid);
            }
            Some(Unwinder::Dwarf) => {
                // In the map, the kernel stops walking frame pointers for it.
                let bytes = self
                    .windows
                    .get(&pid)
                    .map_or(self.options.user_stack_bytes, |w| w.bytes);
                let _ = self.dwarf_pids.insert(pid, bytes, 0);
            }
            None => {}
        }
        if agreement.is_none() && fp.len() > dwarf.len() {
            (Some(fp), Unwinder::FramePointer)
        } else {
            (Some(dwarf), Unwinder::Dwarf)
        }
    }

    /// The kernel's frame-pointer walk with id `id`, read once per id.
    fn fp_stack(&mut self, id: i32) -> Option<Vec<u64>> {
        if id < 0 {
            return None;
        }
        let stacks = &self.stacks;
        self.fp_stacks
            .entry(id)
            .or_insert_with(|| {
                let trace = stacks.get(&(id as u32), 0).ok()?;
                Some(trace.frames().iter().map(|f| f.ip).collect())
            })
            .clone()
    }

    fn stack(&self, id: i32) -> Option<Vec<CodeAddr>> {
        if id < 0 {
            return None;
        }
        let trace = self.stacks.get(&(id as u32), 0).ok()?;
        Some(
            trace
                .frames()
                .iter()
                .enumerate()
                .map(|(i, f)| CodeAddr {
                    addr: f.ip,
                    is_return: i > 0,
                })
                .collect(),
        )
    }

    /// Samples the kernel could not count because the count map was full.
    pub fn count_map_full(&self) -> u64 {
        self.errors
            .get(&perr::COUNTS_FULL, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    fn losses(&self, ring_dropped: u64) -> Losses {
        let slot = |s: u32| -> u64 { self.errors.get(&s, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        Losses {
            kernel_stack_collisions: slot(perr::KERNEL_COLLISION),
            kernel_stack_faults: slot(perr::KERNEL_FAULT),
            kernel_stack_map_full: slot(perr::KERNEL_NOMEM),
            user_stack_collisions: slot(perr::USER_COLLISION),
            user_stack_faults: slot(perr::USER_FAULT),
            user_stack_map_full: slot(perr::USER_NOMEM),
            count_map_full: slot(perr::COUNTS_FULL),
            user_stack_copies_short: slot(perr::STACK_COPY_SHORT),
            ring_dropped,
            dwarf_unwind_failures: self.unwinder.failed,
            dwarf_stacks_cut_by_window: self.cut_by_window,
            processes_gone_before_maps: self.maps.missed,
        }
    }

    /// Reads the final counts and builds the symbolized profile.
    pub fn finish(mut self, command: String, duration_secs: f64, ring_dropped: u64) -> Profile {
        self.last_scan = None;
        self.tick();
        let losses = self.losses(ring_dropped);
        let samples = self.read_samples(false);
        RawProfile {
            samples,
            maps: self.maps,
            options: self.options,
            losses,
        }
        .symbolize(command, duration_secs, true)
    }

    /// Everything counted since the last call, removed from the kernel's maps so that the
    /// next interval starts empty (continuous profiling). Samples counted between the read
    /// and the removal of their entry are lost (a window of microseconds). Symbolizing the
    /// result may happen on another thread.
    pub fn take_interval(&mut self, ring_dropped: u64) -> RawProfile {
        self.last_scan = None;
        self.tick();
        let losses = self.losses(ring_dropped);
        let samples = self.read_samples(true);
        self.seen_keys.clear();
        RawProfile {
            samples,
            // Processes still running are looked at again when they are next sampled.
            maps: std::mem::take(&mut self.maps),
            options: self.options.clone(),
            losses,
        }
    }

    /// Stack ids resolved to addresses; with `reset`, the entries read are deleted.
    fn read_samples(&mut self, reset: bool) -> Vec<RawSample> {
        let mut raw: Vec<RawSample> = Vec::new();
        let entries: Vec<(ProfileKey, u64)> = self.counts.iter().filter_map(Result::ok).collect();
        let mut stack_ids = HashSet::new();
        for (key, value) in &entries {
            raw.push(RawSample {
                pid: key.pid,
                comm: String::from_utf8_lossy(until_nul(&key.comm)).into_owned(),
                kernel: Stack::from_id(key.kernel_stack, self.stack(key.kernel_stack)),
                user: Stack::from_id(key.user_stack, self.stack(key.user_stack)),
                unwinder: (key.user_stack >= 0).then_some(Unwinder::FramePointer),
                value: *value,
            });
            stack_ids.extend([key.kernel_stack, key.user_stack]);
        }
        for ((pid, comm, kernel_id, user, unwinder), value) in std::mem::take(&mut self.user_counts)
        {
            raw.push(RawSample {
                pid,
                comm: String::from_utf8_lossy(until_nul(&comm)).into_owned(),
                kernel: Stack::from_id(kernel_id, self.stack(kernel_id)),
                user: user.map_or(Stack::Lost, Stack::Addrs),
                unwinder: Some(unwinder),
                value,
            });
            stack_ids.insert(kernel_id);
        }
        if reset {
            stack_ids.extend(self.fp_stacks.drain().map(|(id, _)| id));
            for (key, _) in &entries {
                let _ = self.counts.remove(key);
            }
            for id in stack_ids.into_iter().filter(|id| *id >= 0) {
                let _ = self.stacks.remove(&(id as u32));
            }
        }
        raw
    }
}

/// One aggregated row read from the kernel or built from events.
struct RawSample {
    pid: u32,
    comm: String,
    kernel: Stack,
    user: Stack,
    /// None: no user stack.
    unwinder: Option<Unwinder>,
    value: u64,
}

/// Samples read from the kernel with the process maps they need, not yet symbolized.
pub struct RawProfile {
    samples: Vec<RawSample>,
    maps: ProcessMaps,
    options: ProfileOptions,
    pub losses: Losses,
}

impl RawProfile {
    pub fn total(&self) -> u64 {
        self.samples.iter().map(|s| s.value).sum()
    }

    /// Symbolizes (with file and line from DWARF when `code_info`) and aggregates.
    pub fn symbolize(self, command: String, duration_secs: f64, code_info: bool) -> Profile {
        self.symbolize_with(
            command,
            duration_secs,
            &mut Symbolizer::with_code_info(code_info),
        )
    }

    /// Like `symbolize`, through a given symbolizer (one that carries a frame cache).
    pub fn symbolize_with(
        self,
        command: String,
        duration_secs: f64,
        symbolizer: &mut Symbolizer,
    ) -> Profile {
        let RawProfile {
            samples: raw,
            maps,
            options,
            losses,
        } = self;
        let mut kernel_addrs: Vec<CodeAddr> = raw
            .iter()
            .flat_map(|r| r.kernel.addrs().iter().copied())
            .collect();
        kernel_addrs.sort();
        kernel_addrs.dedup();
        let kernel_frames: HashMap<CodeAddr, Frame> = kernel_addrs
            .iter()
            .copied()
            .zip(symbolizer.kernel(&kernel_addrs))
            .collect();
        let mut user_addrs: HashMap<u32, Vec<CodeAddr>> = HashMap::new();
        for r in &raw {
            user_addrs.entry(r.pid).or_default().extend(r.user.addrs());
        }
        let mut user_frames: HashMap<(u32, CodeAddr), Frame> = HashMap::new();
        for (pid, mut addrs) in user_addrs {
            addrs.sort();
            addrs.dedup();
            let frames = symbolizer.user(pid, &maps, &addrs);
            user_frames.extend(addrs.into_iter().map(|a| (pid, a)).zip(frames));
        }

        let mut merged: HashMap<(u32, String, Vec<Frame>, Option<Unwinder>), u64> = HashMap::new();
        for r in raw {
            let mut frames: Vec<Frame> = Vec::new();
            r.user
                .push_frames(&mut frames, false, |a| user_frames[&(r.pid, a)].clone());
            let user_frames_end = frames.len();
            r.kernel
                .push_frames(&mut frames, true, |a| kernel_frames[&a].clone());
            if options.kind == ProfileKind::OffCpu {
                trim_switch(&mut frames, user_frames_end);
            }
            *merged
                .entry((r.pid, r.comm, frames, r.unwinder))
                .or_default() += r.value;
        }
        let mut stacks: Vec<StackSample> = merged
            .into_iter()
            .map(|((pid, comm, frames, unwinder), value)| StackSample {
                pid,
                comm,
                frames,
                unwinder,
                value,
            })
            .collect();
        stacks.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.frames.cmp(&b.frames)));
        let unwinders = binary_unwinders(&stacks);
        let total = stacks.iter().map(|s| s.value).sum();
        Profile {
            kind: options.kind,
            command,
            duration_secs,
            frequency_hz: options.frequency_hz,
            unwind: options.unwind,
            total,
            unit: match options.kind {
                ProfileKind::Cpu => "samples",
                ProfileKind::OffCpu => "nanoseconds",
            },
            losses,
            unwinders,
            stacks,
        }
    }
}

/// Per binary with user frames, the unwinders its samples went through.
fn binary_unwinders(stacks: &[StackSample]) -> Vec<BinaryUnwinder> {
    let mut by: HashMap<(&str, Unwinder), u64> = HashMap::new();
    for s in stacks {
        let Some(unwinder) = s.unwinder else { continue };
        let mut modules: Vec<&str> = s
            .frames
            .iter()
            .filter(|f| !f.kernel && f.module.starts_with('/'))
            .map(|f| f.module.as_str())
            .collect();
        modules.sort_unstable();
        modules.dedup();
        for m in modules {
            *by.entry((m, unwinder)).or_default() += s.value;
        }
    }
    let mut out: Vec<BinaryUnwinder> = by
        .into_iter()
        .map(|((binary, unwinder), samples)| BinaryUnwinder {
            binary: binary.to_string(),
            unwinder,
            samples,
        })
        .collect();
    out.sort_by(|a, b| (&a.binary, a.unwinder).cmp(&(&b.binary, b.unwinder)));
    out
}

/// Off-CPU stacks are taken inside the scheduler by Osprey's own program: the kernel
/// frames inside the switch (`__schedule`'s callees: the tracepoint, `bpf_trace_run*`,
/// the program) are dropped, so stacks end in the function that blocked the task.
fn trim_switch(frames: &mut Vec<Frame>, user_end: usize) {
    let kernel = &frames[user_end..];
    if let Some(at) = kernel.iter().rposition(|f| f.name == "__schedule") {
        frames.truncate(user_end + at + 1);
        return;
    }
    while frames
        .last()
        .is_some_and(|f| f.kernel && (is_bpf_frame(&f.name) || !f.is_named()))
    {
        frames.pop();
    }
}

fn is_bpf_frame(name: &str) -> bool {
    name.starts_with("bpf_prog_")
        || name.starts_with("bpf_trace_run")
        || name.starts_with("__bpf_trace")
}

/// One side (kernel or user) of a sampled stack.
enum Stack {
    NotCollected,
    /// bpf_get_stackid failed (counted in the losses).
    Lost,
    Addrs(Vec<CodeAddr>),
}

impl Stack {
    fn from_id(id: i32, addrs: Option<Vec<CodeAddr>>) -> Self {
        match addrs {
            Some(a) => Stack::Addrs(a),
            None if id == -1 => Stack::NotCollected,
            None => Stack::Lost,
        }
    }

    fn addrs(&self) -> &[CodeAddr] {
        match self {
            Stack::Addrs(a) => a,
            _ => &[],
        }
    }

    /// Appends outermost first.
    fn push_frames(&self, out: &mut Vec<Frame>, kernel: bool, frame: impl Fn(CodeAddr) -> Frame) {
        match self {
            Stack::NotCollected => {}
            Stack::Lost => out.push(Frame {
                name: if kernel {
                    "[kernel stack lost]".into()
                } else {
                    "[user stack lost]".into()
                },
                module: "[unknown]".into(),
                file: None,
                line: None,
                kernel,
            }),
            Stack::Addrs(addrs) => out.extend(addrs.iter().rev().map(|&a| frame(a))),
        }
    }
}
