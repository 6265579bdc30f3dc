//! Where enriched events go: an aligned table for people, JSON lines for programs.

use std::io::{self, Write};

use chrono::{DateTime, Local, SecondsFormat, Utc};

use super::cache::ProcessContext;
use super::event::{Event, JsonEvent, Payload};
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

    pub fn wall(&self, boot_ns: u64) -> DateTime<Utc> {
        let ns = boot_ns as i128 + self.boot_to_wall_ns;
        DateTime::from_timestamp(
            (ns.div_euclid(1_000_000_000)) as i64,
            ns.rem_euclid(1_000_000_000) as u32,
        )
        .unwrap_or_default()
    }
}

pub struct JsonSink<W: Write> {
    out: W,
    clock: Clock,
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
            clock,
            processes: ProcessJsonCache::default(),
            host_paths: Default::default(),
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, event: &Event, process: &ProcessContext<'_>) -> io::Result<()> {
        let time = self
            .clock
            .wall(event.header.ts_boot_ns)
            .to_rfc3339_opts(SecondsFormat::Nanos, true);
        let host_path = match &event.payload {
            Payload::FileOpen(f) if process.container.is_some_and(|c| !c.is_host()) => self
                .host_paths
                .resolve(process.cgroup_id, process.pid, &f.abs_path),
            _ => None,
        };
        let process = self.processes.get(process)?;
        let json = JsonEvent {
            time: &time,
            event,
            process,
        };
        match host_path {
            Some(p) => serde_json::to_writer(
                &mut self.out,
                &WithHostPath {
                    event: json,
                    host_path: p.to_string_lossy().into_owned(),
                },
            )?,
            None => serde_json::to_writer(&mut self.out, &json)?,
        }
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write_record(&mut self, record: &serde_json::Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
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
