//! When to ask a runtime again about a container: one it could not describe (a runtime
//! socket that was missing or slow, the daemon restarting, a container registered just after
//! its first process ran) should not stay nameless for the whole run, and one it described
//! may since have been renamed or stopped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Runtime;

/// Delays before the first, second and third new question; none after that.
pub const DELAYS: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(60),
];

/// Why a container comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Its last lookup failed: ask again.
    Retry,
    /// Its answer has aged: forget it if its cgroups are gone, else ask again (a rename).
    Refresh,
}

#[derive(Debug, Default)]
pub struct Retries {
    /// Questions asked again so far, by container id.
    attempts: HashMap<String, usize>,
    /// Containers waiting to be looked at again, with when and why.
    due: Vec<(Instant, String, Runtime, Due)>,
    /// The earliest `due`, so that the event path checks one instant.
    next: Option<Instant>,
}

impl Retries {
    /// A container's lookup failed at `now`: schedules the next question and returns true,
    /// or returns false when none is left.
    pub fn failed(&mut self, id: &str, runtime: Runtime, now: Instant) -> bool {
        let attempt = self.attempts.entry(id.to_string()).or_default();
        let Some(delay) = DELAYS.get(*attempt) else {
            return false;
        };
        *attempt += 1;
        self.push(now + *delay, id, runtime, Due::Retry);
        true
    }

    /// The lookup succeeded: no more retries.
    pub fn known(&mut self, id: &str) {
        self.attempts.remove(id);
    }

    /// Looks at the container again `after` from `now`.
    pub fn refresh(&mut self, id: &str, runtime: Runtime, now: Instant, after: Duration) {
        self.push(now + after, id, runtime, Due::Refresh);
    }

    /// The container was forgotten: nothing more is scheduled for it.
    pub fn forget(&mut self, id: &str) {
        self.attempts.remove(id);
        self.due.retain(|d| d.1 != id);
        self.next = self.due.iter().map(|d| d.0).min();
    }

    fn push(&mut self, at: Instant, id: &str, runtime: Runtime, why: Due) {
        self.due.push((at, id.to_string(), runtime, why));
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// Whether any question may be due (cheap: no clock read when none is scheduled).
    pub fn pending(&self) -> bool {
        self.next.is_some()
    }

    /// The containers due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, Runtime, Due)> {
        if self.next.is_none_or(|n| n > now) {
            return Vec::new();
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self.due.drain(..).partition(|d| d.0 <= now);
        self.due = waiting;
        self.next = self.due.iter().map(|d| d.0).min();
        ready
            .into_iter()
            .map(|(_, id, rt, why)| (id, rt, why))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(id: &str, rt: Runtime) -> (String, Runtime, Due) {
        (id.to_string(), rt, Due::Retry)
    }

    #[test]
    fn asks_again_after_each_delay_then_stops() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        assert!(!r.pending());
        assert!(r.failed("c1", Runtime::Docker, t0));
        assert!(r.take_due(t0).is_empty(), "not before the first delay");
        let t1 = t0 + DELAYS[0];
        assert_eq!(r.take_due(t1), vec![retry("c1", Runtime::Docker)]);
        assert!(!r.pending());
        r.failed("c1", Runtime::Docker, t1);
        assert!(
            r.take_due(t1 + DELAYS[0]).is_empty(),
            "the second delay is longer"
        );
        let t2 = t1 + DELAYS[1];
        assert_eq!(r.take_due(t2).len(), 1);
        r.failed("c1", Runtime::Docker, t2);
        let t3 = t2 + DELAYS[2];
        assert_eq!(r.take_due(t3).len(), 1);
        assert!(!r.failed("c1", Runtime::Docker, t3), "none left");
        assert!(!r.pending(), "three questions again at most");
    }

    #[test]
    fn an_answer_resets_the_count() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        r.failed("c1", Runtime::Podman, t0);
        r.take_due(t0 + DELAYS[0]);
        r.known("c1");
        r.failed("c1", Runtime::Podman, t0);
        assert!(
            r.take_due(t0 + DELAYS[0]).len() == 1,
            "the first delay again"
        );
    }

    #[test]
    fn refreshes_come_due_and_forgetting_cancels_them() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        r.refresh("c1", Runtime::Docker, t0, every);
        r.refresh("c2", Runtime::Docker, t0, every);
        assert!(r.take_due(t0).is_empty());
        r.forget("c2");
        assert_eq!(
            r.take_due(t0 + every),
            vec![("c1".to_string(), Runtime::Docker, Due::Refresh)]
        );
        assert!(!r.pending());
    }
}
