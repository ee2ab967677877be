//! Prometheus metrics, served as text on the ops listener at `GET /metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern (`/v1/referrals/{id}`), never the concrete path; `unmatched`
    /// for requests no route took.
    pub route: String,
    /// One of [`method_label`]'s fixed names.
    pub method: &'static str,
    pub status: u16,
}

/// The standard method names, and `other` for anything else: a label set a caller
/// cannot grow (every distinct value would be a series kept for ever).
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, name)| name)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// ack, nack, returned (unroutable) or lost (no confirm: connection dropped).
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub validation_failures: Counter,
    pub outbox_pending: Gauge,
    pub outbox_oldest_age_seconds: Gauge<f64, AtomicU64>,
    pub publish_confirms: Family<OutcomeLabels, Counter>,
    pub publish_latency_seconds: Histogram,
    /// Rows per relay round (claimed together, published pipelined, marked in one
    /// transaction).
    pub relay_batch_size: Histogram,
    pub broker_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("refgw");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status",
            http_requests.clone(),
        );
        let validation_failures = Counter::default();
        registry.register(
            "referral_validation_failures",
            "Referrals refused because they did not match their schema",
            validation_failures.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Outbox rows not yet confirmed by the broker",
            outbox_pending.clone(),
        );
        let outbox_oldest_age_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when empty)",
            outbox_oldest_age_seconds.clone(),
        );
        let publish_confirms = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "publish_confirms",
            "Publisher confirms by outcome",
            publish_confirms.clone(),
        );
        let publish_latency_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "publish_latency_seconds",
            "Time from publish to the broker's confirm",
            publish_latency_seconds.clone(),
        );
        let relay_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "relay_batch_size",
            "Outbox rows per relay round (claimed, published and marked together)",
            relay_batch_size.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the relay holds a working broker connection",
            broker_connected.clone(),
        );
        Self {
            registry,
            http_requests,
            validation_failures,
            outbox_pending,
            outbox_oldest_age_seconds,
            publish_confirms,
            publish_latency_seconds,
            relay_batch_size,
            broker_connected,
        }
    }

    pub fn confirm(&self, outcome: &'static str) {
        self.publish_confirms
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
