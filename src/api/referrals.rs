//! `/v1/referrals`: submit a referral (registered sending agencies) and read its status
//! (its sender and its recipient only; everyone else gets 404).

use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use super::AppState;
use super::identity::CallerAgency;
use super::middleware::body::{read_body, require_json};
use super::middleware::correlation::CorrelationId;
use super::problem::{ApiError, ProblemKind};
use super::staff::StaffCaller;
use crate::domain::audit::AuditAction;
use crate::domain::{ReferralId, Timestamp};
use crate::intake::referrals::{IntakeError, Receipt, Submitted};
use crate::security::signing::{ReceiptClaims, SignedReceipt as ReceiptSigned};
use crate::store::{AuditRecord, ListRole};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/referrals")
            .route(web::post().to(submit))
            .route(web::get().to(list))
            .default_service(super::problem::method_not_allowed("GET, POST")),
    )
    .service(
        web::resource("/v1/referrals/{id}")
            .route(web::get().to(status))
            .default_service(super::problem::method_not_allowed("GET")),
    );
}

/// Problems `POST /v1/referrals` answers with (besides those of every operation).
pub(crate) const SUBMIT_PROBLEMS: &[ProblemKind] = &[
    ProblemKind::BadIdempotencyKey,
    ProblemKind::UnreadableBody,
    ProblemKind::MalformedJson,
    ProblemKind::UnknownAgency,
    ProblemKind::NotPermitted,
    ProblemKind::SharingRefused,
    ProblemKind::BodyTimeout,
    ProblemKind::IdempotencyConflict,
    ProblemKind::PayloadTooLarge,
    ProblemKind::UnsupportedMediaType,
    ProblemKind::Unroutable,
    ProblemKind::SchemaValidation,
    ProblemKind::ExcessData,
    ProblemKind::Internal,
    ProblemKind::Overloaded,
];

/// Submit one referral. Who may call: a registered agency with a sending role, over mTLS.
#[utoipa::path(
    post,
    path = "/v1/referrals",
    operation_id = "submitReferral",
    tag = "referrals",
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
         description = "Scoped to the sending agency: the same key with the same body answers with the original receipt; with another body, 409."),
    ),
    request_body(
        content = crate::api::openapi::ReferralSubmission,
        content_type = "application/json",
        description = "The referral document: the common schema plus the destination service type's overlay (docs/onboarding.md)."
    ),
    responses(
        (status = 202, description = "Accepted and stored (or, with `Idempotent-Replayed: true`, the original receipt of a replay).",
         body = AcceptedBody,
         headers(
             ("Location" = String, description = "`/v1/referrals/{referral_id}`"),
             ("Idempotent-Replayed" = String, description = "`true` on an idempotent replay; absent otherwise."),
         )),
    )
)]
pub(crate) async fn submit(
    req: HttpRequest,
    caller: CallerAgency,
    snapshot: crate::runtime::Snapshot,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The headers' checks first, in the documented order (415, 400, then 413), so a bad
    // key is refused before the body is read.
    require_json(&req)?;
    let key = idempotency_key(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let correlation = req
        .extensions()
        .get::<CorrelationId>()
        .cloned()
        .unwrap_or_else(CorrelationId::generate);
    let submitted = snapshot
        .intake
        .submit(
            &caller.0,
            &body,
            key.as_deref(),
            correlation.as_str(),
            state.clock.now(),
        )
        .await
        .map_err(|e| {
            if matches!(e, IntakeError::Invalid(_)) {
                state.metrics.validation_failures.inc();
            }
            ApiError::from(e)
        })?;
    let (receipt, replayed) = match submitted {
        Submitted::Created(r) => (r, false),
        Submitted::Replayed(r) => (r, true),
    };
    let signed = state.signing_key.sign_receipt(ReceiptClaims {
        referral_id: receipt.referral_id.to_string(),
        sender: receipt.sender.agency_id.clone(),
        recipient: receipt.recipient.agency_id.clone(),
        received_at: receipt
            .received_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        payload_sha256: receipt.payload_sha256.clone(),
        isa_id: receipt.isa_id.clone(),
    });
    Ok(accepted(&receipt, &signed, replayed))
}

/// The `202` answer: the receipt and its signed form.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AcceptedReferral)]
pub(crate) struct AcceptedBody<'a> {
    #[serde(flatten)]
    #[schema(value_type = Receipt)]
    receipt: &'a Receipt,
    #[schema(value_type = ReceiptSigned)]
    signed_receipt: &'a ReceiptSigned,
}

fn accepted(receipt: &Receipt, signed: &ReceiptSigned, replayed: bool) -> HttpResponse {
    let mut res = HttpResponse::Accepted();
    res.insert_header((
        header::LOCATION,
        format!("/v1/referrals/{}", receipt.referral_id),
    ));
    if replayed {
        res.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    let answer = AcceptedBody {
        receipt,
        signed_receipt: signed,
    };
    // Serialised into room for a typical answer (about 1 KiB), not grown from empty.
    let mut body = Vec::with_capacity(1536);
    match serde_json::to_writer(&mut body, &answer) {
        Ok(()) => res.insert_header(header::ContentType::json()).body(body),
        // Not expected (plain fields): actix's own serialisation answers as it would.
        Err(_) => res.json(answer),
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = super::middleware::correlation::single_header(req, &IDEMPOTENCY_KEY)? else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            ProblemKind::BadIdempotencyKey,
            "Idempotency-Key must be 1-255 visible ASCII characters (a UUID is a good choice).",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// On the staff listener: service managers (their own agency) and auditors (any agency,
/// named with `?agency=`) list referrals and read one's status; never payloads.
pub fn configure_staff(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/referrals")
            .route(web::get().to(staff_list))
            .default_service(super::problem::method_not_allowed("GET")),
    )
    .service(
        web::resource("/v1/referrals/{id}")
            .route(web::get().to(staff_status))
            .default_service(super::problem::method_not_allowed("GET")),
    );
}

#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// The agency whose referrals to list. An agency may name only itself; an auditor any
    /// registered agency (required on the staff listener unless the token is a service
    /// manager's, who sees their own).
    pub(crate) agency: Option<String>,
    /// Only referrals with this status (empty: any).
    #[param(schema_with = status_filter_schema)]
    pub(crate) status: Option<String>,
    /// Only referrals with an SLA clock past its deadline.
    #[param(value_type = Option<bool>)]
    pub(crate) overdue: Option<String>,
    /// Received at or after.
    #[param(schema_with = crate::api::query::period_schema)]
    pub(crate) from: Option<String>,
    /// Received before (a date: up to the end of that day).
    #[param(schema_with = crate::api::query::period_schema)]
    pub(crate) to: Option<String>,
    /// `sent` or `received` by the agency (empty: either).
    #[param(schema_with = role_filter_schema)]
    pub(crate) role: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub(crate) limit: Option<String>,
    /// `newest` first (the default) or `oldest` first, by when each was received; give
    /// the same order with each page's cursor.
    #[param(schema_with = order_filter_schema)]
    pub(crate) order: Option<String>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

fn status_filter_schema() -> utoipa::openapi::schema::Object {
    super::query::filter_schema(
        crate::domain::ReferralStatus::ALL
            .iter()
            .map(|s| s.as_str().to_owned()),
    )
}

fn order_filter_schema() -> utoipa::openapi::schema::Object {
    let mut schema = super::query::filter_schema(["newest".to_owned(), "oldest".to_owned()]);
    schema.description = Some(
        "`newest` first (the default; also when empty) or `oldest` first, by when each referral was received; a cursor continues only the order it came from.".to_owned(),
    );
    schema.default = Some(serde_json::json!("newest"));
    schema
}

fn role_filter_schema() -> utoipa::openapi::schema::Object {
    super::query::filter_schema(["sent".to_owned(), "received".to_owned()])
}

/// One referral in a list: its receipt fields and when it last changed.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ListItem {
    #[serde(flatten)]
    pub(crate) receipt: Receipt,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) updated_at: OffsetDateTime,
}

/// A page of referrals, newest first (or oldest first with `order=oldest`).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReferralPage {
    items: Vec<ListItem>,
    /// Give it as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// A list's cursor: the received time (µs) and id of the last referral of a page, after
/// `o` in an oldest-first list.
fn list_cursor(at: Timestamp, id: &ReferralId, oldest_first: bool) -> String {
    let order = if oldest_first { "o" } else { "" };
    format!("{order}{}_{id}", at.as_micros())
}

/// Problems the referral lists answer with (besides those of every operation).
pub(crate) const LIST_PROBLEMS: &[ProblemKind] = &[
    ProblemKind::BadQuery,
    ProblemKind::UnknownAgency,
    ProblemKind::Internal,
    ProblemKind::Overloaded,
];

/// Problems `GET /v1/referrals/{id}` answers with (besides those of every operation).
pub(crate) const STATUS_PROBLEMS: &[ProblemKind] = &[
    ProblemKind::UnknownAgency,
    ProblemKind::NotFound,
    ProblemKind::Internal,
    ProblemKind::Overloaded,
];

/// List the referrals the calling agency sent or received, newest first. Who may call:
/// any registered agency. `next_cursor` continues the list, given only when another page
/// exists.
#[utoipa::path(
    get,
    path = "/v1/referrals",
    operation_id = "listReferrals",
    tag = "referrals",
    params(ListQuery),
    responses((status = 200, description = "A page of referrals.", body = ReferralPage))
)]
pub(crate) async fn list(
    caller: CallerAgency,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.own_agency_only(query.agency.as_deref())?;
    list_for(
        &state,
        caller.0.id.as_str(),
        format!("agency:{}", caller.0.id),
        &query,
    )
    .await
}

/// List one agency's referrals (sent or received), newest first: an auditor names the
/// agency with `?agency=`, a service manager sees their own.
#[utoipa::path(
    get,
    path = "/v1/referrals",
    operation_id = "listReferrals",
    tag = "referrals",
    params(ListQuery),
    responses((status = 200, description = "A page of referrals.", body = ReferralPage))
)]
pub(crate) async fn staff_list(
    caller: StaffCaller,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(agency) = caller
        .agency_scope(&state, query.agency.as_deref(), "/v1/referrals")
        .await?
    else {
        return Err(ApiError::bad_request(
            ProblemKind::BadQuery,
            "name the agency whose referrals to list: ?agency=<agency-id>",
        ));
    };
    list_for(&state, &agency, caller.0.actor(), &query).await
}

/// The referrals `agency` sent or received, as `query` filters them; audited as `actor`'s.
async fn list_for(
    state: &AppState,
    agency: &str,
    actor: String,
    query: &ListQuery,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) = list_referrals(state, agency, actor, query).await?;
    Ok(HttpResponse::Ok().json(ReferralPage { items, next_cursor }))
}

/// The list `GET /v1/referrals` answers (and the console's overdue page shows): the
/// referrals `agency` sent or received, as `query` filters them, audited as `actor`'s
/// before they are returned.
pub(crate) async fn list_referrals(
    state: &AppState,
    agency: &str,
    actor: String,
    query: &ListQuery,
) -> Result<(Vec<ListItem>, Option<String>), ApiError> {
    let bad = |detail: &str| ApiError::bad_request(ProblemKind::BadQuery, detail.to_owned());
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<crate::domain::ReferralStatus>()
                .map_err(|_| bad("'status' is not a referral status (see docs/api.md)"))?,
        ),
    };
    let role = match query.role.as_deref() {
        None | Some("") => ListRole::Either,
        Some("sent") => ListRole::Sent,
        Some("received") => ListRole::Received,
        Some(_) => return Err(bad("'role' must be sent or received")),
    };
    let overdue = match query.overdue.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("'overdue' must be true or false")),
    };
    let oldest_first = match query.order.as_deref() {
        None | Some("") | Some("newest") => false,
        Some("oldest") => true,
        Some(_) => return Err(bad("'order' must be newest or oldest")),
    };
    let (from, to) = super::query::period(
        query.from.as_deref(),
        query.to.as_deref(),
        Timestamp::MIN,
        Timestamp::MAX,
    )?;
    let limit = super::query::page_limit(query.limit.as_deref(), 50, 200)?;
    let after = match query.cursor.as_deref() {
        None => None,
        Some(c) => {
            // An oldest-first list's cursors start with `o`: a cursor continues only the
            // order it came from (in the other it would repeat or skip rows).
            let (rest, from_oldest) = match c.strip_prefix('o') {
                Some(rest) => (rest, true),
                None => (c, false),
            };
            let parsed = rest.split_once('_').and_then(|(at, id)| {
                // The cursor's instant is written as its microseconds.
                Some((at.parse::<i64>().ok()?, ReferralId::parse(id).ok()?))
            });
            match parsed {
                None => return Err(bad("'cursor' is not one this API gave")),
                Some(_) if from_oldest != oldest_first => {
                    return Err(bad(
                        "'cursor' belongs to a list in the other order: give the 'order' it came with",
                    ));
                }
                Some((at, id)) => Some((Timestamp::from_micros(at), id)),
            }
        }
    };
    let filter = crate::store::ReferralFilter {
        agency,
        role,
        status,
        from,
        to,
        overdue,
        now: Timestamp::from(state.clock.now()),
        oldest_first,
        after,
        // One more than asked for: it only says whether another page exists.
        limit: limit + 1,
    };
    let mut records = state.store.list_referrals(&filter).await?;
    let more = records.len() as i64 > limit;
    records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    // `recipient` names the agency whose referrals were listed.
    let record = AuditRecord {
        recipient: Some(agency.to_owned()),
        ..AuditRecord::new(actor, AuditAction::ReferralListed)
    };
    super::record_access(
        state,
        // Which page was shown: the filters, the period and where the page started and
        // ended (received time and referral id: no personal data).
        record.detail(format!(
            "{} referral(s) of {agency}; status={} role={} overdue={overdue} order={} from={} to={} after={} first={} last={}",
            records.len(),
            status.map_or("", |s| s.as_str()),
            role.as_str(),
            if oldest_first { "oldest" } else { "newest" },
            crate::governance::export::period_bound(from),
            crate::governance::export::period_bound(to),
            after.map_or(String::new(), |(at, id)| list_cursor(at, &id, oldest_first)),
            records.first().map_or(String::new(), |r| r.id.to_string()),
            records.last().map_or(String::new(), |r| r.id.to_string()),
        )),
    )
    .await?;
    let next_cursor = more
        .then(|| records.last())
        .flatten()
        .map(|r| list_cursor(Timestamp::from(r.received_at), &r.id, oldest_first));
    let runtime = state.runtime.load();
    let items: Vec<ListItem> = records
        .iter()
        .map(|r| ListItem {
            receipt: runtime.intake.receipt(r),
            updated_at: r.updated_at,
        })
        .collect();
    Ok((items, next_cursor))
}

/// A referral's metadata, timeline and clocks: never its document.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ReferralStatusView)]
pub(crate) struct StatusView {
    #[serde(flatten)]
    pub(crate) receipt: Receipt,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) updated_at: OffsetDateTime,
    /// Every lifecycle event, oldest first.
    #[schema(value_type = Vec<crate::domain::messages::EventRecord>)]
    pub(crate) timeline: Vec<serde_json::Value>,
    /// The SLA clocks and where each stands.
    pub(crate) sla: Vec<ClockView>,
}

/// One SLA clock of a referral.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClockView {
    /// `acknowledge`, `decision`, `first_contact` or `delivery`.
    pub(crate) clock: String,
    /// `running`, `met`, `met_late`, `breached` or `stopped`.
    #[schema(value_type = String, pattern = "^(running|met|met_late|breached|stopped)$")]
    pub(crate) state: crate::domain::sla::ClockState,
    #[schema(format = DateTime)]
    pub(crate) started_at: String,
    #[schema(format = DateTime)]
    pub(crate) due_at: String,
    #[schema(format = DateTime)]
    pub(crate) met_at: Option<String>,
    #[schema(format = DateTime)]
    pub(crate) warned_at: Option<String>,
    #[schema(format = DateTime)]
    pub(crate) breached_at: Option<String>,
    #[schema(format = DateTime)]
    pub(crate) stopped_at: Option<String>,
}

/// One referral's status, for its sender or its recipient; 404 for everyone else.
#[utoipa::path(
    get,
    path = "/v1/referrals/{id}",
    operation_id = "getReferral",
    tag = "referrals",
    params(("id" = String, Path, description = "The `referral_id`.")),
    responses((status = 200, description = "The referral's status, timeline and SLA clocks.", body = StatusView))
)]
pub(crate) async fn status(
    caller: CallerAgency,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let own = caller.0.id.as_str();
    status_for(
        &state,
        &path.into_inner(),
        format!("agency:{own}"),
        Some(own),
        Viewer::Party,
    )
    .await
}

/// One referral's status. Who may call: an auditor (any referral) or a service manager
/// (the referrals their agency sent or received; 404 for others). Metadata, events and SLA
/// clocks only: never the payload, nor the events' free text (`detail`,
/// `redirected_to.description`).
#[utoipa::path(
    get,
    path = "/v1/referrals/{id}",
    operation_id = "getReferral",
    tag = "referrals",
    params(("id" = String, Path, description = "The `referral_id`.")),
    responses((status = 200, description = "The referral's status, timeline and SLA clocks.", body = StatusView))
)]
pub(crate) async fn staff_status(
    caller: StaffCaller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let agency = caller
        .agency_scope(&state, None, "/v1/referrals/{id}")
        .await?;
    status_for(
        &state,
        &path.into_inner(),
        caller.0.actor(),
        agency.as_deref(),
        Viewer::Staff,
    )
    .await
}

/// A referral's status, timeline and clocks, for `actor`, who may see referrals that
/// `agency` sent or received (all of them when `None`).
async fn status_for(
    state: &AppState,
    requested: &str,
    actor: String,
    agency: Option<&str>,
    viewer: Viewer,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(referral_status(state, requested, actor, agency, viewer).await?))
}

/// Who reads a referral's timeline: one of its two agencies, or staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Viewer {
    /// The sender or the recipient: every event as posted.
    Party,
    /// An auditor or a service manager: events without their free text (`detail`,
    /// `redirected_to.description`), which the two agencies wrote for each other and
    /// which can hold personal data; the console shows event types and times only.
    Staff,
}

/// An event record as `viewer` may see it.
fn event_for(mut event: serde_json::Value, viewer: Viewer) -> serde_json::Value {
    if viewer == Viewer::Staff {
        crate::domain::messages::strip_free_text(&mut event);
    }
    event
}

/// A referral's metadata, timeline and clocks (never its payload), audited as read (or
/// refused) before it is returned; 404 unless `agency` (when given) sent or received it.
/// What `GET /v1/referrals/{id}` answers on both listeners and the console shows.
pub(crate) async fn referral_status(
    state: &AppState,
    requested: &str,
    actor: String,
    agency: Option<&str>,
    viewer: Viewer,
) -> Result<StatusView, ApiError> {
    let denied = || {
        AuditRecord::new(actor.clone(), AuditAction::ReferralReadDenied)
            .detail("not found or not visible")
    };
    let Ok(id) = ReferralId::parse(requested) else {
        super::record_access(state, denied()).await?;
        return Err(ApiError::not_found());
    };
    let record = state.store.referral(id).await?;
    let Some(record) = record.filter(|r| {
        agency.is_none_or(|a| r.sender_agency.as_str() == a || r.recipient_agency.as_str() == a)
    }) else {
        super::record_access(state, denied().referral(id)).await?;
        return Err(ApiError::not_found());
    };
    super::record_access(
        state,
        AuditRecord::new(actor, AuditAction::ReferralRead).referral(id),
    )
    .await?;
    let timeline = state
        .store
        .events(id)
        .await?
        .into_iter()
        .map(|e| {
            serde_json::from_str(&e.body)
                .map(|record| event_for(record, viewer))
                .map_err(|_| {
                    crate::store::StoreError::Corrupt(
                        "a stored event record is not JSON".to_owned(),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let optional = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339);
    let now = Timestamp::from(state.clock.now());
    let sla = state
        .store
        .clocks(id)
        .await?
        .into_iter()
        .map(|c| ClockView {
            clock: c.clock.as_str().to_owned(),
            state: c.state(now),
            started_at: c.started_at.to_rfc3339(),
            due_at: c.due_at.to_rfc3339(),
            met_at: optional(c.met_at),
            warned_at: optional(c.warned_at),
            breached_at: optional(c.breached_at),
            stopped_at: optional(c.stopped_at),
        })
        .collect();
    Ok(StatusView {
        receipt: state.runtime.load().intake.receipt(&record),
        updated_at: record.updated_at,
        timeline,
        sla,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_see_events_without_their_free_text() {
        let event = serde_json::json!({
            "type": "redirected",
            "detail": "Spoke to J. Smith on 07700 900123.",
            "redirected_to": {"agency_id": "coventry-iapt", "description": "Ask for J. Smith."},
            "status": "redirected",
        });
        let party = event_for(event.clone(), Viewer::Party);
        assert_eq!(party, event);
        let staff = event_for(event, Viewer::Staff);
        assert_eq!(
            staff,
            serde_json::json!({
                "type": "redirected",
                "redirected_to": {"agency_id": "coventry-iapt"},
                "status": "redirected",
            })
        );
    }
}
