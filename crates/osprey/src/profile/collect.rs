//! Collects a profile while it runs: reads the kernel's count map periodically to capture
//! the maps of new processes (so they can be symbolized after they exit); unwinds user
//! stacks as they arrive (frame-pointer walks with their first frame fixed, copied windows
//! with DWARF), choosing per process in auto mode; at the end turns stack ids into
//! symbolized, aggregated stacks.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap};

use super::auto::{self, AutoUnwind, DwarfEnd, Unwinder};
use super::frame::{CodeAddr, RawFrame};
use super::procmaps::ProcessMaps;
use super::python::Python;
use super::raw::{RawProfile, RawSample, Stack};
use super::unwind::{DwarfUnwinder, StackCopy};
use super::{
    Losses, Profile, ProfileKind, ProfileOptions, UserStack, LEAF_BYTES, MAX_STACK_WINDOW,
};
use crate::abi::{profile_error as perr, ProfileKey, COMM_LEN};
use crate::kernel::loader::{LoadError, LoadedCapability};
use crate::wire::text::until_nul;
use crate::wire::Header;

/// How often the count map is scanned for new processes. Samples with a user stack come
/// as events (their process's maps are captured then): the count map holds only kernel
/// threads and `--kernel-only` samples, which need no maps, or frame-pointer stacks
/// counted in the kernel when the first frame is not fixed (the agent sets its own pace).
const SCAN_EVERY: Duration = Duration::from_secs(1);
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
type UserKey = (u32, [u8; COMM_LEN], i32, Option<Vec<RawFrame>>, Unwinder);

pub struct Collector {
    options: ProfileOptions,
    counts: BpfHashMap<MapData, ProfileKey, u64>,
    stacks: StackTraceMap<MapData>,
    errors: PerCpuArray<MapData, u64>,
    /// pid → bytes of user stack the kernel copies per sample.
    dwarf_pids: BpfHashMap<MapData, u32, u32>,
    /// pid → where the kernel finds its CPython frame chain.
    py_procs: BpfHashMap<MapData, u32, crate::abi::PyProc>,
    python: Python,
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
        let py_procs = BpfHashMap::try_from(cap.take_map("py_procs")?)
            .map_err(|e| map_error(cap, "py_procs", e))?;
        let mut pids: BpfHashMap<MapData, u32, u8> =
            BpfHashMap::try_from(cap.take_map("profile_pids")?)
                .map_err(|e| map_error(cap, "profile_pids", e))?;
        let mut maps = ProcessMaps::default();
        for &pid in &options.pids {
            pids.insert(pid, 1, 0)
                .map_err(|e| map_error(cap, "profile_pids", e))?;
            maps.observe(pid);
            maps.cgroups.capture([pid]);
        }
        Ok(Self {
            options,
            counts,
            stacks,
            errors,
            dwarf_pids,
            py_procs,
            python: Python::default(),
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
                self.maps.cgroups.observe(key.pid, &key.comm);
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
        self.maps.cgroups.observe(pid, &header.comm);
        if self.options.python {
            if let Some(config) = self.python.discover(pid, &self.maps) {
                let _ = self.py_procs.insert(pid, config, 0);
            }
        }
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
        let frames = frames.map(|f| self.python.interleave(pid, f, &sample.py_frames));
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
