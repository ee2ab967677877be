//! HTTP API. Each resource has its own module; errors become problem+json in `problem`.

mod auditor;
pub mod console;
mod events;
mod health;
pub mod identity;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod query;
mod referrals;
pub mod refusals;
pub mod reports;
pub mod staff;

use actix_web::web;

use crate::store::Store;

pub use referrals::IDEMPOTENCY_KEY;

/// Shared by every handler.
pub struct AppState {
    /// The reloadable configuration in force (registry, agreements, SLA targets) with
    /// intake and events built from it; a request takes one snapshot
    /// ([`crate::runtime::Snapshot`]) and keeps it.
    pub runtime: std::sync::Arc<crate::runtime::RuntimeCell>,
    pub store: Store,
    pub max_body_bytes: usize,
    /// How long a request body may take (every listener).
    pub body_timeouts: crate::config::BodyTimeouts,
    /// `None` when the relay is disabled in this instance.
    pub relay: Option<std::sync::Arc<crate::delivery::relay::RelayStatus>>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub clock: std::sync::Arc<dyn crate::clock::TimeSource>,
    pub signing_key: std::sync::Arc<crate::security::signing::GatewayKey>,
    /// Earlier signing keys' public halves, still published for verification.
    pub previous_keys: Vec<crate::security::signing::PublicKey>,
    /// Checks staff bearer tokens; `None` when `[staff]` is not configured.
    pub staff_auth: Option<std::sync::Arc<crate::staff_auth::tokens::StaffAuth>>,
    /// Refusals of callers who proved no identity, audited as one entry a minute.
    pub refusals: std::sync::Arc<refusals::RefusalTally>,
    /// SLA reports computed at once in this process (each reads every clock of its
    /// period into memory): [`reports::CONCURRENT_REPORTS`].
    pub reports: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Records an access in the audit log; the request fails (500) if it cannot be recorded,
/// so nothing is disclosed without its log entry.
pub(crate) async fn record_access(
    state: &AppState,
    record: crate::store::AuditRecord,
) -> Result<(), problem::ApiError> {
    state
        .store
        .audit(&record, state.clock.now())
        .await
        .map(|_| ())
        .map_err(|e| {
            if matches!(e, crate::store::StoreError::Busy) {
                return problem::ApiError::from(e);
            }
            tracing::error!(error = %e, action = record.action.as_str(), "cannot write the audit log");
            problem::ApiError::internal()
        })
}

/// Routes of the agency (mTLS) listener.
pub fn agency_routes(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    openapi::configure_agency(cfg);
    referrals::configure(cfg);
    events::configure(cfg);
    reports::configure(cfg);
}

/// Routes of the staff listener (TLS, bearer tokens): audit queries, SLA reports and
/// referral lists.
pub fn staff_routes(cfg: &mut web::ServiceConfig) {
    health::configure_public(cfg);
    openapi::configure_staff(cfg);
    auditor::configure(cfg);
    reports::configure_staff(cfg);
    referrals::configure_staff(cfg);
}

/// Routes of the plain-HTTP operations listener: probes only, no referral data.
pub fn ops_routes(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    cfg.service(
        web::resource("/metrics")
            .route(web::get().to(health::metrics))
            .default_service(problem::method_not_allowed("GET")),
    );
}
