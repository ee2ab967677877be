//! Liveness and readiness. Open to any caller that reaches the listener (on the agency
//! listener that means any client certificate the scheme CA signed; on the ops listener,
//! anyone who can reach its address).

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_public(cfg);
    cfg.service(
        web::resource("/readyz")
            .route(web::get().to(readyz))
            .default_service(super::problem::method_not_allowed("GET")),
    );
}

/// Liveness and the public keys only: for the staff listener, which anyone on the
/// network may reach without a certificate (readiness shows the backlog and broker).
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .default_service(super::problem::method_not_allowed("GET")),
    )
    .service(
        web::resource("/v1/keys")
            .route(web::get().to(keys))
            .default_service(super::problem::method_not_allowed("GET")),
    );
}

/// A JWK set of Ed25519 public keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeySet {
    keys: Vec<PublicJwk>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Serialize, ToSchema)]
pub(crate) struct PublicJwk {
    /// The first 16 hex digits of the SHA-256 of the raw public key.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    kid: String,
    #[schema(value_type = String, pattern = "^OKP$")]
    kty: &'static str,
    #[schema(value_type = String, pattern = "^Ed25519$")]
    crv: &'static str,
    #[schema(value_type = String, pattern = "^EdDSA$")]
    alg: &'static str,
    #[serde(rename = "use")]
    #[schema(value_type = String, pattern = "^sig$")]
    use_: &'static str,
    /// The 32-byte public key, base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    x: String,
}

/// The public keys that verify receipts and audit checkpoints, by key id. Open to any
/// caller that reaches a listener: public keys are public.
#[utoipa::path(
    get,
    path = "/v1/keys",
    operation_id = "getKeys",
    tag = "keys",
    responses((status = 200, description = "The current signing key and earlier ones still published.", body = KeySet))
)]
pub(crate) async fn keys(state: web::Data<AppState>) -> HttpResponse {
    let keys: Vec<_> = std::iter::once(state.signing_key.public())
        .chain(state.previous_keys.iter())
        .map(|key| PublicJwk {
            kid: key.key_id.clone(),
            kty: "OKP",
            crv: "Ed25519",
            alg: "EdDSA",
            use_: "sig",
            x: key.base64url(),
        })
        .collect();
    HttpResponse::Ok().json(KeySet { keys })
}

/// `{"status":"ok"}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Liveness {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// Liveness: the process is serving requests. No checks.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getLiveness",
    tag = "health",
    responses((status = 200, description = "The process is serving requests.", body = Liveness))
)]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok" })
}

/// Prometheus text format. Who may call: whoever reaches the ops listener.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let waiting = i64::try_from(state.store.commit_queue_depth()).unwrap_or(i64::MAX);
    state.metrics.commit_queue_depth.set(waiting);
    if let Ok(backlog) = state.store.outbox_backlog().await {
        state.metrics.outbox_pending.set(backlog.pending);
        let age = backlog.oldest_age_seconds(state.clock.now());
        state
            .metrics
            .outbox_oldest_age_seconds
            .set(age.unwrap_or(0.0));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// Readiness: `ready` or `degraded` (200), `unavailable` (503, no `outbox`, no broker check).
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    #[schema(value_type = String, pattern = "^(ready|degraded|unavailable)$")]
    status: &'static str,
    checks: ReadinessChecks,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox: Option<OutboxBacklog>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReadinessChecks {
    #[schema(value_type = String, pattern = "^(ok|unreachable)$")]
    database: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(ok|unreachable|relay_disabled)$")]
    broker: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct OutboxBacklog {
    /// Outbox rows not yet confirmed by the broker.
    #[schema(minimum = 0)]
    pending: i64,
    /// Age in seconds of the oldest of them; null when none is pending.
    oldest_age_seconds: Option<f64>,
}

/// `ready` (200): database and broker reachable. `degraded` (200): the database works but
/// the broker does not; referrals are still accepted and wait in the outbox.
/// `unavailable` (503): the database is unreachable, so nothing can be accepted.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "getReadiness",
    tag = "health",
    responses(
        (status = 200, description = "`ready`, or `degraded` (the broker is unreachable; referrals wait in the outbox).", body = Readiness),
        (status = 503, description = "`unavailable`: the database cannot be reached.", body = Readiness)
    )
)]
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let backlog = match state.store.outbox_backlog().await {
        Ok(backlog) => backlog,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            return HttpResponse::ServiceUnavailable().json(Readiness {
                status: "unavailable",
                checks: ReadinessChecks {
                    database: "unreachable",
                    broker: None,
                },
                outbox: None,
            });
        }
    };
    let oldest_age_seconds = backlog.oldest_age_seconds(state.clock.now());
    let broker = match &state.relay {
        None => "relay_disabled",
        Some(relay) if relay.broker_connected() => "ok",
        Some(_) => "unreachable",
    };
    let status = if broker == "unreachable" {
        "degraded"
    } else {
        "ready"
    };
    HttpResponse::Ok().json(Readiness {
        status,
        checks: ReadinessChecks {
            database: "ok",
            broker: Some(broker),
        },
        outbox: Some(OutboxBacklog {
            pending: backlog.pending,
            oldest_age_seconds,
        }),
    })
}
