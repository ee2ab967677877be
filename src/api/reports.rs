//! `GET /v1/reports/sla?from=&to=&format=`: the SLA report over referrals sent or
//! received, as JSON (default) or CSV with the same column names.
//! Who may call: on the agency listener, any registered agency, about itself; on the
//! staff listener, an auditor (all agencies, or `?agency=`) or a service manager (the
//! agency in their token).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::identity::CallerAgency;
use super::problem::{ApiError, ProblemKind};
use super::query::period;
use super::staff::StaffCaller;
use crate::domain::Timestamp;
use crate::domain::audit::AuditAction;
use crate::sla::report::ReportRow;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/reports/sla")
            .route(web::get().to(sla_report))
            .default_service(super::problem::method_not_allowed("GET")),
    );
}

pub fn configure_staff(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/reports/sla")
            .route(web::get().to(staff_sla_report))
            .default_service(super::problem::method_not_allowed("GET")),
    );
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReportQuery {
    /// Referrals received at or after (default: 30 days before `to`, or before now).
    #[param(schema_with = super::query::period_schema)]
    from: Option<String>,
    /// Referrals received before (a date: up to the end of that day; default now).
    #[param(schema_with = super::query::period_schema)]
    to: Option<String>,
    /// The agency the report covers. An agency may name only itself; an auditor any
    /// registered agency (empty or absent: all); a service manager only their own.
    agency: Option<String>,
    /// `json` (default) or `csv` (the rows, with the JSON rows' member names as header).
    #[param(schema_with = report_format_schema)]
    format: Option<String>,
}

fn report_format_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["json", "csv"]))
        .build()
}

/// The SLA report (`format=json`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SlaReport {
    #[schema(format = DateTime)]
    from: String,
    #[schema(format = DateTime)]
    to: String,
    /// The agency covered; null for all agencies.
    agency: Option<String>,
    rows: Vec<ReportRow>,
}

/// Problems the SLA report answers with on the agency listener (besides those of every
/// operation).
pub(crate) const PROBLEMS: &[super::problem::ProblemKind] = {
    use super::problem::ProblemKind as K;
    &[K::BadQuery, K::UnknownAgency, K::Internal, K::Overloaded]
};

/// What `?format=` asks for: the JSON document (default) or the CSV of the rows, whose
/// header is the JSON rows' member names (`sla::report::COLUMNS`).
enum ReportFormat {
    Json,
    Csv,
}

impl ReportFormat {
    fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        match text {
            None | Some("json") => Ok(Self::Json),
            Some("csv") => Ok(Self::Csv),
            Some(_) => Err(ApiError::bad_request(
                super::problem::ProblemKind::BadQuery,
                "'format' must be json or csv",
            )),
        }
    }
}

/// The SLA report over the referrals the calling agency sent or received.
#[utoipa::path(
    get,
    path = "/v1/reports/sla",
    operation_id = "getSlaReport",
    tag = "reports",
    params(ReportQuery),
    responses((status = 200, description = "The report, as JSON or (`format=csv`) CSV.",
        content(
            (SlaReport = "application/json"),
            (String = "text/csv", example = json!("agency,service_type,priority,referrals,...\n")),
        )))
)]
pub(crate) async fn sla_report(
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

/// The SLA report over all agencies or one (`agency`).
#[utoipa::path(
    get,
    path = "/v1/reports/sla",
    operation_id = "getSlaReport",
    tag = "reports",
    params(ReportQuery),
    responses((status = 200, description = "The report, as JSON or (`format=csv`) CSV.",
        content(
            (SlaReport = "application/json"),
            (String = "text/csv", example = json!("agency,service_type,priority,referrals,...\n")),
        )))
)]
pub(crate) async fn staff_sla_report(
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
    let format = ReportFormat::parse(query.format.as_deref())?;
    let (from, to) = report_period(state, query.from.as_deref(), query.to.as_deref())?;
    let rows = sla_rows(state, actor, agency, from, to).await?;
    Ok(match format {
        ReportFormat::Json => HttpResponse::Ok().json(SlaReport {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
            agency: agency.map(str::to_owned),
            rows,
        }),
        ReportFormat::Csv => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                actix_web::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"sla-report.csv\"",
            ))
            .body(crate::sla::report::to_csv(&rows)),
    })
}

/// The report's period: `from`/`to` as given; `to` by default now, `from` by default 30
/// days before `to`; at most [`crate::sla::report::MAX_PERIOD_DAYS`] long (400 otherwise).
pub(crate) fn report_period(
    state: &AppState,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Timestamp, Timestamp), ApiError> {
    report_period_at(Timestamp::from(state.clock.now()), from, to)
}

/// [`report_period`] at `now`: also what `referral-gateway sla report` uses.
pub fn report_period_at(
    now: Timestamp,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Timestamp, Timestamp), ApiError> {
    let days = time::Duration::days(crate::sla::report::DEFAULT_PERIOD_DAYS);
    // Whole seconds: the default period reads back as typed (a form shows it) and still
    // ends after every referral received so far.
    let now = now.ceil_to_second();
    // `to` alone: checked (and read) first, so the default `from` can count back from it.
    let (_, end) = period(None, to, Timestamp::MIN, now)?;
    let (from, to) = period(from, to, end.saturating_sub(days), now)?;
    // Bounded: a report reads every referral received in its period.
    let longest = time::Duration::days(crate::sla::report::MAX_PERIOD_DAYS);
    if i128::from(to.micros_since(from)) > longest.whole_microseconds() {
        return Err(ApiError::bad_request(
            ProblemKind::BadQuery,
            format!(
                "The period from 'from' to 'to' may be at most {} days long; ask for a longer one in parts.",
                crate::sla::report::MAX_PERIOD_DAYS
            ),
        ));
    }
    Ok((from, to))
}

/// The SLA report over `agency`'s referrals (all agencies when `None`) received in
/// `[from, to)`, with open clocks judged now, audited as `actor`'s before the rows are
/// returned: what `GET /v1/reports/sla` answers on both listeners and the console's
/// overview shows.
pub(crate) async fn sla_rows(
    state: &AppState,
    actor: String,
    agency: Option<&str>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<ReportRow>, ApiError> {
    Ok(sla_overview(state, actor, agency, from, to, 0).await?.rows)
}

/// SLA reports computed at once per process, on every listener and the console: each
/// reads every clock of its period (up to 366 days of an agency, or of all) into memory.
pub const CONCURRENT_REPORTS: usize = 2;
/// How long a report waits for one of [`CONCURRENT_REPORTS`] before `503 overloaded`.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`sla_rows`] with, from the same read, the time to first contact and the weekly trend
/// (the last `weeks` weeks of the period): the console's overview, audited as one report.
pub(crate) async fn sla_overview(
    state: &AppState,
    actor: String,
    agency: Option<&str>,
    from: Timestamp,
    to: Timestamp,
    weeks: usize,
) -> Result<crate::sla::report::SlaOverview, ApiError> {
    let _computing = match tokio::time::timeout(REPORT_WAIT, state.reports.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(ApiError::of(
                ProblemKind::Overloaded,
                "Too many SLA reports are being computed; retry after the time Retry-After gives.",
            ));
        }
    };
    let now = Timestamp::from(state.clock.now());
    let overview = crate::sla::report::sla_overview(
        &state.store,
        from,
        to,
        agency,
        now,
        time::Duration::weeks(1),
        weeks,
    )
    .await?;
    // `recipient` names the agency whose referrals the report covers.
    let mut record = crate::store::AuditRecord::new(actor, AuditAction::ReportSla);
    record.recipient = agency.map(str::to_owned);
    super::record_access(
        state,
        record.detail(format!(
            "{} row(s), {from} to {to}, agency {}",
            overview.rows.len(),
            agency.unwrap_or("(all)")
        )),
    )
    .await?;
    Ok(overview)
}
