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
    /// Drained in this order: put lifecycle (process) first so the cache is current.
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

    /// Drains every ring once. Returns false when the output is closed.
    pub fn drain(&mut self, count_limit: Option<u64>) -> io::Result<bool> {
        self.more_pending = false;
        self.last_drain_records = 0;
        for cap in &mut self.capabilities {
            let mut queued_bytes = 0u64;
            let mut budget = DRAIN_BUDGET;
            self.sink.begin_capability(cap.spec.name);
            let ring = cap.ring()?;
            loop {
                if budget == 0 {
                    self.more_pending = true;
                    break;
                }
                let Some(record) = ring.next() else {
                    break;
                };
                budget -= 1;
                self.last_drain_records += 1;
                // 8-byte record header, data rounded up to 8 bytes, as the kernel lays them out.
                queued_bytes += 8 + (record.len() as u64).next_multiple_of(8);
                let event = match decode(&record) {
                    Ok(e) => e,
                    Err(_) => {
                        self.counters.undecodable += 1;
                        continue;
                    }
                };
                drop(record);
                self.counters.decoded += 1;
                self.cache.observe(&event);
                if count_limit.is_some_and(|n| self.counters.written >= n) {
                    continue; // keep draining for accounting, stop writing
                }
                let ctx = self.cache.context(&event);
                if !(self.filter)(&event, &ctx) {
                    self.counters.filtered += 1;
                    continue;
                }
                match self.sink.write(&event, &ctx) {
                    Ok(()) => self.counters.written += 1,
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            if budget < DRAIN_BUDGET {
                cap.reader_woke();
            }
            let peak = self.ring_peak_bytes.entry(cap.spec.name).or_default();
            *peak = (*peak).max(queued_bytes);
        }
        Ok(true)
    }
}
