//! A profile read from the kernel and the events, not yet symbolized: symbolizing names
//! the frames and aggregates the stacks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::auto::Unwinder;
use super::frame::{CodeAddr, Frame, RawFrame};
use super::procmaps::ProcessMaps;
use super::symbolize::Symbolizer;
use super::{BinaryUnwinder, Losses, Profile, ProfileKind, ProfileOptions, StackSample};
use crate::container::pids::{self, Tag};
use crate::container::Container;

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
    /// The processes' containers are named first (waiting at most `pids::WAIT` for the
    /// runtimes): samples the options' container filter leaves out are not symbolized.
    pub fn symbolize_with(
        self,
        command: String,
        duration_secs: f64,
        symbolizer: &mut Symbolizer,
    ) -> Profile {
        let sampled: HashSet<u32> = self.samples.iter().map(|s| s.pid).collect();
        let containers = self.maps.cgroups.containers(sampled, pids::WAIT);
        self.build(command, duration_secs, symbolizer, &containers)
    }

    /// Keeps the samples of the processes whose container (from `containers`, by pid; none:
    /// the host) the options' filter wants, symbolizes and aggregates them, each stack
    /// tagged with its container. Totals count only the stacks kept.
    fn build(
        self,
        command: String,
        duration_secs: f64,
        symbolizer: &mut Symbolizer,
        containers: &HashMap<u32, Arc<Container>>,
    ) -> Profile {
        let RawProfile {
            samples: mut raw,
            maps,
            options,
            losses,
        } = self;
        raw.retain(|r| options.containers.matches_pid(containers, r.pid));
        let (kernel_frames, user_frames) = name_addrs(&raw, &maps, symbolizer);
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
                container: containers.get(&pid).map(|c| Tag::of(c)),
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

/// Kernel frames by address and user frames by (pid, address).
type Names = (HashMap<CodeAddr, Frame>, HashMap<(u32, CodeAddr), Frame>);

/// The frames of every address of `raw`, each looked up once.
fn name_addrs(raw: &[RawSample], maps: &ProcessMaps, symbolizer: &mut Symbolizer) -> Names {
    let mut kernel_addrs: Vec<CodeAddr> = raw.iter().flat_map(|r| r.kernel.addrs()).collect();
    kernel_addrs.sort();
    kernel_addrs.dedup();
    let kernel_frames: HashMap<CodeAddr, Frame> = kernel_addrs
        .iter()
        .copied()
        .zip(symbolizer.kernel(&kernel_addrs))
        .collect();
    let mut user_addrs: HashMap<u32, Vec<CodeAddr>> = HashMap::new();
    for r in raw {
        user_addrs.entry(r.pid).or_default().extend(r.user.addrs());
    }
    let mut user_frames: HashMap<(u32, CodeAddr), Frame> = HashMap::new();
    for (pid, mut addrs) in user_addrs {
        addrs.sort();
        addrs.dedup();
        let frames = symbolizer.user(pid, maps, &addrs);
        user_frames.extend(addrs.into_iter().map(|a| (pid, a)).zip(frames));
    }
    (kernel_frames, user_frames)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::container::filter::ContainerFilter;
    use crate::container::metadata::{K8s, Metadata};
    use crate::container::{MetadataState, Runtime};

    /// A podman container known by name, id (64 `digit`s) and pod (namespace `shop`).
    pub(crate) fn container(name: &str, digit: char, pod: &str) -> Arc<Container> {
        Arc::new(Container {
            id: std::iter::repeat_n(digit, 64).collect(),
            runtime: Some(Runtime::Podman),
            pod_uid: None,
            metadata: MetadataState::Known(Arc::new(Metadata {
                name: name.into(),
                k8s: Some(K8s {
                    pod: pod.into(),
                    namespace: "shop".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
    }

    /// Pid 1 in `web` (two stacks), 2 in `db`, 3 on the host: lost stacks, so nothing is
    /// symbolized.
    fn raw(filter: ContainerFilter) -> RawProfile {
        let sample = |pid, kernel, value| RawSample {
            pid,
            comm: format!("p{pid}"),
            kernel,
            user: Stack::Lost,
            unwinder: None,
            value,
        };
        RawProfile {
            samples: vec![
                sample(1, Stack::Lost, 10),
                sample(1, Stack::NotCollected, 5),
                sample(2, Stack::Lost, 20),
                sample(3, Stack::Lost, 40),
            ],
            maps: ProcessMaps::default(),
            options: ProfileOptions {
                containers: filter,
                ..Default::default()
            },
            losses: Losses::default(),
        }
    }

    fn build(filter: ContainerFilter) -> Profile {
        let containers = HashMap::from([
            (1, container("web", 'a', "web-0")),
            (2, container("db", 'b', "db-0")),
        ]);
        raw(filter).build(
            "t".into(),
            1.0,
            &mut Symbolizer::with_code_info(false),
            &containers,
        )
    }

    fn kept(profile: &Profile) -> Vec<(u32, Option<&str>, u64)> {
        let mut out: Vec<_> = profile
            .stacks
            .iter()
            .map(|s| {
                (
                    s.pid,
                    s.container.as_ref().map(|c| c.name.as_str()),
                    s.value,
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn without_a_filter_every_stack_stays_tagged_with_its_container() {
        let p = build(ContainerFilter::default());
        assert_eq!(
            kept(&p),
            [
                (1, Some("web"), 5),
                (1, Some("web"), 10),
                (2, Some("db"), 20),
                (3, None, 40)
            ]
        );
        assert_eq!(p.total, 75);
        let web = p.stacks.iter().find(|s| s.pid == 1).unwrap();
        let tag = web.container.as_ref().unwrap();
        assert_eq!(
            (tag.pod.as_deref(), tag.namespace.as_deref()),
            (Some("web-0"), Some("shop"))
        );
    }

    #[test]
    fn a_container_filter_keeps_its_stacks_only_and_totals_them() {
        let by_name = ContainerFilter {
            containers: vec!["web".into()],
            ..Default::default()
        };
        let p = build(by_name);
        assert_eq!(kept(&p), [(1, Some("web"), 5), (1, Some("web"), 10)]);
        assert_eq!(p.total, 15, "the total counts the stacks kept");
        let by_short_id_or_pod = ContainerFilter {
            containers: vec!["bbbbbbbbbbbb".into(), "web".into()],
            pods: vec!["db-0".into()],
            ..Default::default()
        };
        assert_eq!(kept(&build(by_short_id_or_pod)), [(2, Some("db"), 20)]);
        let namespace = ContainerFilter {
            namespaces: vec!["shop".into()],
            ..Default::default()
        };
        assert_eq!(build(namespace).total, 35, "the host is in no namespace");
        let none = ContainerFilter {
            containers: vec!["cache".into()],
            ..Default::default()
        };
        let p = build(none);
        assert!(p.stacks.is_empty() && p.total == 0, "{:?}", p.stacks);
    }
}
