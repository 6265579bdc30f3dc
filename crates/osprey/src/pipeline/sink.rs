//! Where enriched events go: an aligned table for people, JSON lines for programs.

use std::io::{self, Write};

use chrono::{DateTime, Local, SecondsFormat, Utc};

use super::cache::ProcessContext;
use super::event::{write_event_json, Event, JsonEvent, Payload};
use super::process_json::ProcessJsonCache;
use crate::files;
use crate::net::tcp;
use crate::wire::text::escape_for_terminal;

pub trait Sink {
    fn write(&mut self, event: &Event, process: &ProcessContext<'_>) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// A record that is not a kernel event (health warning, agent notice), as one line.
    fn write_record(&mut self, record: &serde_json::Value) -> io::Result<()> {
        let _ = record;
        Ok(())
    }
    /// Called after every drain with CLOCK_BOOTTIME now, and once with `u64::MAX` at the
    /// end: for output decided some time after its events (FIM waits for a change to settle).
    fn tick(&mut self, now_boot_ns: u64) -> io::Result<()> {
        let _ = now_boot_ns;
        Ok(())
    }
    /// Called before the events of one capability's ring are written (sinks that treat
    /// capabilities differently, like the agent's, note where events come from).
    fn begin_capability(&mut self, capability: &'static str) {
        let _ = capability;
    }
}

/// Hands every event to a closure: for capabilities whose events feed an aggregate built
/// in user space (copied stacks, mapping descriptions) rather than an output.
pub struct EventFn<F>(pub F);

impl<F: FnMut(&Event)> Sink for EventFn<F> {
    fn write(&mut self, event: &Event, _process: &ProcessContext<'_>) -> io::Result<()> {
        (self.0)(event);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Converts CLOCK_BOOTTIME stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot_to_wall_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            boot_to_wall_ns: crate::kernel::boot_to_wall_offset_ns(),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn wall_ns(&self, boot_ns: u64) -> i128 {
        boot_ns as i128 + self.boot_to_wall_ns
    }

    pub fn wall(&self, boot_ns: u64) -> DateTime<Utc> {
        let ns = self.wall_ns(boot_ns);
        DateTime::from_timestamp(
            (ns.div_euclid(1_000_000_000)) as i64,
            ns.rem_euclid(1_000_000_000) as u32,
        )
        .unwrap_or_default()
    }
}

/// Lines are gathered in memory and handed to the writer this many bytes at a time (and on
/// `flush`): one write per batch instead of many small ones per event.
const BATCH_BYTES: usize = 1 << 16;

pub struct JsonSink<W: Write> {
    out: W,
    /// Whole lines not yet handed to `out`.
    batch: Vec<u8>,
    clock: Clock,
    time: TimeText,
    processes: ProcessJsonCache,
    host_paths: crate::container::paths::HostPaths,
}

/// An event with the host's path of the file a container process opened.
#[derive(serde::Serialize)]
struct WithHostPath<E: serde::Serialize> {
    #[serde(flatten)]
    event: E,
    host_path: String,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, clock: Clock) -> Self {
        Self {
            out,
            batch: Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 4),
            clock,
            time: TimeText::default(),
            processes: ProcessJsonCache::default(),
            host_paths: Default::default(),
        }
    }

    /// A line was added to the batch: hand the batch over once it is large.
    fn line_done(&mut self) -> io::Result<()> {
        self.batch.push(b'\n');
        if self.batch.len() >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> io::Result<()> {
        let result = self.out.write_all(&self.batch);
        self.batch.clear();
        result
    }
}

impl<W: Write> Drop for JsonSink<W> {
    /// What was not flushed is still written, as a buffered writer would.
    fn drop(&mut self) {
        let _ = self.write_batch();
    }
}

/// RFC 3339 UTC time with nanoseconds (`2024-01-02T03:04:05.123456789Z`, as chrono writes
/// it), formatted without allocating: the part up to the second is kept while the second
/// is the same, and only the nine digits of the fraction are written per event.
#[derive(Default)]
struct TimeText {
    second: Option<i64>,
    text: String,
}

impl TimeText {
    /// `wall_ns`: nanoseconds since the Unix epoch.
    fn format_ns(&mut self, wall_ns: i128) -> &str {
        let second = wall_ns.div_euclid(1_000_000_000) as i64;
        let mut nanos = wall_ns.rem_euclid(1_000_000_000) as u32;
        if self.second != Some(second) {
            let whole = DateTime::from_timestamp(second, 0).unwrap_or_default();
            self.text = whole.to_rfc3339_opts(SecondsFormat::Nanos, true);
            self.second = Some(second);
        }
        // The fraction and the Z: ".nnnnnnnnnZ" are the last 11 bytes.
        let mut digits = [b'0'; 9];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        let keep = self.text.len() - 10;
        self.text.truncate(keep);
        // ASCII digits.
        self.text
            .push_str(std::str::from_utf8(&digits).unwrap_or_default());
        self.text.push('Z');
        &self.text
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, event: &Event, process: &ProcessContext<'_>) -> io::Result<()> {
        let time = self
            .time
            .format_ns(self.clock.wall_ns(event.header.ts_boot_ns));
        let host_path = match &event.payload {
            Payload::FileOpen(f) if process.container.is_some_and(|c| !c.is_host()) => self
                .host_paths
                .resolve(process.cgroup_id, process.pid, &f.abs_path),
            _ => None,
        };
        let process = self.processes.get(process)?;
        match host_path {
            Some(p) => serde_json::to_writer(
                &mut self.batch,
                &WithHostPath {
                    event: JsonEvent {
                        time,
                        event,
                        process,
                    },
                    host_path: p.to_string_lossy().into_owned(),
                },
            )?,
            None => write_event_json(&mut self.batch, time, process, &event.payload)?,
        }
        self.line_done()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_batch()?;
        self.out.flush()
    }

    fn write_record(&mut self, record: &serde_json::Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.batch, record)?;
        self.line_done()
    }
}

/// Which columns a table shows (one layout per command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Files,
    Exec,
    Tcp,
}

pub struct TableSink<W: Write> {
    out: W,
    clock: Clock,
    layout: Layout,
    header_written: bool,
    /// A CONTAINER column follows COMM once an event from a container was seen (the
    /// header is written again when it appears).
    container_column: bool,
}

impl<W: Write> TableSink<W> {
    pub fn new(out: W, clock: Clock, layout: Layout) -> Self {
        Self {
            out,
            clock,
            layout,
            header_written: false,
            container_column: false,
        }
    }
}

impl<W: Write> Sink for TableSink<W> {
    fn write(&mut self, event: &Event, p: &ProcessContext<'_>) -> io::Result<()> {
        let container = p.container.filter(|c| !c.is_host());
        if container.is_some() && !self.container_column {
            self.container_column = true;
            self.header_written = false;
        }
        let with_container = |comm: &str, label: &str| {
            if self.container_column {
                format!("{comm:<16} {label:<16}")
            } else {
                format!("{comm:<16}")
            }
        };
        if !self.header_written {
            self.header_written = true;
            let comm_header = with_container("COMM", "CONTAINER");
            let header = match self.layout {
                Layout::Files => format!(
                    "{:<12} {:>7} {comm_header} {}",
                    "TIME",
                    "PID",
                    files::TABLE_HEADER
                ),
                Layout::Tcp => format!(
                    "{:<12} {:<5} {:>7} {comm_header} {}",
                    "TIME",
                    "EVENT",
                    "PID",
                    tcp::TABLE_HEADER
                ),
                // RET fits the longest errno name (ENAMETOOLONG).
                Layout::Exec => format!(
                    "{:<12} {:<5} {:>7} {:>7} {:>5} {comm_header} {:<12} {}",
                    "TIME", "EVENT", "PID", "PPID", "UID", "RET", "DETAILS"
                ),
            };
            writeln!(self.out, "{header}")?;
        }
        let time = self
            .clock
            .wall(event.header.ts_boot_ns)
            .with_timezone(&Local)
            .format("%H:%M:%S%.3f");
        let label = container.map_or("-", |c| c.label());
        let comm = with_container(
            &escape_for_terminal(p.comm),
            &escape_for_terminal(label.as_bytes()),
        );
        match (&event.payload, self.layout) {
            (Payload::FileOpen(f), _) => writeln!(
                self.out,
                "{time:<12} {:>7} {comm} {}",
                p.pid,
                f.table_columns()
            ),
            (Payload::TcpClose(c), _) => writeln!(
                self.out,
                "{time:<12} {:<5} {:>7} {comm} {}",
                "close",
                p.pid,
                c.table_details()
            ),
            (Payload::TcpState(t), _) => writeln!(
                self.out,
                "{time:<12} {:<5} {:>7} {comm} {}",
                "state",
                p.pid,
                t.table_details()
            ),
            (payload, _) => {
                let (ret, details) = match payload {
                    Payload::Exec(x) => {
                        let ret = if x.ret < 0 {
                            files::errno_name((-x.ret) as i32).to_string()
                        } else {
                            "0".into()
                        };
                        (ret, x.table_details())
                    }
                    Payload::Fork(f) => ("-".into(), format!("child={}", f.child_pid)),
                    Payload::Exit(x) => ("-".into(), x.table_details(event.header.ts_boot_ns)),
                    Payload::ProfileUserStack(u) => {
                        ("-".into(), format!("stack_bytes={}", u.stack.len()))
                    }
                    Payload::FaultMapping(m) => (
                        "-".into(),
                        format!(
                            "{:#x}-{:#x} {}",
                            m.key.vma_start,
                            m.vma_end,
                            crate::wire::text::escape_for_terminal(
                                m.path.as_deref().unwrap_or(m.class.label().as_bytes())
                            )
                        ),
                    ),
                    Payload::Security(s) => (s.ret.to_string(), s.table_details()),
                    Payload::Fim(f) => (f.ret.to_string(), f.table_details()),
                    Payload::Baseline(b) => (
                        "-".into(),
                        format!("{} {}", b.op_name(), crate::syscalls::syscall_name(b.nr)),
                    ),
                    Payload::FileOpen(_) | Payload::TcpClose(_) | Payload::TcpState(_) => {
                        unreachable!("handled above")
                    }
                };
                writeln!(
                    self.out,
                    "{time:<12} {:<5} {:>7} {:>7} {:>5} {comm} {ret:<12} {details}",
                    payload.kind_name(),
                    p.pid,
                    p.ppid,
                    p.uid,
                )
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::cache::tests::ev;
    use super::*;

    #[test]
    fn time_text_is_what_chrono_writes() {
        let mut time = TimeText::default();
        for (secs, nanos) in [
            (1_700_000_000, 5),
            (1_700_000_000, 999_999_999),
            (1_700_000_001, 0),
            (1_700_000_000, 120_000_000),
            (0, 1),
            (4_102_444_800, 42),
            (-1, 999_999_999),
        ] {
            let wall = DateTime::from_timestamp(secs, nanos).unwrap();
            let want = wall.to_rfc3339_opts(SecondsFormat::Nanos, true);
            let ns = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
            assert_eq!(time.format_ns(ns), want);
        }
    }

    fn open_event(ts: u64, path: &[u8]) -> Event {
        ev(
            11,
            10,
            ts,
            Payload::FileOpen(files::FileOpen {
                op: 2,
                ret: -2,
                flags: 0o100,
                mode: 0o644,
                resolve: 0,
                dirfd: -100,
                ino: 0,
                dev: 0,
                status: 0,
                path: path.to_vec(),
                abs_path: path.to_vec(),
            }),
        )
    }

    fn fork_event(parent: u32, parent_comm: &[u8], child: u32) -> Event {
        let fork = crate::process::Fork {
            child_pid: child,
            child_start_boot_ns: 0,
        };
        let mut event = ev(parent, 0, 1, Payload::Fork(fork));
        event.header.comm = parent_comm.to_vec();
        event
    }

    /// The sink's lines (cached process objects, its own time text) are byte for byte what
    /// serializing each event with its context gives, also after the cache changed.
    #[test]
    fn json_lines_are_the_serialized_events() {
        let clock = Clock::now();
        let mut cache = super::super::cache::ProcessCache::new(100, 1_000);
        cache.observe(&fork_event(1, b"first", 10));
        // The opener is known: no look-up in this machine's /proc.
        cache.observe(&fork_event(10, b"first", 11));
        let steps: Vec<(Option<Event>, Event)> = vec![
            (None, open_event(1_000_000_000_123, b"/a")),
            (None, open_event(1_000_000_000_124, b"/b\xff\"q\"")),
            (
                Some(fork_event(1, b"second", 10)),
                open_event(1_000_999_999_999, b"/c"),
            ),
            (None, open_event(1_001_000_000_000, b"rel")),
        ];
        let mut out = Vec::new();
        let mut want = String::new();
        {
            let mut sink = JsonSink::new(&mut out, clock);
            for (change, event) in &steps {
                if let Some(change) = change {
                    cache.observe(change);
                }
                cache.observe(event);
                let ctx = cache.context(event);
                sink.write(event, &ctx).unwrap();
                let wall = clock.wall(event.header.ts_boot_ns);
                let time = wall.to_rfc3339_opts(SecondsFormat::Nanos, true);
                let line = JsonEvent {
                    time: &time,
                    event,
                    process: &ctx,
                };
                want += &serde_json::to_string(&line).unwrap();
                want.push('\n');
            }
            assert_eq!(sink.processes.hits, 2);
        }
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert!(want.contains("\"second\""), "{want}");
    }

    #[test]
    fn json_lines_reach_the_writer_on_flush_and_on_drop() {
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out, Clock::now());
            sink.write_record(&serde_json::json!({"a": 1})).unwrap();
            sink.flush().unwrap();
            sink.write_record(&serde_json::json!({"b": 2})).unwrap();
        }
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    }
}
