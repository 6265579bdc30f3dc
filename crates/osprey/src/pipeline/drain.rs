//! Draining: every ring once per pass (at most `DRAIN_BUDGET` records each), decoded,
//! enriched and written; the drain timer that lets an idle reader sleep until the kernel
//! wakes it; the epoll set over all rings. The loop around them is `run.rs`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::cache::{ProcessCache, ProcessContext};
use super::event::{decode, Event};
use super::sink::Sink;
use crate::kernel::loader::LoadedCapability;

pub type EventFilter = Box<dyn Fn(&Event, &ProcessContext<'_>) -> bool>;

#[derive(Debug, Default, serde::Serialize)]
pub struct PipelineCounters {
    pub decoded: u64,
    pub undecodable: u64,
    pub written: u64,
    pub filtered: u64,
}

/// Longest sleep of an idle reader between drains. A record only misses its wake-up when
/// it is emitted in the instant between the kernel reading the idle switch and the
/// reader's last look (see `DrainTimer::after_drain`); this bounds how long it waits.
pub const IDLE_BACKSTOP: Duration = Duration::from_secs(1);

/// When to drain next. While rings deliver, every `interval` (the kernel wakes the reader
/// only for large batches). Once a drain finds nothing, the rings are told to wake the
/// reader with their next record and the timer stretches to the backstop: an idle reader
/// then costs no periodic wake-ups, and a first event after a quiet spell is drained at
/// once instead of at the next tick.
pub struct DrainTimer {
    interval: Duration,
    backstop: Option<Duration>,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl DrainTimer {
    pub fn new(interval: Duration, backstop: Option<Duration>) -> Self {
        Self {
            interval,
            backstop,
            sleep: Box::pin(tokio::time::sleep(interval)),
        }
    }

    /// Resolves when the next drain is due.
    pub async fn due(&mut self) {
        self.sleep.as_mut().await;
    }

    /// Call after every drain. Returns false when the output closed during the extra drain.
    pub fn after_drain(
        &mut self,
        pipeline: &mut Pipeline<'_>,
        count_limit: Option<u64>,
    ) -> io::Result<bool> {
        let mut open = true;
        let found = pipeline.last_drain_records > 0 || pipeline.more_pending;
        let idle = match self.backstop {
            Some(_) if !found => {
                // The switch first, then one more look: a record queued before the
                // switch was set woke nobody, and is caught here.
                pipeline
                    .capabilities
                    .iter_mut()
                    .all(|c| c.set_reader_idle())
                    && {
                        open = pipeline.drain(count_limit)?;
                        pipeline.last_drain_records == 0 && !pipeline.more_pending
                    }
            }
            _ => false,
        };
        let wait = match (idle, self.backstop) {
            (true, Some(backstop)) => backstop,
            _ => self.interval,
        };
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + wait);
        Ok(open)
    }
}

/// An epoll set over every ring, so one readiness future covers them all.
pub struct RingPoller {
    fd: AsyncFd<OwnedFd>,
}

impl RingPoller {
    /// Also maps every ring not mapped yet: before the loop waits, so that the first drain
    /// (often right after the start line) reads the rings as promptly as the later ones.
    pub fn new(capabilities: &mut [LoadedCapability]) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        for cap in capabilities {
            cap.ring()?;
            let ring_fd = cap.ring_fd();
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: ring_fd as u64,
            };
            // SAFETY: valid epoll and ring fds, valid event pointer.
            if unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, ring_fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: the epoll fd is owned by the AsyncFd and outlives its registration.
        let fd = unsafe { AsyncFd::register(epoll) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Resolves when the kernel woke a ring (it does so once a batch is queued).
    pub async fn ready(&self) {
        if let Ok(mut guard) = self.fd.readable().await {
            guard.clear_ready();
        }
    }
}

pub struct Pipeline<'a> {
    /// Records with equal timestamps are handled in this order: put lifecycle (process)
    /// first so the cache is current.
    /// Changed through `add_capabilities` / `remove_capabilities` while running, so the run
    /// loop watches the new rings.
    pub capabilities: Vec<LoadedCapability>,
    /// Bumped whenever the set of capabilities changes.
    generation: u64,
    pub cache: ProcessCache,
    pub sink: &'a mut dyn Sink,
    pub filter: EventFilter,
    pub counters: PipelineCounters,
    /// Per capability: the most bytes found queued in its ring at one drain (ring fill).
    pub ring_peak_bytes: HashMap<&'static str, u64>,
    /// The last drain stopped at its budget with records still queued: drain again at once.
    pub more_pending: bool,
    /// Records the last drain took from all rings (decodable or not).
    pub last_drain_records: u64,
    /// Records taken by the last drain but stamped after it began, by capability name:
    /// the next drain handles them first.
    held: Vec<(&'static str, Event)>,
}

/// Records taken from one ring per drain. Under a flood that never pauses a ring would
/// otherwise never empty, and signals, the control socket and other rings would starve.
const DRAIN_BUDGET: u32 = 32 * 1024;

impl<'a> Pipeline<'a> {
    pub fn new(
        capabilities: Vec<LoadedCapability>,
        cache: ProcessCache,
        sink: &'a mut dyn Sink,
        filter: EventFilter,
    ) -> Self {
        Self {
            capabilities,
            cache,
            sink,
            filter,
            counters: PipelineCounters::default(),
            ring_peak_bytes: HashMap::new(),
            more_pending: false,
            last_drain_records: 0,
            held: Vec::new(),
            generation: 0,
        }
    }

    /// Adds capabilities, keeping the drain order `order` gives (lowest first).
    pub fn add_capabilities(
        &mut self,
        capabilities: Vec<LoadedCapability>,
        order: impl Fn(&LoadedCapability) -> usize,
    ) {
        self.capabilities.extend(capabilities);
        self.capabilities.sort_by_key(order);
        self.generation += 1;
    }

    /// Drops (detaches) the capabilities with these names.
    pub fn remove_capabilities(&mut self, names: &[&str]) {
        self.capabilities.retain(|c| !names.contains(&c.spec.name));
        self.generation += 1;
    }

    /// Changes whenever the capabilities do.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Drains every ring once, merging the rings by record timestamp so that a process's
    /// exec is handled before its first open or connect although they sit in different
    /// rings. Only records stamped before the pass began are handled: a ring found empty
    /// is not looked at again in the pass, so a later record of another ring could
    /// overtake a record queued there meanwhile. A later record is held for the next pass
    /// (which then comes at once). Each ring keeps its own budget. Returns false when the
    /// output is closed.
    pub fn drain(&mut self, count_limit: Option<u64>) -> io::Result<bool> {
        self.more_pending = false;
        self.last_drain_records = 0;
        for cap in &mut self.capabilities {
            cap.ring()?;
        }
        let n = self.capabilities.len();
        // One ring is in order already.
        let cutoff = if n > 1 {
            crate::kernel::boot_time_ns()
        } else {
            u64::MAX
        };
        let mut rings: Vec<RingPass> = (0..n).map(|_| RingPass::default()).collect();
        let mut heads: Vec<Option<Event>> = (0..n)
            .map(|i| {
                let name = self.capabilities[i].spec.name;
                match self.held.iter().position(|h| h.0 == name) {
                    Some(h) => Some(self.held.swap_remove(h).1),
                    None => self.next_event(i, &mut rings[i]),
                }
            })
            .collect();
        self.held.clear(); // those of removed capabilities
        let mut current = None;
        // Earliest head first; on a tie the ring drained first (process first).
        while let Some(i) = (0..n)
            .filter(|&i| heads[i].is_some())
            .min_by_key(|&i| heads[i].as_ref().map_or(u64::MAX, |e| e.header.ts_boot_ns))
        {
            if heads[i]
                .as_ref()
                .is_some_and(|e| e.header.ts_boot_ns > cutoff)
            {
                // The earliest head is after the cutoff: so is every other one.
                self.more_pending = true;
                let names = self.capabilities.iter().map(|c| c.spec.name);
                let held = names
                    .zip(&mut heads)
                    .filter_map(|(n, h)| Some((n, h.take()?)));
                self.held.extend(held);
                break;
            }
            // Handled where it lies: an event is a few hundred bytes, not worth moving.
            let Some(event) = heads[i].as_ref() else {
                break;
            };
            if current != Some(i) {
                self.sink.begin_capability(self.capabilities[i].spec.name);
                current = Some(i);
            }
            if !self.handle(event, count_limit)? {
                return Ok(false);
            }
            heads[i] = self.next_event(i, &mut rings[i]);
        }
        for (cap, pass) in self.capabilities.iter_mut().zip(&rings) {
            if pass.taken > 0 {
                cap.reader_woke();
            }
            let peak = self.ring_peak_bytes.entry(cap.spec.name).or_default();
            *peak = (*peak).max(pass.queued_bytes);
        }
        Ok(true)
    }

    /// The next decodable record of ring `i`, within its budget.
    fn next_event(&mut self, i: usize, pass: &mut RingPass) -> Option<Event> {
        // Mapped (or its failure returned) at the start of `drain`.
        let Ok(ring) = self.capabilities[i].ring() else {
            return None;
        };
        loop {
            if pass.taken == DRAIN_BUDGET {
                self.more_pending = true;
                return None;
            }
            let record = ring.next()?;
            pass.taken += 1;
            self.last_drain_records += 1;
            // 8-byte record header, data rounded up to 8 bytes, as the kernel lays them out.
            pass.queued_bytes += 8 + (record.len() as u64).next_multiple_of(8);
            match decode(&record) {
                Ok(e) => {
                    self.counters.decoded += 1;
                    return Some(e);
                }
                Err(_) => self.counters.undecodable += 1,
            }
        }
    }

    /// Observes, filters and writes one event. False when the output is closed.
    fn handle(&mut self, event: &Event, count_limit: Option<u64>) -> io::Result<bool> {
        self.cache.observe(event);
        if count_limit.is_some_and(|n| self.counters.written >= n) {
            return Ok(true); // keep draining for accounting, stop writing
        }
        let ctx = self.cache.context(event);
        if !(self.filter)(event, &ctx) {
            self.counters.filtered += 1;
            return Ok(true);
        }
        match self.sink.write(event, &ctx) {
            Ok(()) => self.counters.written += 1,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(e),
        }
        Ok(true)
    }
}

/// One ring's share of a drain pass.
#[derive(Default)]
struct RingPass {
    taken: u32,
    queued_bytes: u64,
}
