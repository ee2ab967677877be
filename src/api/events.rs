//! `POST /v1/referrals/{id}/events`: lifecycle events. Who may call: the referral's
//! recipient (acknowledged, accepted, declined, redirected, first_contact, closed) and its
//! sender (follow_up, withdrawn); 404 for everyone else.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::AppState;
use super::identity::CallerAgency;
use super::middleware::body::read_json_body;
use super::problem::{ApiError, ProblemKind};
use crate::intake::events::Posted;

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/referrals/{id}/events")
            .route(web::post().to(post_event))
            .default_service(super::problem::method_not_allowed("POST")),
    );
}

/// Problems `POST /v1/referrals/{id}/events` answers with (besides those of every operation).
pub(crate) const PROBLEMS: &[ProblemKind] = &[
    ProblemKind::UnreadableBody,
    ProblemKind::MalformedJson,
    ProblemKind::UnknownAgency,
    ProblemKind::NotPermitted,
    ProblemKind::NotFound,
    ProblemKind::BodyTimeout,
    ProblemKind::IdempotencyConflict,
    ProblemKind::IllegalTransition,
    ProblemKind::TooManyEvents,
    ProblemKind::PayloadTooLarge,
    ProblemKind::UnsupportedMediaType,
    ProblemKind::SchemaValidation,
    ProblemKind::Internal,
    ProblemKind::Overloaded,
];

/// Post a lifecycle event on a referral (docs/lifecycle.md).
#[utoipa::path(
    post,
    path = "/v1/referrals/{id}/events",
    operation_id = "postReferralEvent",
    tag = "referrals",
    params(("id" = String, Path, description = "The `referral_id`.")),
    request_body(
        content = crate::api::openapi::EventDocument,
        content_type = "application/json",
        description = "The event; `event_id` (chosen by the client) makes retries idempotent."
    ),
    responses(
        (status = 201, description = "Recorded: the event's record.", body = crate::domain::messages::EventRecord),
        (status = 200, description = "A replay of an event already recorded with the same `event_id` and body (`Idempotent-Replayed: true`).",
         body = crate::domain::messages::EventRecord,
         headers(("Idempotent-Replayed" = String, description = "`true`."))),
    )
)]
pub(crate) async fn post_event(
    req: HttpRequest,
    caller: CallerAgency,
    snapshot: crate::runtime::Snapshot,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json_body(&req, payload, state.max_body_bytes).await?;
    let now = state.clock.now();
    let posted = snapshot
        .events
        .post(&caller.0, &path.into_inner(), &body, now)
        .await?;
    let (event, status, replayed) = match posted {
        Posted::Created(e) => (e, StatusCode::CREATED, false),
        Posted::Replayed(e) => (e, StatusCode::OK, true),
    };
    let record: Value = serde_json::from_str(&event.body).map_err(|_| {
        crate::store::StoreError::Corrupt("a stored event record is not JSON".to_owned())
    })?;
    let mut res = HttpResponse::build(status);
    if replayed {
        res.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(res.json(record))
}
