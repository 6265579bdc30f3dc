//! The run loop every command and the agent share: waits for a ring wake-up (sent by the
//! kernel only once a batch is queued), the drain timer, a periodic tick, a control request
//! or a signal; drains every ring, enriches and writes events; stops on a signal,
//! `--duration`, `--count`, a closed output or a hook's say-so, then drains what is left
//! within a budget. What differs between callers is in their `RunHooks`.

use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{interval_at, Interval, MissedTickBehavior};

pub use super::drain::{
    DrainTimer, EventFilter, Pipeline, PipelineCounters, RingPoller, IDLE_BACKSTOP,
};
use crate::kernel::loader::LoadedCapability;
use crate::kernel::stats::Snapshot;

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
    /// How often `RunHooks::tick` runs, the first time at once; none: never.
    pub tick_every: Option<Duration>,
    /// Flush the sink after every drain that wrote (a person watching sees each batch at
    /// once); otherwise the caller flushes (the agent, once a second).
    pub flush_each_batch: bool,
    /// SIGHUP goes to `RunHooks::hangup` instead of ending the process.
    pub catch_hangup: bool,
    /// Between two drains that stopped at their budget, let the runtime run timers and
    /// other tasks (the agent's tick, metrics and control socket). Otherwise the next drain
    /// follows at once and a stop is noticed when the rings are empty: a command delivers
    /// everything queued before the stop.
    pub yield_between_passes: bool,
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
            tick_every: None,
            flush_each_batch: true,
            catch_hangup: false,
            yield_between_passes: false,
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

/// What a caller of the run loop does besides draining. Every method has a default that
/// does nothing; `ControlFlow::Break` stops the loop with that reason.
pub trait RunHooks {
    /// A request from outside the process (the agent's control socket).
    type Request;

    /// After every drain (capabilities that aggregate in the kernel read their maps here).
    fn after_drain(&mut self, pipeline: &mut Pipeline<'_>) -> ControlFlow<StopReason> {
        let _ = pipeline;
        ControlFlow::Continue(())
    }

    /// Every `RunOptions::tick_every`, before that pass's drain.
    fn tick(&mut self, pipeline: &mut Pipeline<'_>) -> ControlFlow<StopReason> {
        let _ = pipeline;
        ControlFlow::Continue(())
    }

    fn request(&mut self, pipeline: &mut Pipeline<'_>, request: Self::Request) {
        let _ = (pipeline, request);
    }

    /// SIGHUP, when `RunOptions::catch_hangup`.
    fn hangup(&mut self, pipeline: &mut Pipeline<'_>) {
        let _ = pipeline;
    }
}

/// Hooks that only read the capabilities' maps after every drain.
pub struct AfterDrain<F>(pub F);

impl<F: FnMut(&[LoadedCapability])> RunHooks for AfterDrain<F> {
    type Request = ();

    fn after_drain(&mut self, pipeline: &mut Pipeline<'_>) -> ControlFlow<StopReason> {
        (self.0)(&pipeline.capabilities);
        ControlFlow::Continue(())
    }
}

/// What woke the loop.
enum Wake<R> {
    Drain,
    Tick,
    Stats,
    Request(R),
    Hangup,
    Stop(StopReason),
}

/// Set by a SIGINT or SIGTERM that arrives before a run loop listens.
static EARLY_STOP: AtomicBool = AtomicBool::new(false);

/// Remembers a SIGINT or SIGTERM that arrives before any run loop listens (for example
/// between a command's "tracing" line and the start of its loop), so the loop stops at once
/// with its final drain and summary instead of the process dying with the default action.
/// The `osprey` binary calls it first thing.
pub fn remember_early_stop() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal_hook_registry::register(signal, || EARLY_STOP.store(true, Ordering::SeqCst))
        }?;
    }
    Ok(())
}

/// The signals the loop answers. Installed before anything else so that a SIGTERM during
/// a caller's start-up is a clean stop, not the default death.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Option<Signal>,
}

impl Signals {
    pub fn install(catch_hangup: bool) -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: catch_hangup
                .then(|| signal(SignalKind::hangup()))
                .transpose()?,
        })
    }
}

/// Ticks every `period`, the first after `first` (an agent's health needs a baseline taken
/// at once; a stats line after a whole period).
fn every(period: Option<Duration>, first: Duration) -> Option<Interval> {
    period.map(|d| {
        let mut i = interval_at(tokio::time::Instant::now() + first, d);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    })
}

async fn next_tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_request<R>(requests: &mut Option<&mut mpsc::Receiver<R>>) -> Option<R> {
    match requests {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The loop's timers and wake-up sources.
struct Waiters<'r, R> {
    poller: RingPoller,
    generation: u64,
    timer: DrainTimer,
    ticks: Option<Interval>,
    stats: Option<Interval>,
    deadline: Option<tokio::time::Instant>,
    requests: Option<&'r mut mpsc::Receiver<R>>,
    yielding: bool,
}

impl<R> Waiters<'_, R> {
    async fn wait(&mut self, signals: &mut Signals, more_pending: bool) -> Wake<R> {
        let hangup = async {
            match &mut signals.hangup {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = std::future::ready(()), if more_pending && !self.yielding => Wake::Drain,
            // Yielding once lets the runtime fire timers and serve its other tasks
            // (metrics, control socket) while a flood keeps the rings full.
            _ = tokio::task::yield_now(), if more_pending && self.yielding => Wake::Drain,
            _ = self.poller.ready() => Wake::Drain,
            _ = self.timer.due() => Wake::Drain,
            _ = next_tick(&mut self.ticks) => Wake::Tick,
            _ = next_tick(&mut self.stats) => Wake::Stats,
            Some(r) = next_request(&mut self.requests) => Wake::Request(r),
            _ = hangup => Wake::Hangup,
            _ = signals.interrupt.recv() => Wake::Stop(StopReason::Signal),
            _ = signals.terminate.recv() => Wake::Stop(StopReason::Signal),
            _ = deadline => Wake::Stop(StopReason::Duration),
        }
    }
}

impl<'a> Pipeline<'a> {
    /// `run` on a runtime of its own.
    pub fn run_blocking(self, options: &RunOptions) -> io::Result<Summary> {
        run_blocking(self, options, &mut AfterDrain(|_: &[LoadedCapability]| {}))
    }

    pub async fn run(self, options: RunOptions) -> io::Result<Summary> {
        self.run_with_tick(options, |_| {}).await
    }

    /// Like `run`, calling `tick` after every drain (capabilities that aggregate in the
    /// kernel read their maps there).
    pub async fn run_with_tick(
        mut self,
        options: RunOptions,
        tick: impl FnMut(&[LoadedCapability]),
    ) -> io::Result<Summary> {
        let mut signals = Signals::install(options.catch_hangup)?;
        let reason = self
            .run_loop(&options, &mut signals, &mut AfterDrain(tick), None)
            .await?;
        Ok(self.finish(reason, options.final_drain_budget, options.count))
    }

    /// Runs until a stop; the caller then calls `finish`. `requests` feed
    /// `RunHooks::request`.
    pub async fn run_loop<H: RunHooks>(
        &mut self,
        options: &RunOptions,
        signals: &mut Signals,
        hooks: &mut H,
        requests: Option<&mut mpsc::Receiver<H::Request>>,
    ) -> io::Result<StopReason> {
        let mut waiters = Waiters {
            poller: RingPoller::new(&mut self.capabilities)?,
            generation: self.generation(),
            timer: DrainTimer::new(options.drain_interval, options.idle_backstop),
            ticks: every(options.tick_every, Duration::ZERO),
            stats: every(options.stats_every, options.stats_every.unwrap_or_default()),
            deadline: options.duration.map(|d| tokio::time::Instant::now() + d),
            requests,
            yielding: options.yield_between_passes,
        };
        let mut next_expiry = Instant::now();
        if EARLY_STOP.swap(false, Ordering::SeqCst) {
            return Ok(StopReason::Signal);
        }
        loop {
            let flow = match waiters.wait(signals, self.more_pending).await {
                Wake::Stop(reason) => return Ok(reason),
                Wake::Drain => ControlFlow::Continue(()),
                Wake::Tick => hooks.tick(self),
                Wake::Stats => {
                    eprint!("{}", Snapshot::take(&self.capabilities).render());
                    ControlFlow::Continue(())
                }
                Wake::Request(r) => {
                    hooks.request(self, r);
                    ControlFlow::Continue(())
                }
                Wake::Hangup => {
                    hooks.hangup(self);
                    ControlFlow::Continue(())
                }
            };
            if let ControlFlow::Break(reason) = flow {
                return Ok(reason);
            }
            if waiters.generation != self.generation() {
                waiters.poller = RingPoller::new(&mut self.capabilities)?;
                waiters.generation = self.generation();
            }
            if let ControlFlow::Break(reason) = self.pass(options, &mut waiters.timer, hooks)? {
                return Ok(reason);
            }
            // Exited processes leave the cache once their grace is over.
            if Instant::now() >= next_expiry {
                self.cache.expire(crate::kernel::boot_time_ns());
                next_expiry = Instant::now() + Duration::from_secs(1);
            }
        }
    }

    /// One drain with what follows it: the timer, the hooks, the sink's tick and flush.
    fn pass<H: RunHooks>(
        &mut self,
        options: &RunOptions,
        timer: &mut DrainTimer,
        hooks: &mut H,
    ) -> io::Result<ControlFlow<StopReason>> {
        let written_before = self.counters.written;
        let closed = ControlFlow::Break(StopReason::OutputClosed);
        if !self.drain(options.count)? || !timer.after_drain(self, options.count)? {
            return Ok(closed);
        }
        if let ControlFlow::Break(reason) = hooks.after_drain(self) {
            return Ok(ControlFlow::Break(reason));
        }
        if self.sink.tick(crate::kernel::boot_time_ns()).is_err() {
            return Ok(closed);
        }
        let wrote = self.counters.written != written_before;
        if options.flush_each_batch && wrote && self.sink.flush().is_err() {
            return Ok(closed);
        }
        if options.count.is_some_and(|n| self.counters.written >= n) {
            return Ok(ControlFlow::Break(StopReason::Count));
        }
        Ok(ControlFlow::Continue(()))
    }

    /// After a stop: what the kernel queued before it is still delivered (within
    /// `budget`), what waits to settle is written now rather than lost, the sink flushed.
    pub fn final_drain(&mut self, reason: StopReason, budget: Duration, count: Option<u64>) {
        let budget_end = Instant::now() + budget;
        if reason != StopReason::OutputClosed {
            while Instant::now() < budget_end {
                let before = self.counters.decoded;
                if !self.drain(count).unwrap_or(false) || self.counters.decoded == before {
                    break;
                }
            }
        }
        let _ = self.sink.tick(u64::MAX);
        let _ = self.sink.flush();
    }

    /// `final_drain`, then the summary.
    pub fn finish(mut self, reason: StopReason, budget: Duration, count: Option<u64>) -> Summary {
        self.final_drain(reason, budget, count);
        Summary {
            reason,
            stats: Snapshot::take(&self.capabilities),
            cache_size: self.cache.len(),
            cache_evictions: self.cache.evictions,
            counters: std::mem::take(&mut self.counters),
        }
    }
}

/// The run loop with `hooks` on a runtime of its own, then `finish`: for commands that
/// do nothing else meanwhile.
pub fn run_blocking<H: RunHooks>(
    mut pipeline: Pipeline<'_>,
    options: &RunOptions,
    hooks: &mut H,
) -> io::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reason = runtime.block_on(async {
        let mut signals = Signals::install(options.catch_hangup)?;
        pipeline.run_loop(options, &mut signals, hooks, None).await
    })?;
    Ok(pipeline.finish(reason, options.final_drain_budget, options.count))
}
