//! Health of our own probes: a kind dropping more than a set share of its events over a
//! window, or a program that should always run but has not run for a whole window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::kernel::stats::Snapshot;

/// Roles whose programs run on every syscall exit: silence means they are not attached.
pub(crate) const ALWAYS_ACTIVE: &[(&str, &str)] =
    &[("files", "open-exit"), ("process", "exec-failed")];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Warning {
    pub capability: String,
    pub kind: String,
    /// "drops" or "silent"; "recovered" when a warned probe is healthy again.
    pub reason: &'static str,
    pub detail: String,
}

/// (capability, kind or role) a probe is judged by.
type ProbeKey = (String, String);

pub struct Health {
    window: Duration,
    max_drop_ratio: f64,
    /// (capability, kind) → samples of (time, emitted, dropped)
    events: HashMap<ProbeKey, VecDeque<(Instant, u64, u64)>>,
    /// (capability, role) → samples of (time, runs)
    runs: HashMap<ProbeKey, VecDeque<(Instant, u64)>>,
    unhealthy: HashMap<ProbeKey, &'static str>,
    /// The previous `observe` (or the start): a probe first seen now had zero counts then,
    /// so drops in its first second (an agent started under load) are judged too.
    last_observed: Instant,
}

impl Health {
    pub fn new(window: Duration, max_drop_ratio: f64) -> Self {
        Self {
            window,
            max_drop_ratio,
            events: HashMap::new(),
            runs: HashMap::new(),
            unhealthy: HashMap::new(),
            last_observed: Instant::now(),
        }
    }

    /// Forgets a capability's history (unloaded: its counters restart).
    pub fn forget(&mut self, capability: &str) {
        self.events.retain(|(c, _), _| c != capability);
        self.runs.retain(|(c, _), _| c != capability);
        self.unhealthy.retain(|(c, _), _| c != capability);
    }

    pub fn is_healthy(&self, capability: &str, kind: &str) -> bool {
        !self
            .unhealthy
            .contains_key(&(capability.to_string(), kind.to_string()))
    }

    /// Adds a snapshot; returns warnings raised (or cleared) by it. Silent programs are
    /// judged only when `runs_counted` (run-time statistics on).
    pub fn observe(&mut self, snap: &Snapshot, now: Instant, runs_counted: bool) -> Vec<Warning> {
        let mut out = Vec::new();
        let window = self.window;
        for k in &snap.kinds {
            let key = (k.capability.to_string(), k.kind.to_string());
            let since = self.last_observed;
            let samples = self
                .events
                .entry(key.clone())
                .or_insert_with(|| VecDeque::from([(since, 0, 0)]));
            samples.push_back((now, k.emitted, k.dropped));
            while samples.len() > 2 && now.duration_since(samples[1].0) >= window {
                samples.pop_front();
            }
            let (t0, e0, d0) = samples[0];
            if now.duration_since(t0) < window / 2 {
                continue; // not enough history to judge
            }
            let (emitted, dropped) = (k.emitted.saturating_sub(e0), k.dropped.saturating_sub(d0));
            let total = emitted + dropped;
            let ratio = if total == 0 {
                0.0
            } else {
                dropped as f64 / total as f64
            };
            let detail = format!(
                "{dropped} of {total} events dropped ({:.1}%) in the last {}s",
                ratio * 100.0,
                now.duration_since(t0).as_secs()
            );
            self.transition(&mut out, key, ratio > self.max_drop_ratio, "drops", detail);
        }
        for p in snap.programs.iter().filter(|_| runs_counted) {
            if !ALWAYS_ACTIVE.contains(&(p.capability, p.role)) {
                continue;
            }
            let key = (p.capability.to_string(), p.role.to_string());
            let since = self.last_observed;
            let samples = self
                .runs
                .entry(key.clone())
                .or_insert_with(|| VecDeque::from([(since, 0)]));
            samples.push_back((now, p.run_count));
            while samples.len() > 2 && now.duration_since(samples[1].0) >= window {
                samples.pop_front();
            }
            let (t0, r0) = samples[0];
            if now.duration_since(t0) < window {
                continue;
            }
            let silent = p.run_count == r0;
            let detail = format!(
                "{} ({}) did not run for {}s",
                p.program,
                p.hook,
                window.as_secs()
            );
            self.transition(&mut out, key, silent, "silent", detail);
        }
        self.last_observed = now;
        out
    }

    fn transition(
        &mut self,
        out: &mut Vec<Warning>,
        key: ProbeKey,
        bad: bool,
        reason: &'static str,
        detail: String,
    ) {
        let was = self.unhealthy.get(&key).copied();
        match (bad, was) {
            (true, None) => {
                self.unhealthy.insert(key.clone(), reason);
                out.push(Warning {
                    capability: key.0,
                    kind: key.1,
                    reason,
                    detail,
                });
            }
            (false, Some(r)) if r == reason => {
                self.unhealthy.remove(&key);
                out.push(Warning {
                    capability: key.0,
                    kind: key.1,
                    reason: "recovered",
                    detail,
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::stats::KindStats;

    fn snap(emitted: u64, dropped: u64) -> Snapshot {
        Snapshot {
            programs: vec![],
            kinds: vec![KindStats {
                capability: "files",
                kind: "file_open",
                emitted,
                dropped,
                throttled: 0,
                filtered: 0,
            }],
        }
    }

    #[test]
    fn drops_before_the_first_observation_are_judged() {
        // An agent started under load: its first tick already sees the drops.
        let mut h = Health::new(Duration::from_secs(2), 0.1);
        let t = Instant::now();
        let w = h.observe(&snap(100, 500), t + Duration::from_millis(1100), true);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].reason, "drops");
    }

    #[test]
    fn warns_once_on_drops_and_recovers() {
        let mut h = Health::new(Duration::from_secs(10), 0.1);
        let t = Instant::now();
        assert!(h.observe(&snap(0, 0), t, true).is_empty());
        let w = h.observe(&snap(100, 50), t + Duration::from_secs(6), true);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].reason, "drops");
        assert!(!h.is_healthy("files", "file_open"));
        assert!(
            h.observe(&snap(200, 60), t + Duration::from_secs(7), true)
                .is_empty(),
            "once"
        );
        // Ten quiet seconds later the window holds no drops.
        let w = h.observe(&snap(5000, 60), t + Duration::from_secs(20), true);
        let w2 = h.observe(&snap(9000, 60), t + Duration::from_secs(31), true);
        let all: Vec<_> = w.into_iter().chain(w2).collect();
        assert!(all.iter().any(|w| w.reason == "recovered"), "{all:?}");
        assert!(h.is_healthy("files", "file_open"));
    }
}
