//! The detect stage, between enrichment and output: detectors (rules, baselines, FIM)
//! look at every enriched event and raise alerts, which are written as JSON lines
//! (`"kind": "alert"`, with the triggering event and its process ancestry) or a table.
//!
//! It plugs into the run loop as a `Sink`, so commands that do not detect are unchanged.
//! The writer is shared (`SharedAlerts`) so enforcement threads that decide outside the
//! ring path (fanotify permission events) report through the same output.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use chrono::{Local, SecondsFormat};

use super::cache::ProcessContext;
use super::event::{Event, JsonEvent};
use super::sink::{Clock, Sink};
use crate::wire::text::escape_for_terminal;

/// One alert about one event.
#[derive(Debug, Clone)]
pub struct Alert<'r> {
    pub rule: &'r str,
    pub severity: &'static str,
    pub tags: &'r [String],
    /// What the rule asks for: alert, deny, kill.
    pub action: &'static str,
    /// What happened: alerted, blocked, killed, or would_block / would_kill without --enforce.
    pub outcome: &'static str,
    /// Extra truth about the outcome (e.g. that a killed syscall had completed).
    pub note: Option<&'static str>,
    pub output: String,
    /// Where the rule comes from (osprey, sigma, falco) and, for community rules, its id,
    /// level or priority as written, and references.
    pub origin: AlertOrigin<'r>,
}

/// The provenance an alert carries in JSON (`source`, and `id`, `level`, `references`
/// for Sigma and Falco rules).
#[derive(Debug, Clone, Copy)]
pub struct AlertOrigin<'r> {
    pub source: &'static str,
    pub id: Option<&'r str>,
    pub level: Option<&'r str>,
    pub references: &'r [String],
}

impl AlertOrigin<'_> {
    /// Osprey's own detections.
    pub const OSPREY: AlertOrigin<'static> = AlertOrigin {
        source: "osprey",
        id: None,
        level: None,
        references: &[],
    };
}

pub trait Detector {
    /// Calls `raise` once per alert the event causes.
    fn detect(&mut self, event: &Event, ctx: &ProcessContext<'_>, raise: &mut dyn FnMut(Alert<'_>));

    /// Called after every drain (`u64::MAX` at the end): detectors that alert once a
    /// change has settled write those alerts here, with their own triggering event.
    fn tick(&mut self, now_boot_ns: u64, alerts: &mut AlertWriter) -> io::Result<()> {
        let _ = (now_boot_ns, alerts);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    Json,
    Table,
}

pub struct AlertWriter {
    out: Box<dyn Write + Send>,
    clock: Clock,
    format: AlertFormat,
    header_written: bool,
    pub written: u64,
}

pub type SharedAlerts = Arc<Mutex<AlertWriter>>;

impl AlertWriter {
    pub fn new(out: Box<dyn Write + Send>, clock: Clock, format: AlertFormat) -> Self {
        Self {
            out,
            clock,
            format,
            header_written: false,
            written: 0,
        }
    }

    pub fn shared(self) -> SharedAlerts {
        Arc::new(Mutex::new(self))
    }

    pub fn write(
        &mut self,
        alert: &Alert<'_>,
        event: &Event,
        ctx: &ProcessContext<'_>,
    ) -> io::Result<()> {
        self.write_with(alert, event, ctx, None)
    }

    /// Like `write`, with one more JSON member (`"fim": {...}`) about what the alert found.
    pub fn write_with(
        &mut self,
        alert: &Alert<'_>,
        event: &Event,
        ctx: &ProcessContext<'_>,
        extra: Option<(&str, serde_json::Value)>,
    ) -> io::Result<()> {
        self.written += 1;
        let latency_ns = crate::kernel::boot_time_ns().saturating_sub(event.header.ts_boot_ns);
        match self.format {
            AlertFormat::Json => {
                let mut line = alert_json(alert, event, ctx, &self.clock, latency_ns);
                if let (Some((key, value)), Some(obj)) = (extra, line.as_object_mut()) {
                    obj.insert(key.to_string(), value);
                }
                serde_json::to_writer(&mut self.out, &line)?;
                self.out.write_all(b"\n")
            }
            AlertFormat::Table => {
                if !self.header_written {
                    self.header_written = true;
                    writeln!(
                        self.out,
                        "{:<12} {:<8} {:<28} {:>7} {:<16} {:<11} OUTPUT",
                        "TIME", "SEVERITY", "RULE", "PID", "COMM", "OUTCOME"
                    )?;
                }
                let time = self
                    .clock
                    .wall(event.header.ts_boot_ns)
                    .with_timezone(&Local)
                    .format("%H:%M:%S%.3f");
                writeln!(
                    self.out,
                    "{time:<12} {:<8} {:<28} {:>7} {:<16} {:<11} {}{}",
                    alert.severity,
                    alert.rule,
                    ctx.pid,
                    escape_for_terminal(ctx.comm),
                    alert.outcome,
                    // Escaped already, as COMM is (Rule::render_output).
                    alert.output,
                    alert.note.map(|n| format!(" ({n})")).unwrap_or_default(),
                )
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One alert as its JSON line (`"kind": "alert"`, the event and its process inside).
pub fn alert_json(
    alert: &Alert<'_>,
    event: &Event,
    ctx: &ProcessContext<'_>,
    clock: &Clock,
    latency_ns: u64,
) -> serde_json::Value {
    let time = clock
        .wall(event.header.ts_boot_ns)
        .to_rfc3339_opts(SecondsFormat::Nanos, true);
    let mut line = serde_json::json!({
        "time": time,
        "kind": "alert",
        "rule": alert.rule,
        "source": alert.origin.source,
        "severity": alert.severity,
        "tags": alert.tags,
        "action": alert.action,
        "outcome": alert.outcome,
        "note": alert.note,
        "output": alert.output,
        "detect_latency_ns": latency_ns,
        "event": JsonEvent { time: &time, event, process: ctx },
    });
    if alert.origin.source != AlertOrigin::OSPREY.source {
        if let Some(obj) = line.as_object_mut() {
            obj.insert("id".into(), serde_json::json!(alert.origin.id));
            obj.insert("level".into(), serde_json::json!(alert.origin.level));
            obj.insert(
                "references".into(),
                serde_json::json!(alert.origin.references),
            );
        }
    }
    line
}

/// Runs detectors on every event and writes their alerts; the events themselves are not
/// printed.
pub struct DetectSink {
    pub detectors: Vec<Box<dyn Detector>>,
    pub alerts: SharedAlerts,
}

impl Sink for DetectSink {
    fn write(&mut self, event: &Event, process: &ProcessContext<'_>) -> io::Result<()> {
        let mut writer = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        let mut result = Ok(());
        for d in &mut self.detectors {
            d.detect(event, process, &mut |alert| {
                if result.is_ok() {
                    result = writer.write(&alert, event, process);
                }
            });
        }
        result
    }

    fn tick(&mut self, now_boot_ns: u64) -> io::Result<()> {
        let mut writer = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        let before = writer.written;
        for d in &mut self.detectors {
            d.tick(now_boot_ns, &mut writer)?;
        }
        if writer.written != before {
            writer.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush()
    }
}
