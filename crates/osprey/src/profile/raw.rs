//! A profile read from the kernel and the events, not yet symbolized: symbolizing names
//! the frames and aggregates the stacks.

use std::collections::HashMap;

use super::auto::Unwinder;
use super::frame::{CodeAddr, Frame, RawFrame};
use super::procmaps::ProcessMaps;
use super::symbolize::Symbolizer;
use super::{BinaryUnwinder, Losses, Profile, ProfileKind, ProfileOptions, StackSample};

/// One aggregated row read from the kernel or built from events.
pub(super) struct RawSample {
    pub(super) pid: u32,
    pub(super) comm: String,
    pub(super) kernel: Stack,
    pub(super) user: Stack,
    /// None: no user stack.
    pub(super) unwinder: Option<Unwinder>,
    pub(super) value: u64,
}

/// Samples read from the kernel with the process maps they need, not yet symbolized.
pub struct RawProfile {
    pub(super) samples: Vec<RawSample>,
    pub(super) maps: ProcessMaps,
    pub(super) options: ProfileOptions,
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
        let mut kernel_addrs: Vec<CodeAddr> = raw.iter().flat_map(|r| r.kernel.addrs()).collect();
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
                container: None,
            })
            .collect();
        let pids: std::collections::HashSet<u32> = stacks.iter().map(|s| s.pid).collect();
        let containers = crate::container::pids::tags_of(pids, CONTAINER_WAIT);
        for s in &mut stacks {
            s.container = containers.get(&s.pid).cloned();
        }
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

/// Longest wait for the runtimes to name the containers of the profiled processes.
const CONTAINER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
pub(super) enum Stack {
    NotCollected,
    /// bpf_get_stackid failed (counted in the losses).
    Lost,
    Addrs(Vec<RawFrame>),
}

impl Stack {
    pub(super) fn from_id(id: i32, addrs: Option<Vec<CodeAddr>>) -> Self {
        match addrs {
            Some(a) => Stack::Addrs(a.into_iter().map(RawFrame::Native).collect()),
            None if id == -1 => Stack::NotCollected,
            None => Stack::Lost,
        }
    }

    /// The native code addresses.
    fn addrs(&self) -> impl Iterator<Item = CodeAddr> + '_ {
        let frames: &[RawFrame] = match self {
            Stack::Addrs(a) => a,
            _ => &[],
        };
        frames.iter().filter_map(|f| match f {
            RawFrame::Native(a) => Some(*a),
            RawFrame::Python(_) => None,
        })
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
            Stack::Addrs(frames) => out.extend(frames.iter().rev().map(|f| match f {
                RawFrame::Native(a) => frame(*a),
                RawFrame::Python(named) => Frame::clone(named),
            })),
        }
    }
}
