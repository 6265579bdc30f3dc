//! Where the agent's events go: JSON lines into the event log, and through the detect stage
//! (`osprey secure`'s detectors) when the security module is loaded. Alerts, health
//! warnings and agent notices are log records too, and also go to syslog when asked.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::eventlog::LogTarget;
use super::metrics::{AlertLabels, EventMetrics};
use super::syslog::Syslog;
use crate::pipeline::cache::ProcessContext;
use crate::pipeline::detect::{alert_json, AlertFormat, AlertWriter, Detector};
use crate::pipeline::event::Event;
use crate::pipeline::sink::{Clock, JsonSink, Sink};

/// The detectors of the security module and which capabilities feed them.
pub struct Detection {
    pub detectors: Vec<Box<dyn Detector>>,
    /// Capabilities loaded only for detection: their events are not logged.
    pub own_sources: Vec<&'static str>,
    /// Capabilities of other modules whose events detectors also look at (execs).
    pub shared_sources: &'static [&'static str],
    pub alerts: Family<AlertLabels, Counter>,
    /// `osprey_container_alerts_total{rule, container, namespace}` (bounded).
    pub container_alerts: crate::container::labels::ContainerAlerts,
}

/// osprey_alerts_total{rule, severity}.
fn count_alert(alerts: &Family<AlertLabels, Counter>, rule: &str, severity: &str) {
    alerts
        .get_or_create(&AlertLabels {
            rule: rule.into(),
            severity: severity.into(),
        })
        .inc();
}

/// Set by the security module while it is loaded.
pub type DetectionSlot = Rc<RefCell<Option<Detection>>>;

pub struct AgentSink {
    log: JsonSink<LogTarget>,
    clock: Clock,
    pub syslog: Option<Syslog>,
    pub detection: DetectionSlot,
    event_metrics: EventMetrics,
    source: &'static str,
    /// Events written to the log (not those only detection saw).
    pub logged: Rc<Cell<u64>>,
}

impl AgentSink {
    pub fn new(log: LogTarget, clock: Clock, event_metrics: EventMetrics) -> Self {
        Self {
            log: JsonSink::new(log, clock),
            clock,
            syslog: None,
            detection: DetectionSlot::default(),
            event_metrics,
            source: "",
            logged: Rc::default(),
        }
    }
}

impl Sink for AgentSink {
    fn write(&mut self, event: &Event, process: &ProcessContext<'_>) -> io::Result<()> {
        self.event_metrics.observe(event);
        let slot = self.detection.clone();
        let mut detection = slot.borrow_mut();
        let own = match detection.as_mut() {
            Some(d) => {
                let own = d.own_sources.contains(&self.source);
                if own || d.shared_sources.contains(&self.source) {
                    let mut alerts = Vec::new();
                    let latency = crate::kernel::boot_time_ns();
                    for detector in &mut d.detectors {
                        detector.detect(event, process, &mut |alert| {
                            count_alert(&d.alerts, alert.rule, alert.severity);
                            d.container_alerts
                                .count(alert.rule, process.container.map(|c| &**c));
                            let latency_ns = latency.saturating_sub(event.header.ts_boot_ns);
                            alerts.push(alert_json(
                                &alert,
                                event,
                                process,
                                &self.clock,
                                latency_ns,
                            ));
                        });
                    }
                    for alert in alerts {
                        self.write_record(&alert)?;
                    }
                }
                own
            }
            None => false,
        };
        if own {
            return Ok(());
        }
        self.logged.set(self.logged.get() + 1);
        self.log.write(event, process)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.log.flush()
    }

    fn write_record(&mut self, record: &serde_json::Value) -> io::Result<()> {
        if let Some(syslog) = &mut self.syslog {
            syslog.send_record(record);
        }
        self.log.write_record(record)
    }

    fn begin_capability(&mut self, capability: &'static str) {
        self.source = capability;
    }

    /// Alerts decided after their events (FIM waits for a change to settle) come from the
    /// detectors' tick as JSON lines; they become log records and metrics like the others.
    fn tick(&mut self, now_boot_ns: u64) -> io::Result<()> {
        let slot = self.detection.clone();
        let mut detection = slot.borrow_mut();
        let Some(d) = detection.as_mut() else {
            return Ok(());
        };
        let lines = SharedLines::default();
        let mut writer = AlertWriter::new(Box::new(lines.clone()), self.clock, AlertFormat::Json);
        for detector in &mut d.detectors {
            detector.tick(now_boot_ns, &mut writer)?;
        }
        if writer.written == 0 {
            return Ok(());
        }
        writer.flush()?;
        let text = std::mem::take(&mut *lines.0.lock().unwrap_or_else(|e| e.into_inner()));
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let alert: serde_json::Value = serde_json::from_slice(line)?;
            count_alert(
                &d.alerts,
                alert["rule"].as_str().unwrap_or(""),
                alert["severity"].as_str().unwrap_or(""),
            );
            self.write_record(&alert)?;
        }
        Ok(())
    }
}

/// An in-memory `Write` the alert writer fills and the tick reads back.
#[derive(Clone, Default)]
struct SharedLines(Arc<Mutex<Vec<u8>>>);

impl io::Write for SharedLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
