//! `[relay]`: the outbox relay's batch size, lease, polling and backoff.

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    enabled: Option<bool>,
    batch_size: Option<u32>,
    lease_secs: Option<u64>,
    poll_interval_ms: Option<u64>,
    max_backoff_secs: Option<u64>,
}

/// The outbox relay (delivery to RabbitMQ).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub enabled: bool,
    /// Rows claimed and published (pipelined, confirms awaited together) per round.
    pub batch_size: u32,
    /// How long a claim lasts; a crashed instance's rows are retried after it.
    pub lease: std::time::Duration,
    /// How often to look for due rows when nothing wakes the relay.
    pub poll_interval: std::time::Duration,
    /// Ceiling of the exponential backoff between attempts (reconnects and retries).
    pub max_backoff: std::time::Duration,
}

pub(super) fn build_relay(raw: RawRelay, problems: &mut Problems) -> RelayConfig {
    let relay = RelayConfig {
        enabled: raw.enabled.unwrap_or(true),
        batch_size: raw.batch_size.unwrap_or(200),
        lease: std::time::Duration::from_secs(raw.lease_secs.unwrap_or(30)),
        poll_interval: std::time::Duration::from_millis(raw.poll_interval_ms.unwrap_or(500)),
        max_backoff: std::time::Duration::from_secs(raw.max_backoff_secs.unwrap_or(60)),
    };
    if relay.batch_size == 0 || relay.batch_size > 5000 {
        problems.push("relay.batch_size", "must be between 1 and 5000");
    }
    if relay.lease < std::time::Duration::from_secs(5) {
        problems.push("relay.lease_secs", "must be at least 5");
    }
    if relay.poll_interval.is_zero() {
        problems.push("relay.poll_interval_ms", "must be at least 1");
    }
    if relay.max_backoff.is_zero() {
        problems.push("relay.max_backoff_secs", "must be at least 1");
    }
    relay
}
