//! The run loop: waits for a ring wake-up (sent by the kernel only once a batch is queued)
//! or the drain timer, drains every ring, enriches and writes events, and stops on a
//! signal, `--duration`, `--count` or a closed output, draining what is left first.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use super::cache::{ProcessCache, ProcessContext};
use super::event::{decode, Event};
use super::sink::Sink;
use crate::kernel::loader::LoadedCapability;
use crate::kernel::stats::Snapshot;

pub type EventFilter = Box<dyn Fn(&Event, &ProcessContext<'_>) -> bool>;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub stats_every: Option<Duration>,
    /// Backstop for the batched wake-ups while events flow: the longest an event waits.
    pub drain_interval: Duration,
    /// Once a drain finds nothing, sleep until the kernel wakes the reader with the next
    /// record, draining at most this long apart as a safety net; none: drain every
    /// `drain_interval` regardless (for callers whose tick must run at that pace).
    pub idle_backstop: Option<Duration>,
    /// Longest time the final drain may take after a stop request.
    pub final_drain_budget: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            duration: None,
            count: None,
            stats_every: None,
            drain_interval: Duration::from_millis(10),
            idle_backstop: Some(IDLE_BACKSTOP),
            final_drain_budget: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Signal,
    Duration,
    Count,
    OutputClosed,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PipelineCounters {
    pub decoded: u64,
    pub undecodable: u64,
    pub written: u64,
    pub filtered: u64,
}

pub struct Summary {
    pub reason: StopReason,
    pub counters: PipelineCounters,
    pub stats: Snapshot,
    pub cache_size: usize,
    pub cache_evictions: u64,
}

impl Summary {
    /// The summary as one JSON object (`"kind": "summary"`), for `--output json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "summary",
            "reason": self.reason,
            "pipeline": self.counters,
            "programs": self.stats.programs,
            "events": self.stats.kinds,
            "process_cache": {"size": self.cache_size, "evictions": self.cache_evictions},
        })
    }

    pub fn render(&self) -> String {
        format!(
            "{}pipeline: decoded {} written {} filtered {} undecodable {}; process cache {} entries, {} evicted\n",
            self.stats.render(),
            self.counters.decoded,
            self.counters.written,
            self.counters.filtered,
            self.counters.undecodable,
            self.cache_size,
            self.cache_evictions,
        )
    }
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
    pub fn new(capabilities: &[LoadedCapability]) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        for cap in capabilities {
            let ring_fd = cap.ring.as_raw_fd();
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
    pub capabilities: Vec<LoadedCapability>,
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
        }
    }

    /// Drains every ring once. Returns false when the output is closed.
    pub fn drain(&mut self, count_limit: Option<u64>) -> io::Result<bool> {
        self.more_pending = false;
        self.last_drain_records = 0;
        for cap in &mut self.capabilities {
            let mut queued_bytes = 0u64;
            let mut budget = DRAIN_BUDGET;
            self.sink.begin_capability(cap.spec.name);
            loop {
                if budget == 0 {
                    self.more_pending = true;
                    break;
                }
                let Some(record) = cap.ring.next() else {
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

    pub async fn run(self, options: RunOptions) -> io::Result<Summary> {
        self.run_with_tick(options, |_| {}).await
    }

    /// Like `run`, calling `tick` after every drain (capabilities that aggregate in the
    /// kernel read their maps there).
    pub async fn run_with_tick(
        mut self,
        options: RunOptions,
        mut tick: impl FnMut(&[LoadedCapability]),
    ) -> io::Result<Summary> {
        let poller = RingPoller::new(&self.capabilities)?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let started = Instant::now();
        let deadline = options.duration.map(|d| started + d);
        let mut next_stats = options.stats_every.map(|d| started + d);
        let mut timer = DrainTimer::new(options.drain_interval, options.idle_backstop);
        let far = started + Duration::from_secs(86400 * 365);

        let reason = loop {
            let sleep_until = deadline.unwrap_or(far);
            let more = self.more_pending;
            tokio::select! {
                _ = std::future::ready(()), if more => {}
                _ = poller.ready() => {}
                _ = timer.due() => {}
                _ = tokio::time::sleep_until(next_stats.unwrap_or(far).into()), if next_stats.is_some() => {}
                _ = sigint.recv() => break StopReason::Signal,
                _ = sigterm.recv() => break StopReason::Signal,
                _ = tokio::time::sleep_until(sleep_until.into()) => break StopReason::Duration,
            }
            let written_before = self.counters.written;
            if !self.drain(options.count)? || !timer.after_drain(&mut self, options.count)? {
                break StopReason::OutputClosed;
            }
            tick(&self.capabilities);
            if self.sink.tick(crate::kernel::boot_time_ns()).is_err() {
                break StopReason::OutputClosed;
            }
            // A person watching a table sees each batch at once, not when a buffer fills.
            if self.counters.written != written_before && self.sink.flush().is_err() {
                break StopReason::OutputClosed;
            }
            if options.count.is_some_and(|n| self.counters.written >= n) {
                break StopReason::Count;
            }
            self.cache.expire(crate::kernel::boot_time_ns());
            if let (Some(at), Some(every)) = (next_stats, options.stats_every) {
                if Instant::now() >= at {
                    eprint!("{}", Snapshot::take(&self.capabilities).render());
                    next_stats = Some(at + every);
                }
            }
        };

        // Final drain: what the kernel queued before we stopped is still delivered.
        let budget_end = Instant::now() + options.final_drain_budget;
        if reason != StopReason::OutputClosed {
            while Instant::now() < budget_end {
                let before = self.counters.decoded;
                if !self.drain(options.count)? || self.counters.decoded == before {
                    break;
                }
            }
        }
        // What waits to settle is written now rather than lost.
        let _ = self.sink.tick(u64::MAX);
        let _ = self.sink.flush();
        Ok(Summary {
            reason,
            stats: Snapshot::take(&self.capabilities),
            cache_size: self.cache.len(),
            cache_evictions: self.cache.evictions,
            counters: self.counters,
        })
    }
}
