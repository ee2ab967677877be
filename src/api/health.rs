//! Liveness and readiness. Open to any caller that reaches the listener (on the agency
//! listener that means any client certificate the scheme CA signed; on the ops listener,
//! anyone who can reach its address).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_public(cfg);
    cfg.route("/readyz", web::get().to(readyz));
}

/// Liveness and the public keys only: for the staff listener, which anyone on the
/// network may reach without a certificate (readiness shows the backlog and broker).
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/v1/keys", web::get().to(keys));
}

/// The public keys that verify receipts and audit checkpoints, by key id. Open to any
/// caller that reaches a listener: public keys are public.
async fn keys(state: web::Data<AppState>) -> HttpResponse {
    let keys: Vec<_> = std::iter::once(state.signing_key.public())
        .chain(state.previous_keys.iter())
        .map(|key| {
            json!({
                "kid": key.key_id,
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "x": key.base64url(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "keys": keys }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
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

/// `ready` (200): database and broker reachable. `degraded` (200): the database works but
/// the broker does not; referrals are still accepted and wait in the outbox.
/// `unavailable` (503): the database is unreachable, so nothing can be accepted.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let backlog = match state.store.outbox_backlog().await {
        Ok(backlog) => backlog,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            return HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "checks": { "database": "unreachable" }
            }));
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
    HttpResponse::Ok().json(json!({
        "status": status,
        "checks": { "database": "ok", "broker": broker },
        "outbox": { "pending": backlog.pending, "oldest_age_seconds": oldest_age_seconds }
    }))
}
