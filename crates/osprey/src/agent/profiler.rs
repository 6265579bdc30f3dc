//! The profile module: `osprey profile`'s CPU sampler on every CPU at a low frequency
//! (19 Hz by default), stacks counted in the kernel with frame-pointer unwinding (nothing
//! crosses the ring per sample), and once per interval a gzipped pprof file written
//! atomically into state_dir/profiles, the oldest deleted beyond `keep`. Reading the maps
//! takes a moment in the agent's loop; symbolizing and writing happen on a thread.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Value};

use super::config::AgentConfig;
use super::metrics::ModuleMetrics;
use super::modules::{degraded_notes, load_capability, DetachedModule, ModuleState};
use super::AgentError;
use crate::profile::frame_cache::{FrameCache, FrameCacheStats};
use crate::profile::raw::RawProfile;
use crate::profile::symbolize::Symbolizer;
use crate::profile::{self, pprof, Collector, ProfileKind, ProfileOptions, UnwindMode};

/// Profile files are named `cpu-<UTC time>.pb.gz`, so names sort by age.
const PREFIX: &str = "cpu-";
const SUFFIX: &str = ".pb.gz";

pub fn profiles_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("profiles")
}

pub fn load(config: &AgentConfig, metrics: &ModuleMetrics) -> Result<DetachedModule, AgentError> {
    let cfg = &config.modules.profile;
    let options = ProfileOptions {
        kind: ProfileKind::Cpu,
        frequency_hz: cfg.frequency_hz,
        unwind: UnwindMode::FramePointer,
        // Counted in the kernel: the agent reads no events of its own.
        fix_first_frame: false,
        ..Default::default()
    };
    let mut load = options.load_options();
    load.denied_programs = crate::kernel::loader::LoadOptions::denied_from_env();
    // Frame-pointer stacks never use the ring: one page is enough.
    load.ring_bytes = Some(4096);
    load.map_max_entries.extend(interval_map_sizes(
        cfg.frequency_hz,
        cfg.interval_secs,
        aya::util::nr_cpus().unwrap_or(1).max(1) as u64,
    ));
    let mut cap = load_capability("profile", profile::SPEC, &load)?;
    let mut collector = Collector::new(&mut cap, options).map_err(|source| AgentError::Module {
        module: "profile",
        source,
    })?;
    // New processes' maps are captured at this pace (shorter-lived ones keep unnamed user
    // frames): scanning the count map costs a syscall per entry.
    collector.set_scan_interval(Duration::from_secs(1));
    let dir = profiles_dir(&config.state_dir);
    std::fs::create_dir_all(&dir).map_err(super::io_err(format!("{}", dir.display())))?;
    Ok(DetachedModule {
        notes: degraded_notes(&cap),
        capabilities: vec![cap],
        state: Some(Box::new(Profiler {
            collector,
            dir,
            interval: Duration::from_secs(cfg.interval_secs),
            keep: cfg.keep as usize,
            started: Instant::now(),
            started_unix_ns: unix_ns(),
            writing: None,
            frame_cache: Some(new_frame_cache()),
            last_file: None,
            written: metrics.profiles_written.clone(),
            samples: metrics.profile_samples.clone(),
        })),
    })
}

/// The count and stack maps sized for one interval (they are emptied after each): every
/// sample a distinct key of two stacks at most, within the object's own sizes.
fn interval_map_sizes(hz: u64, interval_secs: u64, cpus: u64) -> [(&'static str, u32); 2] {
    let samples = hz.saturating_mul(interval_secs).saturating_mul(cpus);
    let size = |wanted: u64, object_max: u32| {
        wanted
            .clamp(1024, u64::from(object_max))
            .next_power_of_two() as u32
    };
    [
        (
            "profile_counts",
            size(samples, OBJECT_COUNTS).min(OBJECT_COUNTS),
        ),
        (
            "profile_stacks",
            size(samples.saturating_mul(2), OBJECT_STACKS),
        ),
    ]
}

/// profile.bpf.c's sizes of the count and stack maps.
const OBJECT_COUNTS: u32 = 40960;
const OBJECT_STACKS: u32 = 16384;

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Names kept between intervals: about 2 MB at most, re-read every 15 minutes.
fn new_frame_cache() -> FrameCache {
    FrameCache::new(16 * 1024, Duration::from_secs(15 * 60))
}

struct Written {
    path: PathBuf,
    samples: u64,
    stacks: usize,
    deleted: usize,
    /// This interval's share of the cache's work.
    names: FrameCacheStats,
}

/// What a writer thread hands back: its result and the frame cache for the next one.
type WriterResult = (Result<Written, String>, FrameCache);

struct Profiler {
    collector: Collector,
    dir: PathBuf,
    interval: Duration,
    keep: usize,
    /// Start of the current interval.
    started: Instant,
    started_unix_ns: i64,
    writing: Option<JoinHandle<WriterResult>>,
    /// Lent to the writer thread while it runs.
    frame_cache: Option<FrameCache>,
    last_file: Option<PathBuf>,
    written: Counter,
    samples: Counter,
}

impl Profiler {
    fn collect_finished(&mut self, record: &mut dyn FnMut(Value)) {
        if !self.writing.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(handle) = self.writing.take() else {
            return;
        };
        let result = handle.join().map(|(result, cache)| {
            self.frame_cache = Some(cache);
            result
        });
        match result {
            Ok(Ok(w)) => {
                self.written.inc();
                self.samples.inc_by(w.samples);
                record(
                    json!({"kind": "agent", "level": "info", "module": "profile",
                    "message": "profile written", "path": w.path, "samples": w.samples,
                    "stacks": w.stacks, "deleted_old": w.deleted, "names": w.names}),
                );
                self.last_file = Some(w.path);
            }
            Ok(Err(e)) => record(
                json!({"kind": "agent", "level": "error", "module": "profile",
                "message": format!("profile not written: {e}")}),
            ),
            Err(_) => record(
                json!({"kind": "agent", "level": "error", "module": "profile",
                "message": "profile writer panicked"}),
            ),
        }
        // Symbolizing parsed kallsyms and ELF files: give that heap back.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

impl ModuleState for Profiler {
    fn tick(&mut self, record: &mut dyn FnMut(Value)) {
        self.collect_finished(record);
        self.collector.tick();
        // One writer at a time: a slow one makes the next interval longer, not parallel.
        if self.started.elapsed() < self.interval || self.writing.is_some() {
            return;
        }
        let duration = self.started.elapsed();
        let start_ns = self.started_unix_ns;
        self.started = Instant::now();
        self.started_unix_ns = unix_ns();
        let raw = self.collector.take_interval(0);
        let (dir, keep) = (self.dir.clone(), self.keep);
        // A writer that panicked took the cache with it: start a new one.
        let cache = self.frame_cache.take().unwrap_or_else(new_frame_cache);
        self.writing = Some(std::thread::spawn(move || {
            write_profile(raw, cache, &dir, keep, start_ns, duration)
        }));
    }

    fn describe(&self) -> Value {
        json!({"directory": self.dir, "interval_secs": self.interval.as_secs(),
            "keep": self.keep, "last_file": self.last_file})
    }

    fn unload(&mut self, record: &mut dyn FnMut(Value)) {
        // A writer still symbolizing finishes on its own (or dies with the agent): stopping
        // must stay quick.
        self.collect_finished(record);
    }
}

/// Symbolizes, writes `cpu-<time>.pb.gz` through a temporary file and a rename (a reader
/// never sees half a profile), and deletes the oldest beyond `keep`.
fn write_profile(
    raw: RawProfile,
    cache: FrameCache,
    dir: &Path,
    keep: usize,
    start_unix_ns: i64,
    duration: Duration,
) -> WriterResult {
    let samples = raw.total();
    let before = cache.stats;
    // Function names only: parsing the DWARF of every sampled binary each interval would
    // dominate the agent's idle cost and memory. Names met before come from the cache.
    let mut symbolizer = Symbolizer::with_cache(false, cache);
    let profile = raw.symbolize_with(
        "all processes".into(),
        duration.as_secs_f64(),
        &mut symbolizer,
    );
    let cache = symbolizer.into_cache();
    let names = cache.stats.since(before);
    let result = write_symbolized(&profile, names, dir, keep, start_unix_ns, samples);
    (result, cache)
}

fn write_symbolized(
    profile: &crate::profile::Profile,
    names: FrameCacheStats,
    dir: &Path,
    keep: usize,
    start_unix_ns: i64,
    samples: u64,
) -> Result<Written, String> {
    let start = chrono::DateTime::from_timestamp_nanos(start_unix_ns);
    let name = format!("{PREFIX}{}{SUFFIX}", start.format("%Y%m%dT%H%M%S%.3fZ"));
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        pprof::write(profile, start_unix_ns, &mut file)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(Written {
        deleted: prune(dir, keep),
        path,
        samples,
        stacks: profile.stacks.len(),
        names,
    })
}

/// Deletes the oldest profiles beyond `keep`; returns how many went.
fn prune(dir: &Path, keep: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    names[..excess]
        .iter()
        .filter(|n| std::fs::remove_file(dir.join(n)).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_maps_hold_an_interval_of_samples_within_the_object_sizes() {
        assert_eq!(
            interval_map_sizes(19, 60, 2),
            [("profile_counts", 4096), ("profile_stacks", 8192)]
        );
        assert_eq!(
            interval_map_sizes(1, 1, 1),
            [("profile_counts", 1024), ("profile_stacks", 1024)]
        );
        assert_eq!(
            interval_map_sizes(99, 3600, 64),
            [("profile_counts", 40960), ("profile_stacks", 16384)]
        );
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("osprey-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for t in ["20240101T000003", "20240101T000001", "20240101T000002"] {
            std::fs::write(dir.join(format!("{PREFIX}{t}.000Z{SUFFIX}")), b"").unwrap();
        }
        std::fs::write(dir.join("other.txt"), b"").unwrap();
        assert_eq!(prune(&dir, 2), 1);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "cpu-20240101T000002.000Z.pb.gz",
                "cpu-20240101T000003.000Z.pb.gz",
                "other.txt"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
