//! The SLA scanner: a background worker that, every `sla.scan_interval`, flags clocks
//! approaching (warning) and past (breach) their deadlines, once each, tells the sender
//! through its status queue, puts an escalation on the `escalations` queue for service
//! managers, and marks referrals never acknowledged in time as `undelivered`.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::clock::TimeSource;
use crate::domain::Timestamp;
use crate::domain::messages::{OutboxMessage, SlaEvent, SlaNotice};
use crate::domain::sla::Clock;
use crate::store::{Due, DueClock, ScanCounts, Store, StoreError};
use crate::worker::StopSignal;

pub struct Scanner {
    store: Store,
    clock: Arc<dyn TimeSource>,
    interval: std::time::Duration,
    relay_wake: Arc<Notify>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The messages one due clock produces.
pub fn messages_for(due: &DueClock, kind: Due, now: Timestamp) -> Vec<OutboxMessage> {
    let event = match (kind, due.clock) {
        (Due::Warning, _) => SlaEvent::Warning,
        (Due::Breach, Clock::Delivery) => SlaEvent::Undelivered,
        (Due::Breach, _) => SlaEvent::Breach,
    };
    let notice = SlaNotice {
        at: now,
        clock: due.clock,
        due_at: due.due_at,
        priority: due.priority,
        recipient_agency: &due.recipient_agency,
        referral_id: due.referral_id,
        sender_agency: &due.sender_agency,
        service_type: &due.service_type,
        event,
    };
    let id = format!(
        "{}:{}:{}",
        due.referral_id,
        due.clock.as_str(),
        event.as_str()
    );
    let mut messages = vec![OutboxMessage::sla_status(id.clone(), &notice)];
    if kind == Due::Breach {
        messages.push(OutboxMessage::escalation(
            format!("{id}:escalation"),
            &notice,
        ));
    }
    messages
}

impl Scanner {
    pub fn new(
        store: Store,
        clock: Arc<dyn TimeSource>,
        interval: std::time::Duration,
        relay_wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            clock,
            interval,
            relay_wake,
            metrics: None,
        }
    }

    /// Counts breaches in `refgw_sla_breaches_total{clock}`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One scan at the clock's current time.
    pub async fn scan_once(&self) -> Result<ScanCounts, StoreError> {
        let now = Timestamp::from(self.clock.now());
        // The breaches this scan records, counted once its transaction has committed.
        let breached = std::sync::Mutex::new(Vec::new());
        let counts = self
            .store
            .sla_scan(now, |due, kind| {
                if kind == Due::Breach
                    && let Ok(mut breached) = breached.lock()
                {
                    breached.push(due.clock);
                }
                messages_for(due, kind, now)
            })
            .await?;
        if let (Some(metrics), Ok(breached)) = (&self.metrics, breached.into_inner()) {
            for clock in breached {
                metrics.sla_breach(clock);
            }
        }
        if counts.warnings + counts.breaches > 0 {
            self.relay_wake.notify_one();
            tracing::info!(
                warnings = counts.warnings,
                breaches = counts.breaches,
                undelivered = counts.undelivered,
                "SLA scan flagged clocks"
            );
        }
        Ok(counts)
    }

    /// Scans every interval until it is asked to stop (or the stop signal's sender is gone).
    pub async fn run(self, shutdown: impl Into<StopSignal>) {
        let mut shutdown = shutdown.into();
        while !shutdown.is_stopped() {
            if let Err(e) = self.scan_once().await {
                tracing::error!(error = %e, "SLA scan failed; retrying at the next interval");
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = shutdown.stopped() => {}
            }
        }
        tracing::info!("SLA scanner stopped");
    }
}
