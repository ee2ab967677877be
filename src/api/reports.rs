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
use crate::report::aggregate;
use crate::store::to_micros;

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
struct Period {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Deserialize)]
struct StaffPeriod {
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

async fn sla_report(
    caller: CallerAgency,
    query: web::Query<Period>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let period = Period {
        from: query.from.clone(),
        to: query.to.clone(),
    };
    report(
        &state,
        format!("agency:{}", caller.0.id),
        Some(caller.0.id.as_str()),
        &period,
    )
    .await
}

async fn staff_sla_report(
    caller: StaffCaller,
    query: web::Query<StaffPeriod>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let agency = caller
        .agency_scope(&state, query.agency.as_deref(), "/v1/reports/sla")
        .await?;
    let period = Period {
        from: query.from.clone(),
        to: query.to.clone(),
    };
    report(&state, caller.0.actor(), agency.as_deref(), &period).await
}

/// The report over `agency`'s referrals (all agencies when `None`), audited as `actor`'s.
async fn report(
    state: &AppState,
    actor: String,
    agency: Option<&str>,
    query: &Period,
) -> Result<HttpResponse, ApiError> {
    let bad = |name: &str| {
        ApiError::bad_request(
            "bad-query",
            format!("'{name}' must be a date (YYYY-MM-DD) or an RFC 3339 date-time"),
        )
    };
    let now = state.clock.now();
    let from = match &query.from {
        Some(f) => parse_instant(f, false).ok_or_else(|| bad("from"))?,
        None => now - time::Duration::days(30),
    };
    let to = match &query.to {
        Some(t) => parse_instant(t, true).ok_or_else(|| bad("to"))?,
        None => now,
    };
    if to <= from {
        return Err(ApiError::bad_request(
            "bad-query",
            "'to' must be after 'from'",
        ));
    }
    let (clocks, contacts) = state
        .store
        .report_facts(to_micros(from), to_micros(to), agency)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "store failure while building an SLA report");
            ApiError::internal()
        })?;
    let rows = aggregate(&clocks, &contacts, to_micros(now));
    super::audit(
        state,
        crate::store::AuditRecord::new(actor, "report.sla").detail(format!(
            "{} row(s), {from} to {to}, agency {}",
            rows.len(),
            agency.unwrap_or("(all)")
        )),
    )
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": from.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "to": to.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "agency": agency,
        "rows": rows,
    })))
}
