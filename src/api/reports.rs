//! `GET /v1/reports/sla?from=&to=`: the SLA report over referrals sent or received.
//! Who may call: on the agency listener, any registered agency, about itself; on the
//! staff listener, an auditor (all agencies, or `?agency=`) or a service manager (the
//! agency in their token).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::identity::CallerAgency;
use super::problem::ApiError;
use super::staff::StaffCaller;
use crate::sla::report::aggregate;
use crate::store::{rfc3339, to_micros};

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

/// `from` and `to` query values as microseconds: each a date (`to` counting to the end
/// of that day) or an RFC 3339 instant, defaulting as given; `to` must be after `from`.
pub fn period_micros(
    from: Option<&str>,
    to: Option<&str>,
    default_from: i64,
    default_to: i64,
) -> Result<(i64, i64), ApiError> {
    let instant = |text: Option<&str>, end: bool, name: &str, default: i64| match text {
        None => Ok(default),
        Some(t) => parse_instant(t, end).map(to_micros).ok_or_else(|| {
            ApiError::bad_request(
                "bad-query",
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
            (false, _) => format!(
                "'to' must be after 'from', which defaults to {}",
                rfc3339(from)
            ),
            (true, false) => format!(
                "'from' must be before 'to', which defaults to {}",
                rfc3339(to)
            ),
        };
        return Err(ApiError::bad_request("bad-query", detail));
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
                ApiError::bad_request("bad-query", format!("'limit' must be between 1 and {max}"))
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
    let (from, to) = report_period(state, query.from.as_deref(), query.to.as_deref())?;
    let rows = sla_rows(state, actor, agency, from, to).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "agency": agency,
        "rows": rows,
    })))
}

/// The report's period: `from`/`to` as given, by default the 30 days up to now.
pub(crate) fn report_period(
    state: &AppState,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(i64, i64), ApiError> {
    let now = to_micros(state.clock.now());
    period_micros(from, to, now - 30 * 86_400 * 1_000_000, now)
}

/// The facts an SLA report is made of, for `agency` (all when `None`) in `[from, to)`.
pub(crate) async fn sla_facts(
    state: &AppState,
    agency: Option<&str>,
    from: i64,
    to: i64,
) -> Result<
    (
        Vec<crate::sla::report::ClockFact>,
        Vec<crate::sla::report::ContactFact>,
    ),
    ApiError,
> {
    state
        .store
        .report_facts(from, to, agency)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "store failure while building an SLA report");
            ApiError::internal()
        })
}

/// The SLA report rows (what `GET /v1/reports/sla` answers and the console shows),
/// audited as `actor`'s before they are returned.
pub(crate) async fn sla_rows(
    state: &AppState,
    actor: String,
    agency: Option<&str>,
    from: i64,
    to: i64,
) -> Result<Vec<crate::sla::report::ReportRow>, ApiError> {
    let now = to_micros(state.clock.now());
    let (clocks, contacts) = sla_facts(state, agency, from, to).await?;
    let rows = aggregate(&clocks, &contacts, now);
    // `recipient` names the agency whose referrals the report covers.
    let mut record = crate::store::AuditRecord::new(actor, "report.sla");
    record.recipient = agency.map(str::to_owned);
    super::audit(
        state,
        record.detail(format!(
            "{} row(s), {} to {}, agency {}",
            rows.len(),
            rfc3339(from),
            rfc3339(to),
            agency.unwrap_or("(all)")
        )),
    )
    .await?;
    Ok(rows)
}
