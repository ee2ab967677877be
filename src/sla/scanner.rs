//! The SLA scanner: a background worker that, every `sla.scan_interval`, flags clocks
//! approaching (warning) and past (breach) their deadlines, once each, tells the sender
//! through its status queue, puts an escalation on the `escalations` queue for service
//! managers, and marks referrals never acknowledged in time as `undelivered`.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;

use crate::clock::TimeSource;
use crate::domain::sla::Clock;
use crate::store::{
    Due, DueClock, OutboxMessage, ScanCounts, Store, StoreError, rfc3339, to_micros,
};
use crate::worker::StopSignal;

pub struct Scanner {
    store: Store,
    clock: Arc<dyn TimeSource>,
    interval: std::time::Duration,
    relay_wake: Arc<Notify>,
}

/// The messages one due clock produces.
pub fn messages_for(due: &DueClock, kind: Due, now: i64) -> Vec<OutboxMessage> {
    let event = match (kind, due.clock) {
        (Due::Warning, _) => "sla_warning",
        (Due::Breach, Clock::Delivery) => "undelivered",
        (Due::Breach, _) => "sla_breach",
    };
    let body = json!({
        "referral_id": due.referral_id,
        "type": event,
        "clock": due.clock.as_str(),
        "due_at": rfc3339(due.due_at),
        "at": rfc3339(now),
        "sender_agency": due.sender_agency,
        "recipient_agency": due.recipient_agency,
        "service_type": due.service_type,
        "priority": due.priority,
    })
    .to_string();
    let id = format!("{}:{}:{}", due.referral_id, due.clock.as_str(), event);
    let mut messages = vec![OutboxMessage {
        message_id: id.clone(),
        message_type: "status",
        exchange: "referral-status",
        routing_key: format!("{}.{event}", due.sender_agency),
        payload: body.clone(),
    }];
    if kind == Due::Breach {
        messages.push(OutboxMessage {
            message_id: format!("{id}:escalation"),
            message_type: "escalation",
            exchange: "escalations",
            routing_key: format!("{}.{}", due.recipient_agency, due.clock.as_str()),
            payload: body,
        });
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
        }
    }

    /// One scan at the clock's current time.
    pub async fn scan_once(&self) -> Result<ScanCounts, StoreError> {
        let now = to_micros(self.clock.now());
        let counts = self
            .store
            .sla_scan(now, |due, kind| messages_for(due, kind, now))
            .await?;
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
