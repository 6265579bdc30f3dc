//! The agent's once-a-second look at itself: module work, metrics (programs, events,
//! process cache, ring fill), and the health of its probes.

use std::time::Instant;

use serde_json::json;

use super::metrics::{CapabilityLabels, HealthLabels, ProbeLabels};
use super::running::Running;
use crate::kernel::stats::Snapshot;
use crate::pipeline::run::Pipeline;

impl Running {
    /// Once a second: module work, metrics, ring fill, health.
    pub(super) fn observe(&mut self, pipeline: &mut Pipeline<'_>, now: Instant) {
        let mut records = Vec::new();
        for state in self.enabled.iter_mut().filter_map(|e| e.state.as_mut()) {
            state.tick(&mut |r| records.push(r));
        }
        for r in records {
            self.record(pipeline, r);
        }
        let snap = Snapshot::take(&pipeline.capabilities);
        self.metrics.observe(&snap);
        self.metrics.observe_self();
        self.metrics.cache_entries.set(pipeline.cache.len() as i64);
        let evictions = pipeline.cache.evictions;
        let before = self.metrics.cache_evictions.get();
        self.metrics
            .cache_evictions
            .inc_by(evictions.saturating_sub(before));
        let written = self.logged.get();
        let before = self.metrics.events_written.get();
        self.metrics
            .events_written
            .inc_by(written.saturating_sub(before));
        for cap in &pipeline.capabilities {
            let peak = pipeline
                .ring_peak_bytes
                .get(cap.spec.name)
                .copied()
                .unwrap_or(0);
            let size = cap.ring_bytes.max(1) as f64;
            self.metrics
                .ring_fill
                .get_or_create(&CapabilityLabels {
                    capability: cap.spec.name.into(),
                })
                .set(peak as f64 / size);
        }
        pipeline.ring_peak_bytes.clear();
        // The kernel counts runs only while run-time statistics are on.
        let runs_counted = self.config.metrics.run_time_stats;
        for warning in self.health.observe(&snap, now, runs_counted) {
            if warning.reason != "recovered" {
                self.metrics
                    .health_warnings
                    .get_or_create(&HealthLabels {
                        capability: warning.capability.clone(),
                        kind: warning.kind.clone(),
                        reason: warning.reason.into(),
                    })
                    .inc();
            }
            let level = if warning.reason == "recovered" {
                "info"
            } else {
                "warning"
            };
            self.record(
                pipeline,
                json!({"kind": "health", "level": level, "capability": warning.capability,
                "probe": warning.kind, "reason": warning.reason, "detail": warning.detail}),
            );
        }
        for k in &snap.kinds {
            let healthy = self.health.is_healthy(k.capability, k.kind);
            self.metrics
                .probe_healthy
                .get_or_create(&ProbeLabels {
                    capability: k.capability.into(),
                    kind: k.kind.into(),
                })
                .set(i64::from(healthy));
        }
    }
}
