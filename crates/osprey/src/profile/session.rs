//! One profile run as the `profile` command drives it: the collector fed with the ring's
//! events and the run loop's ticks, a progress figure every second, and the symbolized
//! profile at the end. The caller owns the loop and the rendering.

use std::time::{Duration, Instant};

use super::{Collector, Profile, ProfileOptions};
use crate::abi::kind;
use crate::kernel::loader::{LoadError, LoadedCapability};
use crate::pipeline::event::{Event, Payload};

/// What a running profile has gathered so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub elapsed_secs: f64,
    /// Samples counted (approximate: the last scan of the kernel's counts).
    pub samples: u64,
    /// Samples lost to a full ring or count map.
    pub lost: u64,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "osprey: {:.0} s, {} samples, {} lost",
            self.elapsed_secs, self.samples, self.lost
        )
    }
}

pub struct Session {
    collector: Collector,
    started: Instant,
    next_progress: Instant,
}

impl Session {
    /// Takes the profile maps of a loaded `profile` capability; the run starts now.
    pub fn new(cap: &mut LoadedCapability, options: ProfileOptions) -> Result<Self, LoadError> {
        let started = Instant::now();
        Ok(Self {
            collector: Collector::new(cap, options)?,
            started,
            next_progress: started + Duration::from_secs(1),
        })
    }

    /// Every event of the ring: samples with user stacks are unwound here.
    pub fn on_event(&mut self, event: &Event) {
        if let Payload::ProfileUserStack(sample) = &event.payload {
            self.collector.on_user_stack(&event.header, sample);
        }
    }

    /// After every drain of the ring; once a second, the progress so far.
    pub fn tick(&mut self, caps: &[LoadedCapability]) -> Option<Progress> {
        self.collector.tick();
        if Instant::now() < self.next_progress {
            return None;
        }
        self.next_progress += Duration::from_secs(1);
        let ring_dropped: u64 = caps
            .iter()
            .flat_map(|cap| {
                [kind::PROFILE_SAMPLE, kind::PROFILE_USER_STACK, kind::OFFCPU]
                    .map(|k| cap.counters_for(k).dropped)
            })
            .sum();
        Some(Progress {
            elapsed_secs: self.started.elapsed().as_secs_f64(),
            samples: self.collector.samples_seen,
            lost: ring_dropped + self.collector.count_map_full(),
        })
    }

    /// Seconds since the run started.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The symbolized, aggregated profile of the run, named `command`.
    pub fn finish(self, command: String, ring_dropped: u64) -> Profile {
        let elapsed = self.elapsed_secs();
        self.collector.finish(command, elapsed, ring_dropped)
    }
}
