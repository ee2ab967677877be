//! `/v1/referrals`: submit a referral (registered sending agencies) and read its status
//! (its sender and its recipient only; everyone else gets 404).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use super::AppState;
use super::correlation::CorrelationId;
use super::identity::CallerAgency;
use super::problem::ApiError;
use crate::domain::ReferralId;
use crate::intake::{IntakeError, Receipt, Submitted};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/referrals")
            .route(web::post().to(submit))
            .default_service(web::to(super::problem::method_not_allowed)),
    )
    .service(
        web::resource("/v1/referrals/{id}")
            .route(web::get().to(status))
            .default_service(web::to(super::problem::method_not_allowed)),
    );
}

/// Who may call: a registered agency with a sending role, over mTLS.
async fn submit(
    req: HttpRequest,
    caller: CallerAgency,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_json(&req)?;
    let key = idempotency_key(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let correlation = req
        .extensions()
        .get::<CorrelationId>()
        .cloned()
        .unwrap_or_else(CorrelationId::generate);
    let submitted = state
        .intake
        .submit(&caller.0, &body, key.as_deref(), correlation.as_str())
        .await
        .map_err(|e| {
            if matches!(e, IntakeError::Invalid(_)) {
                state.metrics.validation_failures.inc();
            }
            intake_problem(e)
        })?;
    let (receipt, replayed) = match submitted {
        Submitted::Created(r) => (r, false),
        Submitted::Replayed(r) => (r, true),
    };
    Ok(accepted(&receipt, replayed))
}

fn accepted(receipt: &Receipt, replayed: bool) -> HttpResponse {
    let mut res = HttpResponse::Accepted();
    res.insert_header((
        header::LOCATION,
        format!("/v1/referrals/{}", receipt.referral_id),
    ));
    if replayed {
        res.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    res.json(receipt)
}

fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let unsupported = || {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the referral as Content-Type: application/json (UTF-8).",
        )
    };
    let mime = req
        .mime_type()
        .map_err(|_| unsupported())?
        .ok_or_else(unsupported)?;
    let is_json = mime.type_() == "application"
        && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"));
    let charset_ok = mime
        .get_param("charset")
        .is_none_or(|c| c.as_str().eq_ignore_ascii_case("utf-8"));
    if is_json && charset_ok {
        Ok(())
    } else {
        Err(unsupported())
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "bad-idempotency-key",
            "Idempotency-Key must be 1-255 visible ASCII characters (a UUID is a good choice).",
        ));
    }
    Ok(Some(key.to_owned()))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
        format!("A referral may be at most {limit} bytes."),
    )
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "unreadable-body",
                format!("The request body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn intake_problem(error: IntakeError) -> ApiError {
    let unprocessable = |kind, detail: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            "Referral cannot be routed",
            detail,
        )
    };
    match error {
        IntakeError::NotASender(_) | IntakeError::NotPermitted { .. } => {
            ApiError::forbidden("not-permitted", error.to_string())
        }
        IntakeError::MalformedJson(detail) => ApiError::bad_request(
            "malformed-json",
            format!("The body is not valid JSON: {detail}"),
        ),
        IntakeError::Routing(e) => unprocessable("unroutable", e.to_string()),
        IntakeError::Invalid(violations) => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "schema-validation",
            title: "Referral does not match its schema",
            detail: format!(
                "{} problem(s); each entry of 'errors' has a JSON Pointer to the value at fault.",
                violations.len()
            ),
            errors: violations,
        },
        IntakeError::IdempotencyConflict => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency-conflict",
            "Idempotency key reused",
            "This Idempotency-Key was already used with a different body. Use a new key for a new referral.",
        ),
        IntakeError::Store(e) => {
            tracing::error!(error = %e, "store failure while accepting a referral");
            ApiError::internal()
        }
    }
}

#[derive(Serialize)]
struct StatusView {
    #[serde(flatten)]
    receipt: Receipt,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// Who may call: the referral's sender or its recipient; 404 for everyone else.
async fn status(
    caller: CallerAgency,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = ReferralId::parse(&path.into_inner()).map_err(|_| ApiError::not_found())?;
    let record = state
        .store
        .referral(id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "store failure while reading a referral");
            ApiError::internal()
        })?
        .ok_or_else(ApiError::not_found)?;
    let caller_id = caller.0.id.as_str();
    if record.sender_agency != caller_id && record.recipient_agency != caller_id {
        return Err(ApiError::not_found());
    }
    Ok(HttpResponse::Ok().json(StatusView {
        receipt: state.intake.receipt(&record),
        updated_at: record.updated_at,
    }))
}
