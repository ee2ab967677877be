//! `GET /v1/reports/sla?from=&to=`: the SLA report over referrals sent or received.
//! Who may call: on the agency listener, any registered agency, about itself; on the
//! staff listener, an auditor (all agencies, or `?agency=`) or a service manager (the
//! agency in their token).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::identity::CallerAgency;
use super::problem::{ApiError, ProblemKind};
use super::staff::StaffCaller;
use crate::domain::Timestamp;
use crate::domain::audit::AuditAction;
use crate::sla::report::sla_report as build_report;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/reports/sla")
            .route(web::get().to(sla_report))
            .default_service(web::to(super::problem::method_not_allowed)),
    );
}

pub fn configure_staff(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/reports/sla")
            .route(web::get().to(staff_sla_report))
            .default_service(web::to(super::problem::method_not_allowed)),
    );
}

#[derive(Deserialize)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    agency: Option<String>,
}

/// `YYYY-MM-DD` (the start of that day, UTC) or an RFC 3339 instant.
pub fn parse_instant(text: &str, end_of_day: bool) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).ok()?;
    let date = if end_of_day { date.next_day()? } else { date };
    Some(date.midnight().assume_utc())
}

/// `from` and `to` query values: each a date (`to` counting to the end of that day) or an
/// RFC 3339 instant, defaulting as given; `to` must be after `from`.
pub fn period(
    from: Option<&str>,
    to: Option<&str>,
    default_from: Timestamp,
    default_to: Timestamp,
) -> Result<(Timestamp, Timestamp), ApiError> {
    let instant = |text: Option<&str>, end: bool, name: &str, default| match text {
        None => Ok(default),
        Some(t) => parse_instant(t, end).map(Timestamp::from).ok_or_else(|| {
            ApiError::bad_request(
                ProblemKind::BadQuery,
                format!("'{name}' must be a date (YYYY-MM-DD) or an RFC 3339 date-time"),
            )
        }),
    };
    let from_given = from.is_some();
    let to_given = to.is_some();
    let from = instant(from, false, "from", default_from)?;
    let to = instant(to, true, "to", default_to)?;
    if to <= from {
        let detail = match (from_given, to_given) {
            (true, true) => "'to' must be after 'from'".to_owned(),
            (false, _) => format!("'to' must be after 'from', which defaults to {from}"),
            (true, false) => format!("'from' must be before 'to', which defaults to {to}"),
        };
        return Err(ApiError::bad_request(ProblemKind::BadQuery, detail));
    }
    Ok((from, to))
}

/// A `limit` query value: 1 to `max`, `default` when absent.
pub fn page_limit(text: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match text {
        None => Ok(default),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ProblemKind::BadQuery,
                    format!("'limit' must be between 1 and {max}"),
                )
            }),
    }
}

async fn sla_report(
    caller: CallerAgency,
    query: web::Query<ReportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.own_agency_only(query.agency.as_deref())?;
    report(
        &state,
        format!("agency:{}", caller.0.id),
        Some(caller.0.id.as_str()),
        &query,
    )
    .await
}

async fn staff_sla_report(
    caller: StaffCaller,
    query: web::Query<ReportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let agency = caller
        .agency_scope(&state, query.agency.as_deref(), "/v1/reports/sla")
        .await?;
    report(&state, caller.0.actor(), agency.as_deref(), &query).await
}

/// The report over `agency`'s referrals (all agencies when `None`), audited as `actor`'s.
async fn report(
    state: &AppState,
    actor: String,
    agency: Option<&str>,
    query: &ReportQuery,
) -> Result<HttpResponse, ApiError> {
    let now = Timestamp::from(state.clock.now());
    let (from, to) = period(
        query.from.as_deref(),
        query.to.as_deref(),
        now.saturating_sub(time::Duration::days(30)),
        now,
    )?;
    let rows = build_report(&state.store, from, to, agency, now).await?;
    // `recipient` names the agency whose referrals the report covers.
    let mut record = crate::store::AuditRecord::new(actor, AuditAction::ReportSla);
    record.recipient = agency.map(str::to_owned);
    super::audit(
        state,
        record.detail(format!(
            "{} row(s), {from} to {to}, agency {}",
            rows.len(),
            agency.unwrap_or("(all)")
        )),
    )
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": from.to_rfc3339(),
        "to": to.to_rfc3339(),
        "agency": agency,
        "rows": rows,
    })))
}
