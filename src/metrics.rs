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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// handed_over (by the committer, in memory) or claimed (read from the outbox).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClockLabels {
    /// acknowledge, decision, first_contact or delivery (`Clock::as_str`).
    pub clock: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `agency` (the mTLS listener) or `staff`.
    pub listener: &'static str,
    /// One of `security::handshake::FailureReason`'s fixed names.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// A fixed reason code (`api::refusals`), never the caller's text.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `rejected`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SettingLabels {
    /// A configuration section or key, from `reload::restart_needed`'s fixed list.
    pub setting: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgencyLabels {
    /// A registered agency's id (the label set is the registry).
    pub agency: String,
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
    /// Outbox rows the relay took, by how they reached it.
    pub relay_rows: Family<SourceLabels, Counter>,
    pub broker_connected: Gauge,
    pub sla_breaches: Family<ClockLabels, Counter>,
    /// Writes per committed batch (`[database] commit_batch_max` at most).
    pub commit_batch_size: Histogram,
    /// From taking a batch to answering its writers.
    pub commit_seconds: Histogram,
    /// Writes waiting for the committer, as of the scrape.
    pub commit_queue_depth: Gauge,
    /// Batches that failed and were written again item by item.
    pub commit_batches_split: Counter,
    pub tls_handshake_failures: Family<HandshakeLabels, Counter>,
    pub auth_refused_unverified: Family<RefusalLabels, Counter>,
    pub agency_certificate_expiry_days: Family<AgencyLabels, Gauge<f64, AtomicU64>>,
    /// Configuration reloads by outcome.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// The generation of the configuration in force (1 at start-up).
    pub config_generation: Gauge,
    /// When the configuration in force was loaded (Unix seconds).
    pub config_loaded_timestamp: Gauge,
    /// Settings changed in the file whose new values wait for a restart (1 each).
    pub config_restart_needed: Family<SettingLabels, Gauge>,
    /// Every setting `config_restart_needed` has named.
    restart_settings: std::sync::Mutex<Vec<&'static str>>,
    /// Each registered agency's latest certificate expiry (Unix seconds), from
    /// `tls.issued_dir`; the gauge is computed from it at each scrape.
    certificate_expiries: std::sync::Mutex<Vec<(String, i64)>>,
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
        let relay_rows = Family::<SourceLabels, Counter>::default();
        registry.register(
            "relay_rows",
            "Outbox rows the relay took to publish: handed_over by the committer in memory, or claimed from the outbox",
            relay_rows.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the relay holds a working broker connection",
            broker_connected.clone(),
        );
        let sla_breaches = Family::<ClockLabels, Counter>::default();
        registry.register(
            "sla_breaches",
            "SLA clocks the scanner found past their deadline, by clock (each breach once)",
            sla_breaches.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "commit_batch_size",
            "Writes (referrals, events, audit entries) committed per transaction",
            commit_batch_size.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "commit_seconds",
            "Time to write and commit one batch, and answer its writers",
            commit_seconds.clone(),
        );
        let commit_queue_depth = Gauge::default();
        registry.register(
            "commit_queue_depth",
            "Writes waiting for the committer",
            commit_queue_depth.clone(),
        );
        let commit_batches_split = Counter::default();
        registry.register(
            "commit_batches_split",
            "Batches that could not be committed whole and were written again one write at a time",
            commit_batches_split.clone(),
        );
        let tls_handshake_failures = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Clients refused at the TLS handshake (or, for unknown_agency, after it) by listener and reason",
            tls_handshake_failures.clone(),
        );
        let auth_refused_unverified = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "auth_refused_unverified",
            "Staff requests and console sign-ins refused before any identity was verified, by fixed reason (tallied in the audit log once a minute)",
            auth_refused_unverified.clone(),
        );
        let agency_certificate_expiry_days =
            Family::<AgencyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "agency_certificate_expiry_days",
            "Days until the agency's certificate (latest in tls.issued_dir) expires; negative once expired",
            agency_certificate_expiry_days.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, referral-gateway reload) by outcome: applied or rejected",
            config_reloads.clone(),
        );
        // Both outcomes are shown from the start, so a rate over them is defined.
        for outcome in ["applied", "rejected"] {
            let _ = config_reloads.get_or_create(&ReloadLabels { outcome });
        }
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the configuration in force: 1 at start-up, one more per applied reload",
            config_generation.clone(),
        );
        let config_loaded_timestamp = Gauge::default();
        registry.register(
            "config_loaded_timestamp_seconds",
            "When the configuration in force was loaded (Unix time)",
            config_loaded_timestamp.clone(),
        );
        let config_restart_needed = Family::<SettingLabels, Gauge>::default();
        registry.register(
            "config_restart_needed",
            "1 for each setting that the last applied reload found changed but could not apply (its new value takes effect at the next restart); 0 for one named by an earlier reload that no longer waits",
            config_restart_needed.clone(),
        );
        Self {
            registry,
            config_reloads,
            config_generation,
            config_loaded_timestamp,
            config_restart_needed,
            restart_settings: std::sync::Mutex::new(Vec::new()),
            tls_handshake_failures,
            auth_refused_unverified,
            agency_certificate_expiry_days,
            certificate_expiries: std::sync::Mutex::new(Vec::new()),
            http_requests,
            validation_failures,
            outbox_pending,
            outbox_oldest_age_seconds,
            publish_confirms,
            publish_latency_seconds,
            relay_batch_size,
            relay_rows,
            broker_connected,
            sla_breaches,
            commit_batch_size,
            commit_seconds,
            commit_queue_depth,
            commit_batches_split,
        }
    }

    /// `rows` outbox rows reached the relay from `source` (see [`SourceLabels`]).
    pub fn relay_rows(&self, source: &'static str, rows: usize) {
        self.relay_rows
            .get_or_create(&SourceLabels { source })
            .inc_by(rows as u64);
    }

    pub fn confirm(&self, outcome: &'static str) {
        self.publish_confirms
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One SLA breach of `clock` recorded.
    pub fn sla_breach(&self, clock: crate::domain::sla::Clock) {
        self.sla_breaches
            .get_or_create(&ClockLabels {
                clock: clock.as_str(),
            })
            .inc();
    }

    pub fn handshake_failure(
        &self,
        listener: &'static str,
        reason: crate::security::handshake::FailureReason,
    ) {
        self.tls_handshake_failures
            .get_or_create(&HandshakeLabels {
                listener,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// One refusal of a caller who proved no identity (see `api::refusals`).
    pub fn refused_unverified(&self, reason: &'static str) {
        self.auth_refused_unverified
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// One configuration reload ended with `outcome` (`applied` or `rejected`).
    pub fn config_reload(&self, outcome: &'static str) {
        self.config_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
    }

    /// Configuration `generation`, loaded at `at`, is in force.
    pub fn config_loaded(&self, generation: u64, at: time::OffsetDateTime) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.config_loaded_timestamp.set(at.unix_timestamp());
    }

    /// The settings the last applied reload could not apply (empty: none wait). A
    /// setting once named stays in the family, at 0 when it no longer waits, so that no
    /// scrape sees the set half-updated.
    pub fn config_restart_needed(&self, settings: &[&'static str]) {
        let Ok(mut named) = self.restart_settings.lock() else {
            return;
        };
        for &setting in settings {
            self.config_restart_needed
                .get_or_create(&SettingLabels { setting })
                .set(1);
            if !named.contains(&setting) {
                named.push(setting);
            }
        }
        for &setting in named.iter().filter(|s| !settings.contains(s)) {
            self.config_restart_needed
                .get_or_create(&SettingLabels { setting })
                .set(0);
        }
    }

    /// The agencies' certificate expiries (agency id, not-after in Unix seconds) that
    /// `refgw_agency_certificate_expiry_days` reports from now on.
    pub fn set_certificate_expiries(&self, expiries: Vec<(String, i64)>) {
        // Agencies a reload removed are no longer reported.
        self.agency_certificate_expiry_days.clear();
        *self
            .certificate_expiries
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = expiries;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (agency, not_after) in self
            .certificate_expiries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            self.agency_certificate_expiry_days
                .get_or_create(&AgencyLabels {
                    agency: agency.clone(),
                })
                .set((not_after - now) as f64 / 86_400.0);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
