//! `--unwind auto`: the unwinder of each process chosen from evidence. The first samples
//! of a process carry both the kernel's frame-pointer walk (first frame fixed with the
//! CFI) and a stack window; both are unwound and compared. Where they agree the process
//! keeps frame pointers (cheap: a few words per sample), otherwise DWARF.

use std::collections::HashMap;

use serde::Serialize;

use super::frame::CodeAddr;

/// Samples compared before deciding.
const DECIDE_AFTER: u32 = 8;
/// Samples of a process looked at before deciding on DWARF for want of evidence.
const GIVE_UP_AFTER: u32 = 32;
/// Frames the frame-pointer walk may miss at the outer end: C start-up code
/// (`__libc_start_main`, `_start`) has no frame pointers, and that costs nothing.
const OUTER_FRAMES_FP_MAY_MISS: usize = 2;

/// The unwinder a sample's user stack came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unwinder {
    FramePointer,
    Dwarf,
}

impl Unwinder {
    pub fn label(self) -> &'static str {
        match self {
            Unwinder::FramePointer => "frame pointers",
            Unwinder::Dwarf => "dwarf",
        }
    }
}

/// How a DWARF unwind of a copied window ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DwarfEnd {
    /// The CFI says the outermost frame was reached.
    Complete,
    /// It needed stack beyond the copied window.
    Cut,
    /// Missing or unusable CFI.
    Failed,
}

/// Whether a frame-pointer unwind agrees with the DWARF unwind of the same sample; None
/// when the sample is no evidence (the DWARF unwind stopped early and both agree so far).
pub fn agree(fp: &[CodeAddr], dwarf: &[CodeAddr], end: DwarfEnd) -> Option<bool> {
    let common = fp.len().min(dwarf.len());
    if fp[..common]
        .iter()
        .zip(&dwarf[..common])
        .any(|(a, b)| a.addr != b.addr)
    {
        return Some(false);
    }
    if end != DwarfEnd::Complete {
        return None;
    }
    Some(fp.len() + OUTER_FRAMES_FP_MAY_MISS >= dwarf.len())
}

#[derive(Debug, Clone, Copy, Default)]
struct Trial {
    seen: u32,
    judged: u32,
    agreed: u32,
}

/// Per process: under trial, or decided.
#[derive(Default)]
pub struct AutoUnwind {
    trials: HashMap<u32, Trial>,
    pub decided: HashMap<u32, Unwinder>,
}

impl AutoUnwind {
    /// Counts one compared sample; returns the decision once there is one.
    pub fn judge(&mut self, pid: u32, agreement: Option<bool>) -> Option<Unwinder> {
        if let Some(&u) = self.decided.get(&pid) {
            return Some(u);
        }
        let t = self.trials.entry(pid).or_default();
        t.seen += 1;
        if let Some(agreed) = agreement {
            t.judged += 1;
            t.agreed += u32::from(agreed);
        }
        let choice = if t.judged >= DECIDE_AFTER {
            // Four in five agree: frame pointers are sound for this process.
            Some(if t.agreed * 5 >= t.judged * 4 {
                Unwinder::FramePointer
            } else {
                Unwinder::Dwarf
            })
        } else if t.seen >= GIVE_UP_AFTER {
            Some(Unwinder::Dwarf)
        } else {
            None
        };
        if let Some(u) = choice {
            self.trials.remove(&pid);
            self.decided.insert(pid, u);
        }
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v: &[u64]) -> Vec<CodeAddr> {
        v.iter()
            .enumerate()
            .map(|(i, &addr)| CodeAddr {
                addr,
                is_return: i > 0,
            })
            .collect()
    }

    #[test]
    fn agreement_needs_the_same_frames_and_not_many_fewer() {
        let dwarf = addrs(&[1, 2, 3, 4, 5, 6]);
        // Missing only the start-up frames: agree.
        assert_eq!(
            agree(&addrs(&[1, 2, 3, 4]), &dwarf, DwarfEnd::Complete),
            Some(true)
        );
        // Stopped after two frames: no frame pointers further out.
        assert_eq!(
            agree(&addrs(&[1, 2]), &dwarf, DwarfEnd::Complete),
            Some(false)
        );
        // A different caller: the frame pointer was a general register.
        assert_eq!(
            agree(&addrs(&[1, 9, 3, 4, 5, 6]), &dwarf, DwarfEnd::Complete),
            Some(false)
        );
        // DWARF cut by its window: the longer frame-pointer walk is no evidence against.
        assert_eq!(
            agree(&addrs(&[1, 2, 3, 4, 5, 6, 7]), &dwarf, DwarfEnd::Cut),
            None
        );
    }

    #[test]
    fn decides_after_enough_evidence() {
        let mut auto = AutoUnwind::default();
        for _ in 0..DECIDE_AFTER - 1 {
            assert_eq!(auto.judge(7, Some(true)), None);
        }
        assert_eq!(auto.judge(7, Some(false)), Some(Unwinder::FramePointer));
        for _ in 0..DECIDE_AFTER - 1 {
            assert_eq!(auto.judge(8, Some(false)), None);
        }
        assert_eq!(auto.judge(8, Some(true)), Some(Unwinder::Dwarf));
        for _ in 0..GIVE_UP_AFTER - 1 {
            assert_eq!(auto.judge(9, None), None);
        }
        assert_eq!(auto.judge(9, None), Some(Unwinder::Dwarf));
    }
}
