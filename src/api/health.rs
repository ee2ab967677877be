//! Liveness and readiness. Open to any caller that reaches the listener (on the agency
//! listener that means any client certificate the scheme CA signed; on the ops listener,
//! anyone who can reach its address).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "checks": { "database": "ok" }
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "checks": { "database": "unreachable" }
            }))
        }
    }
}
