//! When to ask a runtime again about a container it could not describe: a runtime socket
//! that was missing or slow (the daemon restarting, a container registered just after its
//! first process ran) should not leave the container nameless for the whole run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Runtime;

/// Delays before the first, second and third new question; none after that.
pub const DELAYS: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(60),
];

#[derive(Debug, Default)]
pub struct Retries {
    /// Questions asked again so far, by container id.
    attempts: HashMap<String, usize>,
    /// Containers waiting to be asked again, with when.
    due: Vec<(Instant, String, Runtime)>,
    /// The earliest `due`, so that the event path checks one instant.
    next: Option<Instant>,
}

impl Retries {
    /// A container's lookup failed at `now`: schedules the next question, if any is left.
    pub fn failed(&mut self, id: &str, runtime: Runtime, now: Instant) {
        let attempt = self.attempts.entry(id.to_string()).or_default();
        let Some(delay) = DELAYS.get(*attempt) else {
            return;
        };
        *attempt += 1;
        let at = now + *delay;
        self.due.push((at, id.to_string(), runtime));
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// The lookup succeeded: nothing more to ask.
    pub fn known(&mut self, id: &str) {
        self.attempts.remove(id);
    }

    /// Whether any question may be due (cheap: no clock read when none is scheduled).
    pub fn pending(&self) -> bool {
        self.next.is_some()
    }

    /// The containers whose next question is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, Runtime)> {
        if self.next.is_none_or(|n| n > now) {
            return Vec::new();
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self.due.drain(..).partition(|d| d.0 <= now);
        self.due = waiting;
        self.next = self.due.iter().map(|d| d.0).min();
        ready.into_iter().map(|(_, id, rt)| (id, rt)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_again_after_each_delay_then_stops() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        assert!(!r.pending());
        r.failed("c1", Runtime::Docker, t0);
        assert!(r.take_due(t0).is_empty(), "not before the first delay");
        let t1 = t0 + DELAYS[0];
        assert_eq!(r.take_due(t1), vec![("c1".to_string(), Runtime::Docker)]);
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
        r.failed("c1", Runtime::Docker, t3);
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
}
