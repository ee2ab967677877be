//! The auditor API on the staff listener. Who may call: staff whose token holds the
//! `auditor` role. Every query and export is itself an audit entry, written before the
//! answer is sent.
//!
//! - `GET /v1/audit/events?from=&to=&agency=&action=&referral=&cursor=&limit=`
//! - `POST /v1/audit/disclosures` with a person's identifiers in the body (a subject
//!   access request): every entry about that person
//! - `GET /v1/audit/export?from=&to=&format=csv|ndjson`, streamed

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::middleware::body::read_json_body;
use super::problem::{ApiError, ProblemKind};
use super::staff::StaffCaller;
use crate::domain::audit::{ActionFilter, AuditAction, AuditEntry};
use crate::domain::{NhsNumber, Timestamp};
use crate::governance::export::{EntryView, Export, ExportFormat, view};
use crate::governance::person_keys::PersonKeyer;
use crate::intake::schema::Violation;
use crate::staff_auth::tokens::Role;
use crate::store::{AuditQuery, AuditRecord};

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, route, allow) in [
        ("/v1/audit/events", web::get().to(events), "GET"),
        ("/v1/audit/disclosures", web::post().to(disclosures), "POST"),
        ("/v1/audit/export", web::get().to(export), "GET"),
    ] {
        cfg.service(
            web::resource(path)
                .route(route)
                .default_service(super::problem::method_not_allowed(allow)),
        );
    }
}

/// Problems `GET /v1/audit/events` and `GET /v1/audit/export` answer with (besides those
/// of every staff operation).
pub(crate) const QUERY_PROBLEMS: &[ProblemKind] = &[
    ProblemKind::BadQuery,
    ProblemKind::InsufficientRole,
    ProblemKind::Internal,
    ProblemKind::Overloaded,
];

/// Problems `POST /v1/audit/disclosures` answers with (besides those of every staff
/// operation).
pub(crate) const DISCLOSURE_PROBLEMS: &[ProblemKind] = &[
    ProblemKind::UnreadableBody,
    ProblemKind::MalformedJson,
    ProblemKind::InsufficientRole,
    ProblemKind::BodyTimeout,
    ProblemKind::PayloadTooLarge,
    ProblemKind::UnsupportedMediaType,
    ProblemKind::SchemaValidation,
    ProblemKind::Internal,
    ProblemKind::Overloaded,
];

/// A page of audit entries, oldest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage<'a> {
    #[schema(value_type = Vec<EntryView>)]
    items: Vec<EntryView<'a>>,
    /// Give it as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// A subject access request: the person's NHS number, or name and date of birth, or both.
// `read_subject` reads it, with a JSON Pointer for each problem; the OpenAPI documents add
// that at least one identifier is needed, and that name and date of birth go together.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SubjectAccessRequest)]
#[allow(dead_code)] // documents the body `read_subject` reads
pub(crate) struct SubjectAccessRequestDoc {
    /// 10 digits (spaces or hyphens allowed) with a valid check digit.
    #[schema(pattern = "^[ -]*([0-9][ -]*){10}$", nullable = false)]
    nhs_number: Option<String>,
    #[schema(nullable = false)]
    name: Option<PersonName>,
    /// YYYY-MM-DD; needed with `name`.
    #[schema(format = Date, nullable = false)]
    date_of_birth: Option<String>,
    /// `next_cursor` of the previous page (for the same identifiers).
    cursor: Option<String>,
    /// Page size, 1 to 5000 (default 1000).
    #[schema(minimum = 1, maximum = 5000)]
    limit: Option<i64>,
}

/// A person's name as a referral's `/person/name` holds it.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body `read_subject` reads
pub(crate) struct PersonName {
    #[schema(min_length = 1)]
    given: String,
    #[schema(min_length = 1)]
    family: String,
}

/// A subject access request's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SubjectAccessPage<'a> {
    /// `nhs_number` and/or `name_and_date_of_birth`.
    #[schema(value_type = Vec<String>)]
    searched_by: Vec<&'static str>,
    /// Every referral about the person.
    #[schema(value_type = Vec<String>)]
    referrals: &'a [String],
    /// How many times the person's data was shared.
    disclosures: i64,
    /// How many submissions about the person were refused.
    refused: i64,
    #[schema(value_type = Vec<EntryView>)]
    items: Vec<EntryView<'a>>,
    /// Give it as `cursor` (with the same identifiers) for the next page; null on the last.
    next_cursor: Option<String>,
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request(ProblemKind::BadQuery, detail)
}

/// `from`/`to`, unbounded when absent.
fn period(from: Option<&str>, to: Option<&str>) -> Result<(Timestamp, Timestamp), ApiError> {
    super::query::period(from, to, Timestamp::MIN, Timestamp::MAX)
}

/// Where a paginated read stands: after entry `after`, within the snapshot `upto` (the
/// newest entry when the first page was read). A query never includes its own audit
/// entry, and a walk through the pages ends however many entries are added meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    after: i64,
    upto: i64,
}

/// A cursor as given: `<after>.<upto>`, or `<after>.<upto>.<tag>` when it is bound to
/// what was searched for (`tag`, see [`cursor_tag`]).
fn parse_cursor(text: &str, tag: Option<&str>) -> Option<(i64, i64)> {
    let mut parts = text.split('.');
    let after = parts.next()?.parse::<i64>().ok()?;
    let upto = parts.next()?.parse::<i64>().ok()?;
    if parts.next() != tag || parts.next().is_some() {
        return None;
    }
    (0 <= after && after <= upto).then_some((after, upto))
}

/// Binds a subject access cursor to the person keys it was made for, so it cannot
/// continue a search for someone else.
fn cursor_tag(keys: &[String]) -> String {
    crate::security::digest::sha256_hex(keys.join("|").as_bytes())[..12].to_owned()
}

/// The snapshot to read: from the start up to the head, or where a cursor says (which
/// cannot reach past the head).
async fn snapshot(
    state: &AppState,
    cursor: Option<(i64, i64)>,
) -> Result<Option<Snapshot>, ApiError> {
    let head = state.store.audit_head().await.map(|(seq, _)| seq)?;
    Ok(match cursor {
        None => Some(Snapshot {
            after: 0,
            upto: head,
        }),
        Some((after, upto)) if upto <= head => Some(Snapshot { after, upto }),
        Some(_) => None,
    })
}

/// Entries were read with `limit + 1`: the extra one only says there is another page.
fn page(
    mut entries: Vec<(AuditEntry, String)>,
    limit: i64,
    snapshot: Snapshot,
    tag: Option<&str>,
) -> (Vec<(AuditEntry, String)>, Option<String>) {
    let more = entries.len() as i64 > limit;
    entries.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more
        .then(|| {
            entries.last().map(|(e, _)| match tag {
                Some(tag) => format!("{}.{}.{tag}", e.seq, snapshot.upto),
                None => format!("{}.{}", e.seq, snapshot.upto),
            })
        })
        .flatten();
    (entries, next)
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Entries written at or after.
    #[param(schema_with = super::query::period_schema)]
    pub(crate) from: Option<String>,
    /// Entries written before (a date: up to the end of that day).
    #[param(schema_with = super::query::period_schema)]
    pub(crate) to: Option<String>,
    /// Entries about a registered agency (empty: any).
    pub(crate) agency: Option<String>,
    /// An action (`referral.submitted`) or a family (`referral.*`); empty: any.
    #[param(schema_with = action_filter_schema)]
    pub(crate) action: Option<String>,
    /// Entries about this referral (empty: any).
    #[param(schema_with = referral_filter_schema)]
    pub(crate) referral: Option<String>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<String>,
}

/// Every action and every family (`referral.*`) `action=` takes.
fn action_filter_schema() -> utoipa::openapi::schema::Object {
    let mut values: Vec<String> = AuditAction::ALL
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    let mut families: Vec<String> = AuditAction::ALL
        .iter()
        .filter_map(|a| a.as_str().split_once('.').map(|(f, _)| format!("{f}.*")))
        .collect();
    families.sort();
    families.dedup();
    values.extend(families);
    super::query::filter_schema(values)
}

/// A referral id (a UUID) or nothing.
fn referral_filter_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([""])),
        )
        .build()
        .into()
}

/// `action=referral.submitted` (exact) or `action=referral.*` (a family).
fn action_filter(action: Option<&str>) -> Result<Option<ActionFilter>, ApiError> {
    let Some(action) = action.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    action.parse().map(Some).map_err(|_| {
        let names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        bad(format!(
            "'action' must be one of {} (or a family such as referral.*)",
            names.join(", ")
        ))
    })
}

/// Search the audit log (auditors only); the search is itself audited.
#[utoipa::path(
    get,
    path = "/v1/audit/events",
    operation_id = "searchAuditLog",
    tag = "audit",
    params(EventsQuery),
    responses((status = 200, description = "A page of entries, oldest first, within the log as it was when the first page was read.", body = AuditPage))
)]
pub(crate) async fn events(
    caller: StaffCaller,
    query: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (entries, next_cursor) = search_events(&caller, &state, &query).await?;
    let items: Vec<EntryView> = entries.iter().map(|(e, h)| view(e, h)).collect();
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}

/// An audit search (auditors only), itself audited before the entries are returned:
/// what `GET /v1/audit/events` answers and the console's audit log shows.
pub(crate) async fn search_events(
    caller: &StaffCaller,
    state: &AppState,
    query: &EventsQuery,
) -> Result<(Vec<(AuditEntry, String)>, Option<String>), ApiError> {
    caller
        .require(state, &[Role::Auditor], "/v1/audit/events")
        .await?;
    let (from, to) = period(query.from.as_deref(), query.to.as_deref())?;
    let action = action_filter(query.action.as_deref())?;
    let agency = caller
        .agency_scope(state, query.agency.as_deref(), "/v1/audit/events")
        .await?
        .unwrap_or_default();
    let referral = match query.referral.as_deref() {
        None | Some("") => String::new(),
        Some(r) => crate::domain::ReferralId::parse(r)
            .map_err(|_| bad("'referral' is not a referral id"))?
            .to_string(),
    };
    let limit = super::query::page_limit(query.limit.as_deref(), 100, 1000)?;
    let bad_cursor = || bad("'cursor' is not one this API gave");
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(parse_cursor(c, None).ok_or_else(bad_cursor)?),
    };
    let mut snapshot = snapshot(state, cursor).await?.ok_or_else(bad_cursor)?;
    // The walk (and its cursors) covers only the sequence range the period's entries lie
    // in, on every page: a cursor (which is not bound to the filters) narrows it further
    // but never widens it to a scan of the whole log.
    (snapshot.after, snapshot.upto) = state
        .store
        .audit_period_bounds(from, to, snapshot.after, snapshot.upto)
        .await?;
    let entries = state
        .store
        .search_audit(&AuditQuery {
            agency: &agency,
            action,
            referral: &referral,
            from,
            to,
            after_seq: snapshot.after,
            upto_seq: snapshot.upto,
            limit: limit + 1,
        })
        .await?;
    let (entries, next_cursor) = page(entries, limit, snapshot, None);
    super::record_access(
        state,
        AuditRecord::new(caller.0.actor(), AuditAction::AuditQueried).detail(format!(
            "{} entries; from={} to={} agency={agency} action={} referral={referral} after={} upto={}",
            entries.len(),
            crate::governance::export::period_bound(from),
            crate::governance::export::period_bound(to),
            query.action.as_deref().unwrap_or(""),
            snapshot.after,
            snapshot.upto,
        )),
    )
    .await?;
    Ok((entries, next_cursor))
}

/// What a subject access request names, in the shape of a referral's `/person`.
struct Subject {
    keys: Vec<String>,
    searched_by: Vec<&'static str>,
    cursor: Option<(i64, i64)>,
    limit: i64,
}

fn violation(pointer: &str, detail: &str) -> Violation {
    Violation {
        pointer: pointer.to_owned(),
        keyword: "subject-access".to_owned(),
        detail: detail.to_owned(),
    }
}

/// Reads `{"nhs_number"?, "name": {"given", "family"}?, "date_of_birth"?, "cursor"?, "limit"?}`.
fn read_subject(body: &Value, keyer: &PersonKeyer) -> Result<Subject, Vec<Violation>> {
    let Some(object) = body.as_object() else {
        return Err(vec![violation("", "the body must be a JSON object")]);
    };
    let mut problems = Vec::new();
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "nhs_number" | "name" | "date_of_birth" | "cursor" | "limit"
        ) {
            problems.push(violation(
                &format!("/{}", crate::intake::json::escape_pointer_token(key)),
                "unknown field",
            ));
        }
    }
    let text = |pointer: &str| -> Option<&str> { body.pointer(pointer).and_then(Value::as_str) };
    let mut keys = Vec::new();
    let mut searched_by = Vec::new();
    if let Some(nhs) = object.get("nhs_number") {
        match nhs.as_str().map(NhsNumber::parse) {
            Some(Ok(_)) => {
                keys.extend(keyer.key_for(text("/nhs_number"), None, None, None));
                searched_by.push("nhs_number");
            }
            _ => problems.push(violation(
                "/nhs_number",
                "must be a valid 10-digit NHS number (spaces allowed)",
            )),
        }
    }
    let given = text("/name/given").filter(|s| !s.trim().is_empty());
    let family = text("/name/family").filter(|s| !s.trim().is_empty());
    let dob = text("/date_of_birth");
    let has_name = object.contains_key("name");
    let has_dob = object.contains_key("date_of_birth");
    if has_name || has_dob {
        if has_name && (given.is_none() || family.is_none()) {
            problems.push(violation(
                "/name",
                "must be an object with non-empty 'given' and 'family'",
            ));
        }
        let date_format = time::macros::format_description!("[year]-[month]-[day]");
        match dob {
            Some(d) if time::Date::parse(d, &date_format).is_ok() => {}
            Some(_) => problems.push(violation(
                "/date_of_birth",
                "must be a date, YYYY-MM-DD",
            )),
            None if has_dob => problems.push(violation(
                "/date_of_birth",
                "must be a date, YYYY-MM-DD",
            )),
            None => problems.push(violation(
                "/date_of_birth",
                "is needed with 'name' (a person without an NHS number is found by name and date of birth)",
            )),
        }
        if !has_name {
            problems.push(violation("/name", "is needed with 'date_of_birth'"));
        }
        if problems.is_empty() {
            keys.extend(keyer.key_for(None, given, family, dob));
            searched_by.push("name_and_date_of_birth");
        }
    }
    if !object.contains_key("nhs_number") && !has_name && !has_dob {
        problems.push(violation(
            "",
            "give 'nhs_number', or 'name' and 'date_of_birth', or both (all disclosures under either are found)",
        ));
    }
    let tag = cursor_tag(&keys);
    let cursor = match object.get("cursor") {
        None | Some(Value::Null) => None,
        Some(c) => match c.as_str().and_then(|c| parse_cursor(c, Some(&tag))) {
            Some(cursor) => Some(cursor),
            None => {
                problems.push(violation(
                    "/cursor",
                    "is not a cursor this API gave for these identifiers",
                ));
                None
            }
        },
    };
    let limit = match object.get("limit") {
        None | Some(Value::Null) => 1000,
        Some(l) => match l.as_i64() {
            Some(n) if (1..=5000).contains(&n) => n,
            _ => {
                problems.push(violation("/limit", "must be an integer from 1 to 5000"));
                1000
            }
        },
    };
    if problems.is_empty() {
        Ok(Subject {
            keys,
            searched_by,
            cursor,
            limit,
        })
    } else {
        Err(problems)
    }
}

/// A subject access request (auditors only): every audit entry about a person, found by
/// NHS number or by name and date of birth.
#[utoipa::path(
    post,
    path = "/v1/audit/disclosures",
    operation_id = "subjectAccess",
    tag = "audit",
    request_body(content = SubjectAccessRequestDoc, content_type = "application/json"),
    responses((status = 200, description = "The person's referrals, disclosures and refusals, and a page of the entries about them.", body = SubjectAccessPage))
)]
pub(crate) async fn disclosures(
    req: HttpRequest,
    caller: StaffCaller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(&state, &[Role::Auditor], "/v1/audit/disclosures")
        .await?;
    let body = read_json_body(&req, payload, MAX_SUBJECT_ACCESS_BODY).await?;
    let body = crate::intake::json::parse(&body).map_err(|e| ApiError::malformed_json(&e))?;
    let answer = subject_access(&caller, &state, &body).await?;
    let items: Vec<EntryView> = answer.entries.iter().map(|(e, h)| view(e, h)).collect();
    Ok(HttpResponse::Ok().json(SubjectAccessPage {
        searched_by: answer.searched_by,
        referrals: &answer.summary.referrals,
        disclosures: answer.summary.shared,
        refused: answer.summary.refused,
        items,
        next_cursor: answer.next_cursor,
    }))
}

/// A subject access request's answer.
pub(crate) struct SubjectAccessAnswer {
    pub(crate) searched_by: Vec<&'static str>,
    pub(crate) summary: crate::store::PersonSummary,
    pub(crate) entries: Vec<(AuditEntry, String)>,
    pub(crate) next_cursor: Option<String>,
}

/// Answers a subject access request (`body` in the shape `POST /v1/audit/disclosures`
/// takes), recording the request under each of the person's keys before the answer is
/// returned: what the staff API answers and the console shows. Auditors only.
pub(crate) async fn subject_access(
    caller: &StaffCaller,
    state: &AppState,
    body: &Value,
) -> Result<SubjectAccessAnswer, ApiError> {
    caller
        .require(state, &[Role::Auditor], "/v1/audit/disclosures")
        .await?;
    let subject =
        read_subject(body, state.runtime.load().intake.person_keyer()).map_err(|violations| {
            ApiError::schema_validation("Subject access request is incomplete", violations)
        })?;
    let snapshot = snapshot(state, subject.cursor).await?.ok_or_else(|| {
        ApiError::schema_validation(
            "Subject access request is incomplete",
            vec![violation("/cursor", "is not a cursor this API gave")],
        )
    })?;
    let entries = state
        .store
        .audit_about_person(
            &subject.keys,
            snapshot.after,
            snapshot.upto,
            subject.limit + 1,
        )
        .await?;
    let (entries, next_cursor) = page(
        entries,
        subject.limit,
        snapshot,
        Some(&cursor_tag(&subject.keys)),
    );
    // Totals over the whole snapshot, whichever page this is.
    let summary = state
        .store
        .person_summary(&subject.keys, snapshot.upto)
        .await?;
    // The request is recorded under each of the person's keys, so a later request by
    // either identifier shows that this one was answered.
    let records: Vec<AuditRecord> = subject
        .keys
        .iter()
        .map(|key| AuditRecord {
            person_key: Some(key.clone()),
            ..AuditRecord::new(caller.0.actor(), AuditAction::AuditDisclosures).detail(format!(
                "subject access by {}: {} referral(s), {} shared, {} refused; page of {} entries after {} up to {}",
                subject.searched_by.join("+"),
                summary.referrals.len(),
                summary.shared,
                summary.refused,
                entries.len(),
                snapshot.after,
                snapshot.upto
            ))
        })
        .collect();
    state.store.audit_all(&records, state.clock.now()).await?;
    Ok(SubjectAccessAnswer {
        searched_by: subject.searched_by,
        summary,
        entries,
        next_cursor,
    })
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    /// Entries written at or after.
    #[param(schema_with = super::query::period_schema)]
    pub(crate) from: Option<String>,
    /// Entries written before (a date: up to the end of that day).
    #[param(schema_with = super::query::period_schema)]
    pub(crate) to: Option<String>,
    /// `ndjson` (default) or `csv`.
    #[param(schema_with = export_format_schema)]
    pub(crate) format: Option<String>,
}

fn export_format_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["ndjson", "csv"]))
        .build()
}

/// A subject access request is a few identifiers.
const MAX_SUBJECT_ACCESS_BODY: usize = 16 * 1024;

/// Export the audit log (auditors only), streamed; the export is itself audited.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    operation_id = "exportAuditLog",
    tag = "audit",
    params(ExportQuery),
    responses((status = 200, description = "The entries, oldest first: one JSON object per line (each an `AuditEntry`), or CSV with the same columns.",
        headers(("Content-Disposition" = String, description = "`attachment; filename=\"audit-upto-<seq>.<format>\"`")),
        content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )))
)]
pub(crate) async fn export(
    caller: StaffCaller,
    query: web::Query<ExportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    export_response(&caller, &state, &query).await
}

/// The export (auditors only), audited before the first byte is sent: what
/// `GET /v1/audit/export` answers and the console's export buttons download.
pub(crate) async fn export_response(
    caller: &StaffCaller,
    state: &AppState,
    query: &ExportQuery,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(state, &[Role::Auditor], "/v1/audit/export")
        .await?;
    let (from, to) = period(query.from.as_deref(), query.to.as_deref())?;
    let format = match query.format.as_deref() {
        None | Some("ndjson") => ExportFormat::Ndjson,
        Some("csv") => ExportFormat::Csv,
        Some(_) => return Err(bad("'format' must be csv or ndjson")),
    };
    let export = Export::begin(&state.store, format, from, to).await?;
    let upto_seq = export.upto();
    super::record_access(
        state,
        AuditRecord::new(caller.0.actor(), AuditAction::AuditExported)
            .detail(export.detail(from, to)),
    )
    .await?;
    // A store failure mid-stream ends the response early (the client sees a truncated
    // chunked body, never a silently short file that looks complete).
    let pages = export.into_stream().map(|chunk| {
        chunk.map(Bytes::from).map_err(|e| {
            tracing::error!(error = %e, "store failure during an audit export");
            actix_web::error::ErrorInternalServerError("audit export failed")
        })
    });
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type(format.content_type())
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"audit-upto-{upto_seq}.{}\"",
                format.name()
            ),
        ))
        .streaming(pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_filter_exactly_or_by_family() {
        assert_eq!(action_filter(None).unwrap(), None);
        assert_eq!(
            action_filter(Some("referral.read")).unwrap(),
            Some(ActionFilter::Exact(AuditAction::ReferralRead))
        );
        assert_eq!(
            action_filter(Some("referral.*")).unwrap(),
            Some(ActionFilter::Family("referral.".into()))
        );
        assert!(action_filter(Some("referal.read")).is_err());
        assert!(action_filter(Some("*")).is_err());
        assert!(action_filter(Some("nothing.*")).is_err());
    }

    #[test]
    fn subject_access_needs_enough_identifiers() {
        let keyer = PersonKeyer::new(&[7; 32]);
        let pointers = |body: Value| -> Vec<String> {
            read_subject(&body, &keyer)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.pointer)
                .collect()
        };
        assert_eq!(pointers(serde_json::json!({})), vec![""]);
        assert_eq!(
            pointers(serde_json::json!({"nhs_number": "1234567890"})),
            vec!["/nhs_number"]
        );
        assert_eq!(
            pointers(serde_json::json!({"name": {"given": "A", "family": "B"}})),
            vec!["/date_of_birth"]
        );
        assert_eq!(
            pointers(serde_json::json!({"date_of_birth": "1990-02-30"})),
            vec!["/date_of_birth", "/name"]
        );
        assert_eq!(
            pointers(serde_json::json!({"ssn": "x", "nhs_number": "9434765919"})),
            vec!["/ssn"]
        );
        let both = read_subject(
            &serde_json::json!({
                "nhs_number": "943 476 5919",
                "name": {"given": " Ann ", "family": "SMITH"},
                "date_of_birth": "1990-01-31"
            }),
            &keyer,
        )
        .unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(both.keys.len(), 2);
        assert_eq!(
            both.keys[0],
            keyer.key_for(Some("9434765919"), None, None, None).unwrap()
        );
        assert_eq!(
            both.keys[1],
            keyer
                .key_for(None, Some("ann"), Some("smith"), Some("1990-01-31"))
                .unwrap()
        );
    }
}
