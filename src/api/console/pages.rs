//! The console's pages. Each handler calls the function the matching staff API handler
//! calls (`reports::sla_rows`, `auditor::search_events`, `auditor::subject_access`,
//! `auditor::export_response`, `referrals::referral_status`, `referrals::list_referrals`),
//! which write the audit entry before anything is returned, then renders a template.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::session::{
    self, LOGIN_COOKIE, LoginState, PRE_COOKIE, PreSession, SESSION_COOKIE, Session,
};
use super::{ConsoleError, ConsoleState, SignedIn};
use crate::api::AppState;
use crate::api::problem::{ApiError, ProblemKind};
use crate::domain::audit::{AuditAction, AuditEntry};
use crate::domain::{ReferralId, Timestamp};
use crate::staff_auth::tokens::{Role, StaffIdentity};
use crate::store::AuditRecord;

// ---------------------------------------------------------------- view models

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every page's frame shows.
pub struct Layout {
    pub title: String,
    pub user: Option<String>,
    pub csrf: String,
    pub nav: Vec<NavItem>,
}

impl Layout {
    fn new(title: &str, session: Option<&Session>, current: &str) -> Self {
        let mut nav = Vec::new();
        if let Some(s) = session {
            let identity = s.identity();
            let mut items = vec![("/console/", "Overview"), ("/console/overdue", "Overdue")];
            if identity.has(Role::Auditor) {
                items.push(("/console/audit", "Audit log"));
                items.push(("/console/subject-access", "Subject access"));
                items.push(("/console/agreements", "Sharing agreements"));
                items.push(("/console/repeats", "Repeat referrals"));
            }
            nav = items
                .into_iter()
                .map(|(href, label)| NavItem {
                    href,
                    label,
                    current: href == current,
                })
                .collect();
        }
        Self {
            title: title.to_owned(),
            user: session.map(|s| {
                let roles = s.roles.join(", ");
                match &s.agency {
                    Some(a) => format!("{} ({roles}, {a})", s.subject),
                    None => format!("{} ({roles})", s.subject),
                }
            }),
            csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
            nav,
        }
    }
}

pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    pub numeric: bool,
    /// Shown as an NHS tag of this colour class (`nhsuk-tag--red`...).
    pub tag: Option<&'static str>,
}

impl Cell {
    fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            href: None,
            numeric: false,
            tag: None,
        }
    }
    fn num(text: impl ToString) -> Self {
        Self {
            numeric: true,
            ..Self::text(text.to_string())
        }
    }
    fn link(text: impl Into<String>, href: String) -> Self {
        Self {
            href: Some(href),
            ..Self::text(text)
        }
    }
    fn tag(text: impl Into<String>, class: &'static str) -> Self {
        Self {
            tag: Some(class),
            ..Self::text(text)
        }
    }
}

/// A table as the nhsuk table component shows it.
pub struct Table {
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    pub empty: String,
}

impl Table {
    /// The heading of column `i` ("" past the last): repeated in each cell, where the
    /// NHS table style shows it on narrow screens (the header row is hidden there).
    pub fn header(&self, i: &usize) -> &str {
        self.headers.get(*i).map_or("", String::as_str)
    }

    /// Whether column `i` holds numbers (its header is then aligned with them).
    pub fn numeric(&self, i: &usize) -> bool {
        self.rows
            .first()
            .and_then(|row| row.get(*i))
            .is_some_and(|c| c.numeric)
    }

    fn new(caption: &str, headers: &[&str], empty: &str) -> Self {
        Self {
            caption: caption.to_owned(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            empty: empty.to_owned(),
        }
    }
}

pub struct Option2 {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// An instant in UTC as the pages show it, in `format`.
fn utc(at: Timestamp, format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    at.to_offset_date_time()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

fn when(at: Timestamp) -> String {
    utc(
        at,
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC"),
    )
}

/// To the second, where entries are many a minute (the audit log, the subject access
/// statement) and are ordered or quoted by time.
fn when_exact(at: Timestamp) -> String {
    utc(
        at,
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC"),
    )
}

fn hours(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |h| format!("{h:.1}"))
}

/// "12 (40%)": a count and its share of `whole`.
fn count_and_share(part: usize, whole: usize) -> String {
    format!("{part} ({})", share(part, whole))
}

/// "3.5 / 20.1": a median and 90th percentile in hours.
fn median_and_p90(median: Option<f64>, p90: Option<f64>) -> String {
    format!("{} / {}", hours(median), hours(p90))
}

fn share(part: usize, whole: usize) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn render(template: &impl Template) -> HttpResponse {
    match template.render() {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a console page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The page cannot be shown.")
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    heading: String,
    detail: String,
}

/// What an error page says: kept in its response's extensions, so that the console's
/// layer (which knows the session) can show it again with the navigation of a signed-in
/// staff member ([`error_page_for`]).
#[derive(Debug, Clone)]
pub(super) struct ErrorPageInfo {
    status: StatusCode,
    heading: String,
    detail: String,
}

pub(super) fn error_page(status: StatusCode, heading: &str, detail: &str) -> HttpResponse {
    let info = ErrorPageInfo {
        status,
        heading: heading.to_owned(),
        detail: detail.to_owned(),
    };
    let mut res = error_page_for(None, &info);
    res.extensions_mut().insert(info);
    res
}

/// The error page, with the navigation and the "signed in as" of `session` when given.
pub(super) fn error_page_for(session: Option<&Session>, info: &ErrorPageInfo) -> HttpResponse {
    let page = ErrorPage {
        layout: Layout::new(&info.heading, session, ""),
        status: info.status.as_u16(),
        heading: info.heading.clone(),
        detail: info.detail.clone(),
    };
    let mut res = render(&page);
    *res.status_mut() = info.status;
    res
}

pub async fn not_found() -> HttpResponse {
    error_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no console page at this address.",
    )
}

pub async fn to_root() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

fn console(req: &HttpRequest) -> Result<web::Data<ConsoleState>, ConsoleError> {
    req.app_data::<web::Data<ConsoleState>>()
        .cloned()
        .ok_or(ConsoleError::Api(ApiError::not_found()))
}

fn now(state: &AppState) -> i64 {
    state.clock.now().unix_timestamp()
}

fn agency_options(
    state: &AppState,
    identity: &StaffIdentity,
    chosen: Option<&str>,
    all: bool,
) -> Vec<Option2> {
    let mut ids: Vec<String> = state
        .runtime
        .load()
        .registry
        .agencies()
        .map(|a| a.id.to_string())
        .filter(|id| identity.has(Role::Auditor) || identity.agency.as_deref() == Some(id))
        .collect();
    ids.sort();
    let mut options = Vec::new();
    if all && identity.has(Role::Auditor) {
        options.push(Option2 {
            value: String::new(),
            label: "All agencies".into(),
            selected: chosen.is_none(),
        });
    }
    options.extend(ids.into_iter().map(|id| Option2 {
        selected: chosen == Some(id.as_str()),
        label: id.clone(),
        value: id,
    }));
    options
}

// ---------------------------------------------------------------- assets

pub async fn asset(path: web::Path<String>) -> HttpResponse {
    let (body, kind): (&'static [u8], &str) = match path.as_str() {
        "nhsuk-frontend.min.css" => (
            include_bytes!("../../../assets/console/nhsuk-frontend.min.css"),
            "text/css; charset=utf-8",
        ),
        "console.css" => (
            include_bytes!("../../../assets/console/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_bytes!("../../../assets/console/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "nhsuk-icon-arrow-down.svg" => (
            include_bytes!("../../../assets/console/nhsuk-icon-arrow-down.svg"),
            "image/svg+xml",
        ),
        "nhsuk-icon-arrow-up.svg" => (
            include_bytes!("../../../assets/console/nhsuk-icon-arrow-up.svg"),
            "image/svg+xml",
        ),
        "nhsuk-icon-arrow-up-down.svg" => (
            include_bytes!("../../../assets/console/nhsuk-icon-arrow-up-down.svg"),
            "image/svg+xml",
        ),
        "nhsuk-icon-cross.svg" => (
            include_bytes!("../../../assets/console/nhsuk-icon-cross.svg"),
            "image/svg+xml",
        ),
        _ => return not_found().await,
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .body(body)
}

// ---------------------------------------------------------------- sign-in and out

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    layout: Layout,
    provider: Option<String>,
    dev: bool,
    pre_csrf: String,
    agencies: Vec<Option2>,
    signed_out: bool,
    /// The page to return to after signing in (checked), for the form and the link.
    next: Option<String>,
    /// The provider's sign-in link, carrying `next`.
    oidc_href: String,
    /// Who is signed in already in this browser (signing in again replaces them).
    current: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInQuery {
    signed_out: Option<String>,
    next: Option<String>,
}

pub async fn sign_in(
    req: HttpRequest,
    query: web::Query<SignInQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let console = console(&req)?;
    let pre = PreSession {
        csrf: console.sealer.random_token(),
        issued_at: now(&state),
    };
    let mut agencies: Vec<Option2> = state
        .runtime
        .load()
        .registry
        .agencies()
        .map(|a| Option2 {
            value: a.id.to_string(),
            label: format!("{} ({})", a.name, a.id),
            selected: false,
        })
        .collect();
    agencies.sort_by(|a, b| a.value.cmp(&b.value));
    let next = query
        .next
        .as_deref()
        .and_then(super::safe_return_path)
        .map(str::to_owned);
    let oidc_href = match &next {
        Some(next) => format!(
            "/console/auth/oidc?next={}",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        ),
        None => "/console/auth/oidc".to_owned(),
    };
    let page = SignInPage {
        layout: Layout::new("Sign in", None, ""),
        provider: console.oidc.as_ref().map(|o| o.provider_name().to_owned()),
        dev: console.dev_sign_in,
        pre_csrf: pre.csrf.clone(),
        agencies,
        signed_out: query.signed_out.is_some(),
        next,
        oidc_href,
        current: req.extensions().get::<Session>().map(|s| {
            format!(
                "{} ({}{})",
                s.subject,
                s.roles.join(", ").replace('_', " "),
                s.agency
                    .as_deref()
                    .map(|a| format!(", {a}"))
                    .unwrap_or_default()
            )
        }),
    };
    let mut res = render(&page);
    if console.dev_sign_in
        && let Some(value) = console.sealer.seal(PRE_COOKIE, &pre)
        && let Ok(cookie) = header::HeaderValue::from_str(&session::set_cookie(
            PRE_COOKIE,
            &value,
            "Strict",
            Some(1800),
        ))
    {
        res.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(res)
}

fn new_session(console: &ConsoleState, identity: &StaffIdentity, via: &str, now: i64) -> Session {
    Session {
        id: console.sealer.random_token(),
        subject: identity.subject.clone(),
        roles: Session::role_names(identity),
        agency: identity.agency.clone(),
        issued_at: now,
        last_seen: now,
        csrf: console.sealer.random_token(),
        via: via.to_owned(),
    }
}

/// A sign-in refused before anybody was identified: counted in the tally of unverified
/// refusals (`api::refusals`), which the audit log receives once a minute.
fn refuse_sign_in(state: &AppState, reason: &'static str) {
    state
        .refusals
        .count(&state.metrics, reason, state.clock.now());
}

#[derive(Deserialize)]
pub struct DevForm {
    csrf: String,
    role: String,
    agency: Option<String>,
    next: Option<String>,
}

/// Development sign-in (only routed when `[staff] dev_tokens = true`).
pub async fn dev_sign_in(
    req: HttpRequest,
    form: web::Form<DevForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let console = console(&req)?;
    let now = now(&state);
    let pre: Option<PreSession> = session::cookie(&req, PRE_COOKIE)
        .and_then(|v| console.sealer.open(PRE_COOKIE, v))
        .filter(|p: &PreSession| now - p.issued_at < 1800);
    if !pre.is_some_and(|p| session::same_token(&p.csrf, &form.csrf)) {
        return Err(ConsoleError::Csrf);
    }
    let agency = form
        .agency
        .as_deref()
        .filter(|a| !a.is_empty())
        .filter(|a| {
            state
                .runtime
                .load()
                .registry
                .agencies()
                .any(|x| x.id.as_str() == *a)
        });
    let identity = match (form.role.as_str(), agency) {
        ("auditor", _) => StaffIdentity {
            subject: "dev-auditor".into(),
            roles: vec![Role::Auditor],
            agency: None,
        },
        ("service_manager", Some(agency)) => StaffIdentity {
            subject: format!("dev-manager-{agency}"),
            roles: vec![Role::ServiceManager],
            agency: Some(agency.to_owned()),
        },
        _ => {
            return Err(ConsoleError::Api(ApiError::bad_request(
                ProblemKind::BadForm,
                "Choose a role, and for a service manager a registered agency.",
            )));
        }
    };
    let session = new_session(&console, &identity, "development", now);
    let next = form.next.as_deref().and_then(super::safe_return_path);
    signed_in(&state, &console, &session, false, next).await
}

/// Records the sign-in (no session without its audit entry), sets the session cookie and
/// goes to the page asked for before signing in (`next`, already checked), or else to the
/// overview. After the identity provider's redirect (a cross-site navigation)
/// a `SameSite=Strict` cookie would not be sent with an immediate redirect, so that case
/// answers a page that moves on by itself.
async fn signed_in(
    state: &AppState,
    console: &ConsoleState,
    session: &Session,
    cross_site: bool,
    next: Option<&str>,
) -> Result<HttpResponse, ConsoleError> {
    let to = next.unwrap_or("/console/").to_owned();
    let cookie = console
        .session_cookie(session)
        .ok_or(ConsoleError::Api(ApiError::internal()))?;
    crate::api::record_access(
        state,
        AuditRecord::new(session.identity().actor(), AuditAction::StaffSignedIn).detail(format!(
            "console sign-in via {}; roles {}",
            session.via,
            session.roles.join(",")
        )),
    )
    .await?;
    let mut res = if cross_site {
        let page = Continue {
            layout: Layout::new("Signed in", None, ""),
            to,
        };
        render(&page)
    } else {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, to))
            .finish()
    };
    for value in [
        cookie,
        session::set_cookie(LOGIN_COOKIE, "", "Lax", Some(0)),
        session::set_cookie(PRE_COOKIE, "", "Strict", Some(0)),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

#[derive(Template)]
#[template(path = "console/continue.html")]
struct Continue {
    layout: Layout,
    /// Where to go on: a checked console path.
    to: String,
}

#[derive(Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

pub async fn oidc_start(
    req: HttpRequest,
    query: web::Query<StartQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let console = console(&req)?;
    let Some(oidc) = console.oidc.as_ref() else {
        return Ok(not_found().await);
    };
    let auth = oidc.authorize().await.map_err(|e| {
        ConsoleError::Api(ApiError::of(ProblemKind::IdentityProvider, e.to_string()))
    })?;
    let login = LoginState {
        state: auth.state,
        nonce: auth.nonce,
        pkce_verifier: auth.pkce_verifier,
        started_at: now(&state),
        next: query
            .next
            .as_deref()
            .and_then(super::safe_return_path)
            .map(str::to_owned),
    };
    let value = console
        .sealer
        .seal(LOGIN_COOKIE, &login)
        .ok_or(ConsoleError::Api(ApiError::internal()))?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, auth.url))
        .insert_header((
            header::SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, &value, "Lax", Some(600)),
        ))
        .finish())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
}

pub async fn oidc_callback(
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let console = console(&req)?;
    let Some(oidc) = console.oidc.as_ref() else {
        return Ok(not_found().await);
    };
    let Some(auth) = state.staff_auth.clone() else {
        return Ok(not_found().await);
    };
    let now = now(&state);
    let refused = |detail: &str| {
        error_page(
            StatusCode::FORBIDDEN,
            "You could not be signed in",
            &format!("{detail} Start again from the sign-in page."),
        )
    };
    let login: Option<LoginState> = session::cookie(&req, LOGIN_COOKIE)
        .and_then(|v| console.sealer.open(LOGIN_COOKIE, v))
        .filter(|l: &LoginState| now - l.started_at < 600);
    let (Some(login), Some(code), Some(returned)) =
        (login, query.code.as_deref(), query.state.as_deref())
    else {
        refuse_sign_in(&state, "console-no-sign-in");
        return Ok(refused(
            "The sign-in was not started here, took too long, or was cancelled.",
        ));
    };
    if !session::same_token(&login.state, returned) {
        refuse_sign_in(&state, "console-state-mismatch");
        return Ok(refused(
            "The sign-in response does not match the sign-in started here.",
        ));
    }
    let identity = match oidc
        .finish(code, &login.nonce, &login.pkce_verifier, &auth)
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in refused");
            refuse_sign_in(&state, "console-provider-refused");
            return Ok(refused(
                "The identity provider's answer could not be verified.",
            ));
        }
    };
    if identity.roles.is_empty() {
        let record = AuditRecord::new(identity.actor(), AuditAction::AuthRefused)
            .detail("console sign-in refused: no auditor or service manager role");
        crate::api::record_access(&state, record).await?;
        return Ok(refused(
            "Your account has neither the auditor nor the service manager role.",
        ));
    }
    let session = new_session(&console, &identity, "oidc", now);
    let next = login.next.as_deref().and_then(super::safe_return_path);
    signed_in(&state, &console, &session, true, next).await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn sign_out(
    req: HttpRequest,
    user: SignedIn,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    user.check_csrf(&form.csrf)?;
    let console = console(&req)?;
    // The session ends first: a sign-out must hold even when its audit entry cannot be
    // written (that failure is logged by `record_access`; signing in still fails closed).
    console.signed_out.add(
        &user.0.id,
        user.0.issued_at + console.absolute_secs,
        now(&state),
    );
    if crate::api::record_access(
        &state,
        AuditRecord::new(user.0.identity().actor(), AuditAction::StaffSignedOut)
            .detail("console sign-out"),
    )
    .await
    .is_err()
    {
        tracing::warn!("a console sign-out took effect without its audit entry");
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/sign-in?signed_out=1"))
        .insert_header((
            header::SET_COOKIE,
            session::set_cookie(SESSION_COOKIE, "", "Strict", Some(0)),
        ))
        .finish())
}

// ---------------------------------------------------------------- overview

#[derive(Deserialize)]
pub struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
    agency: Option<String>,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    /// The period form's values: what was typed, or the period's bounds when nothing was.
    form_from: String,
    form_to: String,
    layout: Layout,
    from: String,
    to: String,
    agencies: Vec<Option2>,
    scope: String,
    totals: Vec<(String, String)>,
    tables: Vec<Table>,
    chart: String,
    /// Time to first contact against the national standards, and its chart.
    contact: Table,
    contact_chart: String,
    /// For auditors only.
    backlog: Option<String>,
}

#[derive(Template)]
#[template(path = "console/period_error.html")]
struct PeriodErrorPage {
    /// The period form's values: what was typed, or the period's bounds when nothing was.
    form_from: String,
    form_to: String,
    layout: Layout,
    action: &'static str,
    agency: Option<String>,
    field: &'static str,
    message: String,
}

/// A page's period as the report's rule reads it (the last 30 days by default), or, when
/// the typed period cannot be read, that page's period form again with what is wrong and
/// what was typed (`400`), rather than an error page without the form.
fn period_or_form(
    user: &SignedIn,
    state: &AppState,
    (title, action): (&str, &'static str),
    from: &Option<String>,
    to: &Option<String>,
    agency: &Option<String>,
) -> Result<Result<(Timestamp, Timestamp), HttpResponse>, ConsoleError> {
    match crate::api::reports::report_period(state, empty_none(from), empty_none(to)) {
        Ok(period) => Ok(Ok(period)),
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            let page = PeriodErrorPage {
                layout: Layout::new(title, Some(&user.0), action),
                action,
                form_from: from.clone().unwrap_or_default(),
                form_to: to.clone().unwrap_or_default(),
                agency: empty_none(agency).map(str::to_owned),
                field: if e.detail.starts_with("'to'") {
                    "to"
                } else {
                    "from"
                },
                message: e.detail.clone(),
            };
            let mut res = render(&page);
            *res.status_mut() = StatusCode::BAD_REQUEST;
            Ok(Err(res))
        }
        Err(e) => Err(e.into()),
    }
}

/// A period form's value: what was typed (a date stays a date), or the bound itself.
fn typed_or(typed: &Option<String>, bound: Timestamp) -> String {
    empty_none(typed).map_or_else(|| bound.to_rfc3339(), str::to_owned)
}

fn empty_none(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.is_empty())
}

pub async fn overview(
    user: SignedIn,
    query: web::Query<PeriodQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let caller = user.caller();
    let agency = caller
        .agency_scope(&state, empty_none(&query.agency), "/console/")
        .await?;
    let (from, to) = match period_or_form(
        &user,
        &state,
        ("Overview", "/console/"),
        &query.from,
        &query.to,
        &query.agency,
    )? {
        Ok(period) => period,
        Err(page) => return Ok(page),
    };
    // The report, the time to first contact and the weekly trend (at most 26 weeks from
    // `from`): one read of the report's facts, one audit entry.
    let crate::sla::report::SlaOverview {
        rows,
        contact_times: distribution,
        trend: weeks,
    } = crate::api::reports::sla_overview(
        &state,
        caller.0.actor(),
        agency.as_deref(),
        from,
        to,
        26,
    )
    .await?;
    let sum = |f: fn(&crate::sla::report::ReportRow) -> usize| rows.iter().map(f).sum::<usize>();
    let referrals = sum(|r| r.referrals);
    let totals = vec![
        ("Referrals".to_owned(), referrals.to_string()),
        (
            "Acknowledged within target".to_owned(),
            count_and_share(sum(|r| r.acknowledged_within_sla), referrals),
        ),
        (
            "Decided within target".to_owned(),
            count_and_share(sum(|r| r.decided_within_sla), referrals),
        ),
        (
            "First contact within target".to_owned(),
            count_and_share(sum(|r| r.contacted_within_sla), referrals),
        ),
        (
            "Referrals with a breached clock".to_owned(),
            sum(|r| r.breached).to_string(),
        ),
    ];
    let mut table = Table::new(
        "SLA by agency, service type and priority (as GET /v1/reports/sla)",
        &[
            "Agency",
            "Service type",
            "Priority",
            "Referrals",
            "Acknowledged in target",
            "Acknowledge median / 90th (h)",
            "Decided in target",
            "Decision median / 90th (h)",
            "First contact in target",
            "First contact median / 90th (h)",
            "Breached",
        ],
        "No referrals in this period.",
    );
    for r in &rows {
        table.rows.push(vec![
            Cell::text(&r.agency),
            Cell::text(&r.service_type),
            Cell::text(&r.priority),
            Cell::num(r.referrals),
            Cell::num(count_and_share(r.acknowledged_within_sla, r.referrals)),
            Cell::num(median_and_p90(
                r.acknowledge_median_hours,
                r.acknowledge_p90_hours,
            )),
            Cell::num(count_and_share(r.decided_within_sla, r.referrals)),
            Cell::num(median_and_p90(
                r.decision_median_hours,
                r.decision_p90_hours,
            )),
            Cell::num(count_and_share(r.contacted_within_sla, r.referrals)),
            Cell::num(median_and_p90(
                r.first_contact_median_hours,
                r.first_contact_p90_hours,
            )),
            Cell::num(r.breached),
        ]);
    }
    let mut trend = Table::new(
        "Weekly share within target (the chart's numbers)",
        &[
            "Week starting",
            "Referrals",
            "Acknowledged",
            "Decided",
            "First contact",
        ],
        "No referrals in this period.",
    );
    let mut points: Vec<[Option<f64>; 3]> = Vec::new();
    let mut labels = Vec::new();
    for (start, rows) in &weeks {
        let n: usize = rows.iter().map(|r| r.referrals).sum();
        let part =
            |f: fn(&crate::sla::report::ReportRow) -> usize| rows.iter().map(f).sum::<usize>();
        let pct = |k: usize| (n > 0).then(|| k as f64 * 100.0 / n as f64);
        let (a, d, c) = (
            part(|r| r.acknowledged_within_sla),
            part(|r| r.decided_within_sla),
            part(|r| r.contacted_within_sla),
        );
        points.push([pct(a), pct(d), pct(c)]);
        labels.push(when(*start).chars().take(10).collect::<String>());
        trend.rows.push(vec![
            Cell::text(labels.last().cloned().unwrap_or_default()),
            Cell::num(n),
            Cell::num(share(a, n)),
            Cell::num(share(d, n)),
            Cell::num(share(c, n)),
        ]);
    }
    // Time to first contact, from the same facts as the report above (one read).
    let mut headers = vec!["Service type"];
    headers.extend(crate::sla::report::CONTACT_BUCKETS.iter().map(|(_, l)| *l));
    headers.extend([
        "Waiting",
        "Ended without contact",
        "National standard",
        "Met",
    ]);
    let mut contact = Table::new(
        "Time from referral to first contact (the chart's numbers)",
        &headers,
        "No first-contact clocks in this period.",
    );
    for d in &distribution {
        let mut row = vec![Cell::text(&d.service_type)];
        row.extend(d.counts.iter().map(|n| Cell::num(*n)));
        row.push(Cell::num(d.waiting));
        row.push(Cell::num(d.ended_without_contact));
        let (words, met) = d
            .standard
            .clone()
            .map_or(("none".to_owned(), "-".to_owned()), |(w, m)| {
                (w.to_owned(), m)
            });
        row.push(Cell::text(words));
        row.push(Cell::num(met));
        contact.rows.push(row);
    }
    let contact_chart = contact_svg(&distribution);
    // The backlog counts every agency's messages: shown to auditors only.
    let backlog = if !caller.0.has(Role::Auditor) {
        None
    } else {
        Some(match state.store.outbox_backlog().await {
            Ok(b) => format!(
                "{} message(s) waiting to be published{}",
                b.pending,
                b.oldest_age_seconds(state.clock.now())
                    .map(|s| format!(", the oldest for {:.0} s", s))
                    .unwrap_or_default()
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox backlog");
                "not available".to_owned()
            }
        })
    };
    let page = OverviewPage {
        layout: Layout::new("Overview", Some(&user.0), "/console/"),
        form_from: typed_or(&query.from, from),
        form_to: typed_or(&query.to, to),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        agencies: agency_options(&state, &caller.0, agency.as_deref(), true),
        scope: agency.unwrap_or_else(|| "all agencies".to_owned()),
        totals,
        tables: vec![table, trend],
        chart: trend_svg(&labels, &points),
        contact,
        contact_chart,
        backlog,
    };
    Ok(render(&page))
}

/// Bars of the time to first contact, one row of bars per service type (numbers only).
fn contact_svg(rows: &[crate::sla::report::ContactDistribution]) -> String {
    let buckets = crate::sla::report::CONTACT_BUCKETS.len();
    let (row_h, left, bar_w, gap) = (70.0_f64, 130.0_f64, 60.0_f64, 8.0_f64);
    let w = left + (bar_w + gap) * buckets as f64 + 10.0;
    let h = row_h * rows.len().max(1) as f64 + 24.0;
    let max = rows
        .iter()
        .flat_map(|r| r.counts.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut svg = format!(
        r#"<svg class="app-chart" viewBox="0 0 {w} {h}" width="100%" role="img" aria-labelledby="contact-title"><title id="contact-title">Referrals by time to first contact, per service type; the numbers are in the table below</title>"#
    );
    for (k, (_, label)) in crate::sla::report::CONTACT_BUCKETS.iter().enumerate() {
        svg.push_str(&format!(
            r##"<text x="{:.1}" y="{}" font-size="9" text-anchor="middle" fill="#212b32">{label}</text>"##,
            left + (bar_w + gap) * k as f64 + bar_w / 2.0,
            h - 6.0
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        let base = row_h * (i as f64 + 1.0);
        svg.push_str(&format!(
            r##"<text x="4" y="{:.1}" font-size="11" fill="#212b32">{}</text>"##,
            base - 4.0,
            // A slug when written (`ServiceType::parse`); kept to its characters here
            // because this SVG is included unescaped.
            row.service_type
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                .collect::<String>()
        ));
        for (k, n) in row.counts.iter().enumerate() {
            let bar_h = (row_h - 16.0) * *n as f64 / max;
            svg.push_str(&format!(
                r##"<rect x="{:.1}" y="{:.1}" width="{bar_w}" height="{:.1}" fill="#005eb8"/>"##,
                left + (bar_w + gap) * k as f64,
                base - bar_h,
                bar_h
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A line chart of the weekly shares, built here as SVG (numbers and dates only).
fn trend_svg(labels: &[String], points: &[[Option<f64>; 3]]) -> String {
    // `h` is the plot and its date labels; the legend goes in a strip below it. The
    // plot ends 40 units before the right edge, so the last date label fits.
    let (w, h, left, bottom, legend) = (640.0_f64, 240.0_f64, 40.0_f64, 30.0_f64, 24.0_f64);
    let plot_w = w - left - 40.0;
    let plot_h = h - bottom - 10.0;
    let x = |i: usize| {
        left + if points.len() > 1 {
            plot_w * i as f64 / (points.len() - 1) as f64
        } else {
            plot_w / 2.0
        }
    };
    let y = |v: f64| 10.0 + plot_h * (1.0 - v / 100.0);
    let mut svg = format!(
        r#"<svg class="app-chart" viewBox="0 0 {w} {}" width="100%" role="img" aria-labelledby="trend-title"><title id="trend-title">Weekly share of referrals within target; the numbers are in the table below</title>"#,
        h + legend
    );
    for v in [0.0, 50.0, 100.0] {
        svg.push_str(&format!(
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#d8dde0"/><text x="4" y="{}" font-size="11" fill="#212b32">{v:.0}%</text>"##,
            w - 10.0,
            y(v) + 4.0,
            y = y(v)
        ));
    }
    let series = [
        ("#005eb8", "Acknowledged", ""),
        ("#007f3b", "Decided", "6 3"),
        ("#330072", "First contact", "2 2"),
    ];
    for (k, (colour, _, dash)) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p[k].map(|v| (x(i), y(v))))
            .collect();
        if !pts.is_empty() {
            let line: Vec<String> = pts
                .iter()
                .map(|(cx, cy)| format!("{cx:.1},{cy:.1}"))
                .collect();
            svg.push_str(&format!(
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
                line.join(" ")
            ));
            // A marker on each week, so that a single week (no line) still shows.
            for (cx, cy) in &pts {
                svg.push_str(&format!(
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}"/>"#
                ));
            }
        }
    }
    for (i, label) in labels.iter().enumerate() {
        if labels.len() <= 8 || i % (labels.len() / 6 + 1) == 0 {
            svg.push_str(&format!(
                r##"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle" fill="#212b32">{}</text>"##,
                x(i),
                h - 10.0,
                label.chars().filter(|c| c.is_ascii_digit() || *c == '-').collect::<String>()
            ));
        }
    }
    for (k, (colour, name, dash)) in series.iter().enumerate() {
        let lx = left + 10.0 + 140.0 * k as f64;
        svg.push_str(&format!(
            r##"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}" font-size="11" fill="#212b32">{name}</text>"##,
            lx + 20.0,
            h + legend / 2.0,
            h + legend / 2.0,
            lx + 24.0,
            h + legend / 2.0 + 4.0,
        ));
    }
    svg.push_str("</svg>");
    svg
}

// ---------------------------------------------------------------- overdue and referral

#[derive(Deserialize)]
pub struct OverdueQuery {
    agency: Option<String>,
    /// `oldest` (the default here: the longest waiting first) or `newest`.
    order: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "console/overdue.html")]
struct OverduePage {
    layout: Layout,
    agencies: Vec<Option2>,
    orders: Vec<Option2>,
    tables: Vec<Table>,
    next: Option<String>,
    agency: String,
    order: &'static str,
    /// A later page (a cursor was given): it links back to the first.
    later_page: bool,
}

pub async fn overdue(
    user: SignedIn,
    query: web::Query<OverdueQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let caller = user.caller();
    let requested = empty_none(&query.agency).map(str::to_owned).or_else(|| {
        if caller.0.has(Role::Auditor) {
            let mut ids: Vec<String> = state
                .runtime
                .load()
                .registry
                .agencies()
                .map(|a| a.id.to_string())
                .collect();
            ids.sort();
            ids.into_iter().next()
        } else {
            None
        }
    });
    let agency = caller
        .agency_scope(&state, requested.as_deref(), "/console/overdue")
        .await?
        .unwrap_or_default();
    // The longest waiting first unless newest first is asked for; anything else is the
    // API's `400` (the same check as `GET /v1/referrals`).
    let order = match empty_none(&query.order) {
        // A link with a cursor but no order continues the order its cursor came from
        // (oldest-first cursors start with `o`; a newest-first one is a link made before
        // the console listed the longest waiting first).
        None => match empty_none(&query.cursor) {
            Some(c) if !c.starts_with('o') => "newest",
            _ => "oldest",
        },
        Some("newest") => "newest",
        Some("oldest") => "oldest",
        Some(_) => {
            return Err(ConsoleError::Api(ApiError::bad_request(
                ProblemKind::BadQuery,
                "'order' must be newest or oldest",
            )));
        }
    };
    let list_query = crate::api::referrals::ListQuery {
        overdue: Some("true".into()),
        limit: Some("50".into()),
        order: Some(order.to_owned()),
        cursor: empty_none(&query.cursor).map(str::to_owned),
        ..Default::default()
    };
    let (items, next) =
        crate::api::referrals::list_referrals(&state, &agency, caller.0.actor(), &list_query)
            .await?;
    let mut table = Table::new(
        "Referrals with an overdue clock",
        &[
            "Referral",
            "Status",
            "Priority",
            "Sender",
            "Recipient",
            "Received",
            "Overdue clock, deadline and how late",
        ],
        "No overdue referrals.",
    );
    let now = Timestamp::from(state.clock.now());
    // The page's clocks in one read, grouped by referral.
    let ids: Vec<ReferralId> = items.iter().map(|i| i.receipt.referral_id).collect();
    let mut late_by_referral: std::collections::HashMap<ReferralId, Vec<String>> =
        std::collections::HashMap::new();
    for c in state
        .store
        .clocks_of(&ids)
        .await?
        .into_iter()
        .filter(|c| c.state(now) == crate::domain::sla::ClockState::Breached)
    {
        late_by_referral
            .entry(c.referral_id)
            .or_default()
            .push(format!(
                "{}: due {}, {} late",
                c.clock.as_str().replace('_', " "),
                when(c.due_at),
                lateness(now.micros_since(c.due_at))
            ));
    }
    for item in &items {
        let r = &item.receipt;
        let late = late_by_referral.remove(&r.referral_id).unwrap_or_default();
        table.rows.push(vec![
            Cell::link(
                r.referral_id.to_string(),
                format!("/console/referrals/{}", r.referral_id),
            ),
            Cell::text(status_short(r.status)),
            Cell::text(r.priority.as_str()),
            Cell::text(&r.sender.agency_id),
            Cell::text(&r.recipient.agency_id),
            Cell::text(when(Timestamp::from(r.received_at))),
            Cell::text(late.join("; ")),
        ]);
    }
    let page = OverduePage {
        layout: Layout::new("Overdue referrals", Some(&user.0), "/console/overdue"),
        agencies: agency_options(&state, &caller.0, Some(&agency), false),
        orders: [
            ("oldest", "Received longest ago first"),
            ("newest", "Received most recently first"),
        ]
        .into_iter()
        .map(|(value, label)| Option2 {
            value: value.to_owned(),
            label: label.to_owned(),
            selected: value == order,
        })
        .collect(),
        tables: vec![table],
        next,
        agency,
        order,
        later_page: empty_none(&query.cursor).is_some(),
    };
    Ok(render(&page))
}

/// How late, in words a manager reads at a glance: "3 days 4 h", "5 h 20 min", "12 min".
fn lateness(micros: i64) -> String {
    let minutes = micros.max(0) / 60_000_000;
    let (days, hours, mins) = (minutes / (24 * 60), minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) if mins == 0 => "under 1 min".to_owned(),
        (0, 0) => format!("{mins} min"),
        (0, h) => format!("{h} h {mins} min"),
        (d, h) => format!("{d} day{} {h} h", if d == 1 { "" } else { "s" }),
    }
}

#[derive(Template)]
#[template(path = "console/referral.html")]
struct ReferralPage {
    layout: Layout,
    id: String,
    summary: Vec<(String, String)>,
    withheld: Vec<String>,
    agreement: String,
    tables: Vec<Table>,
}

pub async fn referral(
    user: SignedIn,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let caller = user.caller();
    let agency = caller
        .agency_scope(&state, None, "/console/referrals/{id}")
        .await?;
    let view = crate::api::referrals::referral_status(
        &state,
        &path.into_inner(),
        caller.0.actor(),
        agency.as_deref(),
        crate::api::referrals::Viewer::Staff,
    )
    .await?;
    let r = &view.receipt;
    let agency_text = |a: &crate::intake::referrals::AgencyRef| match &a.name {
        Some(name) => format!("{name} ({})", a.agency_id),
        None => a.agency_id.clone(),
    };
    let summary = vec![
        ("Status".to_owned(), status_words(r.status)),
        ("Priority".to_owned(), r.priority.as_str().to_owned()),
        ("Sender".to_owned(), agency_text(&r.sender)),
        ("Recipient".to_owned(), agency_text(&r.recipient)),
        ("Received".to_owned(), when(Timestamp::from(r.received_at))),
        (
            "Last updated".to_owned(),
            when(Timestamp::from(view.updated_at)),
        ),
        ("Schema".to_owned(), r.schema_id.clone()),
        ("Payload SHA-256".to_owned(), r.payload_sha256.clone()),
    ];
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let mut clocks = Table::new(
        "SLA clocks",
        &["Clock", "State", "Started", "Deadline", "Met", "Breached"],
        "No clocks.",
    );
    for c in &view.sla {
        let at = |t: Option<&str>| {
            t.and_then(|t| crate::api::query::parse_instant(t, false))
                .map(|t| when(Timestamp::from(t)))
                .unwrap_or_default()
        };
        let (state_words, tag) = clock_state_words(c.state);
        clocks.rows.push(vec![
            Cell::text(
                c.clock
                    .parse()
                    .map_or_else(|_| c.clock.replace('_', " "), |k| clock_words(k).to_owned()),
            ),
            Cell::tag(state_words, tag),
            Cell::text(at(Some(&c.started_at))),
            Cell::text(at(Some(&c.due_at))),
            Cell::text(at(c.met_at.as_deref())),
            Cell::text(at(c.breached_at.as_deref())),
        ]);
    }
    // Event types and times only: an event's other fields may hold notes.
    let mut timeline = Table::new("Timeline", &["Event", "At"], "No events yet.");
    for e in &view.timeline {
        let kind = ["type", "event", "kind"]
            .iter()
            .map(|k| text(e, k))
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        let at = ["occurred_at", "at", "recorded_at"]
            .iter()
            .map(|k| text(e, k))
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        let at = crate::api::query::parse_instant(&at, false)
            .map(|t| when(Timestamp::from(t)))
            .unwrap_or(at);
        let kind = kind
            .parse::<crate::domain::lifecycle::EventType>()
            .map_or(kind.replace('_', " "), |t| event_words(t).to_owned());
        timeline.rows.push(vec![Cell::text(kind), Cell::text(at)]);
    }
    let page = ReferralPage {
        layout: Layout::new("Referral", Some(&user.0), ""),
        id: r.referral_id.to_string(),
        summary,
        withheld: r.withheld.clone(),
        agreement: r.isa_id.clone().unwrap_or_default(),
        tables: vec![clocks, timeline],
    };
    Ok(render(&page))
}

/// A referral's status in words, with its code (as the API and the exports give it).
fn status_words(status: crate::domain::ReferralStatus) -> String {
    use crate::domain::ReferralStatus::*;
    let words = match status {
        Received => "Received by the gateway, not yet on the recipient's queue",
        Queued => "On the recipient's queue, not yet acknowledged",
        Undelivered => {
            "Undelivered: not acknowledged or decided in time (the gateway told the sender)"
        }
        Acknowledged => "Acknowledged by the recipient",
        Accepted => "Accepted by the recipient",
        Declined => "Declined by the recipient",
        Redirected => "Redirected by the recipient to another service",
        FirstContact => "First contact made",
        Closed => "Closed",
        Withdrawn => "Withdrawn by the sender",
        Delivered => "Delivered",
    };
    format!("{words} ({status})")
}

/// A referral's status in a word or two, for tables.
fn status_short(status: crate::domain::ReferralStatus) -> &'static str {
    use crate::domain::ReferralStatus::*;
    match status {
        Received => "Received",
        Queued => "On the queue",
        Delivered => "Delivered",
        Undelivered => "Undelivered",
        Acknowledged => "Acknowledged",
        Accepted => "Accepted",
        Declined => "Declined",
        Redirected => "Redirected",
        FirstContact => "First contact made",
        Closed => "Closed",
        Withdrawn => "Withdrawn",
    }
}

fn clock_words(clock: crate::domain::sla::Clock) -> &'static str {
    use crate::domain::sla::Clock::*;
    match clock {
        Acknowledge => "Acknowledge",
        Decision => "Decide (accept, decline or redirect)",
        FirstContact => "First contact",
        Delivery => "Delivery (acknowledged or decided at all)",
    }
}

fn clock_state_words(state: crate::domain::sla::ClockState) -> (&'static str, &'static str) {
    use crate::domain::sla::ClockState::*;
    match state {
        Running => ("Running", "nhsuk-tag--blue"),
        Met => ("Met", "nhsuk-tag--green"),
        MetLate => ("Met late", "nhsuk-tag--orange"),
        Breached => ("Breached", "nhsuk-tag--red"),
        Stopped => ("Stopped", "nhsuk-tag--grey"),
    }
}

fn event_words(event: crate::domain::lifecycle::EventType) -> &'static str {
    use crate::domain::lifecycle::EventType::*;
    match event {
        Acknowledged => "Acknowledged",
        Accepted => "Accepted",
        Declined => "Declined",
        Redirected => "Redirected",
        FirstContact => "First contact",
        Closed => "Closed",
        FollowUp => "Follow-up from the sender",
        Withdrawn => "Withdrawn by the sender",
    }
}

// ---------------------------------------------------------------- audit log

#[derive(Deserialize, Default)]
pub struct AuditForm {
    csrf: String,
    from: Option<String>,
    to: Option<String>,
    agency: Option<String>,
    action: Option<String>,
    referral: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    layout: Layout,
    form: AuditFormView,
    agencies: Vec<Option2>,
    families: Vec<Option2>,
    chain: Vec<(String, String)>,
    searched: bool,
    tables: Vec<Table>,
    next: Option<String>,
    /// The newest "verify now": (running?, verified?, what to say).
    verification: Option<(bool, bool, String)>,
    /// A search the API refused: (the field's id, what is wrong), shown above the form.
    errors: Vec<(String, String)>,
}

#[derive(Default)]
struct AuditFormView {
    from: String,
    to: String,
    referral: String,
}

async fn chain_state(state: &AppState) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    match state.store.audit_head().await {
        Ok((seq, hash)) => {
            rows.push(("Newest entry".to_owned(), seq.to_string()));
            rows.push(("Its hash".to_owned(), hash));
        }
        Err(e) => tracing::error!(error = %e, "cannot read the audit head"),
    }
    match state.store.last_checkpoint().await {
        Ok(checkpoint) => match checkpoint {
            Some(c) => {
                rows.push((
                    "Last signed checkpoint".to_owned(),
                    format!(
                        "entry {} signed {}",
                        c.seq,
                        when(Timestamp::from_micros(c.signed_at))
                    ),
                ));
                rows.push(("Its key id".to_owned(), c.key_id.clone()));
            }
            None => rows.push(("Last signed checkpoint".to_owned(), "none yet".to_owned())),
        },
        Err(e) => tracing::error!(error = %e, "cannot read the audit checkpoints"),
    }
    rows
}

fn families(chosen: Option<&str>) -> Vec<Option2> {
    let mut names: Vec<String> = AuditAction::ALL
        .iter()
        .filter_map(|a| a.as_str().split('.').next())
        .map(|f| format!("{f}.*"))
        .collect();
    names.dedup();
    names.sort();
    names.dedup();
    let mut options = vec![Option2 {
        value: String::new(),
        label: "Any action".into(),
        selected: chosen.is_none(),
    }];
    options.extend(names.into_iter().map(|n| Option2 {
        selected: chosen == Some(n.as_str()),
        label: n.clone(),
        value: n,
    }));
    options
}

fn entries_table(caption: &str, entries: &[(AuditEntry, String)]) -> Table {
    let mut table = Table::new(
        caption,
        &[
            "Entry",
            "When",
            "Actor",
            "Action",
            "Referral",
            "Recipient",
            "Agreement",
            "Detail",
        ],
        "No entries.",
    );
    for (e, _) in entries {
        table.rows.push(vec![
            Cell::num(e.seq),
            Cell::text(when_exact(e.at)),
            Cell::text(&e.actor),
            Cell::text(&e.action),
            match &e.referral_id {
                Some(id) => Cell::link(id.clone(), format!("/console/referrals/{id}")),
                None => Cell::text(""),
            },
            Cell::text(e.recipient.clone().unwrap_or_default()),
            Cell::text(e.isa_id.clone().unwrap_or_default()),
            Cell::text(&e.detail),
        ]);
    }
    table
}

async fn audit_page(
    user: &SignedIn,
    state: &AppState,
    form: &AuditForm,
    searched: bool,
    verifications: &super::verification::Verifications,
    mut errors: Vec<(String, String)>,
) -> Result<HttpResponse, ConsoleError> {
    let caller = user.caller();
    caller
        .require(state, &[Role::Auditor], "/console/audit")
        .await?;
    let mut tables = Vec::new();
    let mut next = None;
    if searched {
        let query = crate::api::auditor::EventsQuery {
            from: form.from.clone().filter(|s| !s.is_empty()),
            to: form.to.clone().filter(|s| !s.is_empty()),
            agency: form.agency.clone().filter(|s| !s.is_empty()),
            action: form.action.clone().filter(|s| !s.is_empty()),
            referral: form.referral.clone().filter(|s| !s.is_empty()),
            cursor: form.cursor.clone().filter(|s| !s.is_empty()),
            limit: Some("50".into()),
        };
        match crate::api::auditor::search_events(&caller, state, &query).await {
            Ok((entries, cursor)) => {
                tables.push(entries_table("Audit entries (oldest first)", &entries));
                next = cursor;
            }
            // A search that cannot be read: the form again, with what is wrong and what
            // was typed, rather than an error page without it.
            Err(e) if e.status == StatusCode::BAD_REQUEST => {
                // A problem with no field of its own (a stale cursor) links to the form.
                let field = ["from", "to", "referral", "agency", "action"]
                    .into_iter()
                    .find(|f| e.detail.starts_with(&format!("'{f}'")))
                    .unwrap_or("search");
                errors.push((field.to_owned(), e.detail.clone()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let page = AuditPage {
        layout: Layout::new("Audit log", Some(&user.0), "/console/audit"),
        form: AuditFormView {
            from: form.from.clone().unwrap_or_default(),
            to: form.to.clone().unwrap_or_default(),
            referral: form.referral.clone().unwrap_or_default(),
        },
        agencies: agency_options(state, &caller.0, empty_none(&form.agency), true),
        families: families(empty_none(&form.action)),
        chain: chain_state(state).await,
        searched,
        tables,
        next,
        verification: verification_state(verifications.state()),
        errors,
    };
    let mut res = render(&page);
    if !page.errors.is_empty() {
        *res.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// What the audit page says of the newest "verify now": (running, verified, words).
fn verification_state(run: super::verification::RunState) -> Option<(bool, bool, String)> {
    use super::verification::RunState;
    match run {
        RunState::None => None,
        RunState::Running {
            started_at,
            started_by,
            checked,
            head_seq,
        } => Some((
            true,
            false,
            format!(
                "Verification started {} by {started_by} is running: {checked} of {} entries checked.",
                when(started_at),
                head_seq.max(0)
            ),
        )),
        RunState::Ended {
            started_by,
            ended_at,
            verified,
            outcome,
        } => Some((
            false,
            verified,
            format!(
                "{outcome} (started by {started_by}, finished {})",
                when(ended_at)
            ),
        )),
    }
}

pub async fn audit_form(
    req: HttpRequest,
    user: SignedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let console = console(&req)?;
    audit_page(
        &user,
        &state,
        &AuditForm::default(),
        false,
        &console.verifications,
        Vec::new(),
    )
    .await
}

pub async fn audit_search(
    req: HttpRequest,
    user: SignedIn,
    form: web::Form<AuditForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    user.check_csrf(&form.csrf)?;
    let console = console(&req)?;
    audit_page(
        &user,
        &state,
        &form,
        true,
        &console.verifications,
        Vec::new(),
    )
    .await
}

#[derive(Deserialize)]
pub struct ExportForm {
    csrf: String,
    format: String,
    from: Option<String>,
    to: Option<String>,
}

pub async fn audit_export(
    req: HttpRequest,
    user: SignedIn,
    form: web::Form<ExportForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    user.check_csrf(&form.csrf)?;
    let query = crate::api::auditor::ExportQuery {
        from: form.from.clone().filter(|s| !s.is_empty()),
        to: form.to.clone().filter(|s| !s.is_empty()),
        format: Some(form.format.clone()),
    };
    match crate::api::auditor::export_response(&user.caller(), &state, &query).await {
        Ok(res) => Ok(res),
        // A period that cannot be read: the audit page again, the export's boxes holding
        // what was typed, with an error summary pointing at them.
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            let console = console(&req)?;
            let field = if e.detail.starts_with("'to'") {
                "export-to"
            } else if e.detail.starts_with("'format'") {
                "export-csv"
            } else {
                "export-from"
            };
            let page = AuditForm {
                from: form.from.clone(),
                to: form.to.clone(),
                ..AuditForm::default()
            };
            let mut res = audit_page(
                &user,
                &state,
                &page,
                false,
                &console.verifications,
                vec![(field.to_owned(), e.detail.clone())],
            )
            .await?;
            *res.status_mut() = StatusCode::BAD_REQUEST;
            Ok(res)
        }
        Err(e) => Err(e.into()),
    }
}

/// Starts a verification of the whole chain in the background (unless one is running)
/// and sends the auditor back to the audit page, which shows its progress and outcome.
pub async fn audit_verify(
    req: HttpRequest,
    user: SignedIn,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    user.check_csrf(&form.csrf)?;
    let caller = user.caller();
    caller
        .require(&state, &[Role::Auditor], "/console/audit/verify")
        .await?;
    let console = console(&req)?;
    let mut keys = vec![state.signing_key.public().clone()];
    keys.extend(state.previous_keys.iter().cloned());
    // The same bounds as `referral-gateway audit verify` (entries left unsigned).
    let policy =
        crate::governance::verify::VerifyPolicy::from_config(&console.audit, state.clock.now());
    console.verifications.start(
        state.store.clone(),
        keys,
        policy,
        &caller.0.actor(),
        state.clock.clone(),
    );
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/audit#verification"))
        .finish())
}

// ---------------------------------------------------------------- subject access

#[derive(Deserialize, Default)]
pub struct SubjectForm {
    csrf: String,
    nhs_number: Option<String>,
    given: Option<String>,
    family: Option<String>,
    date_of_birth: Option<String>,
    format: Option<String>,
}

#[derive(Template)]
#[template(path = "console/subject_access.html")]
struct SubjectPage {
    layout: Layout,
    errors: Vec<(String, String)>,
    answered: bool,
    /// More entries than the console lists ([`SUBJECT_PAGES`] pages): the API's cursor
    /// for the rest.
    incomplete: Option<String>,
    summary: Vec<(String, String)>,
    statements: Vec<Statement>,
    form: SubjectFormView,
}

#[derive(Default)]
struct SubjectFormView {
    nhs_number: String,
    given: String,
    family: String,
    date_of_birth: String,
}

/// One line of the disclosure statement.
struct Statement {
    kind: String,
    tag: &'static str,
    when: String,
    referral: String,
    from: String,
    to: String,
    agreement: String,
    lawful_basis: String,
    consent: String,
    categories: String,
    withheld: String,
    /// The entry's fixed reason code or note (a refusal's reason, the event posted, ...):
    /// never personal data.
    detail: String,
}

fn statement(e: &AuditEntry) -> Statement {
    let (kind, tag) = match e.action() {
        Some(AuditAction::ReferralSubmitted) => ("Shared", "nhsuk-tag--blue"),
        // The referral itself reaching the recipient's queue is a disclosure; status
        // messages, follow-ups, withdrawals and escalations are delivered, not shared.
        Some(AuditAction::MessageDelivered)
            if crate::domain::messages::MessageType::of_delivered_detail(&e.detail)
                == Some(crate::domain::messages::MessageType::Referral) =>
        {
            ("Shared", "nhsuk-tag--blue")
        }
        Some(AuditAction::MessageDelivered) => ("Delivered", "nhsuk-tag--grey"),
        Some(AuditAction::ReferralRefused) => ("Refused (not shared)", "nhsuk-tag--red"),
        Some(AuditAction::ReferralRead) => ("Read", "nhsuk-tag--grey"),
        Some(AuditAction::EventPosted) => ("Event recorded", "nhsuk-tag--grey"),
        Some(AuditAction::AuditDisclosures) => {
            ("Subject access request answered", "nhsuk-tag--white")
        }
        _ => ("Recorded", "nhsuk-tag--grey"),
    };
    let event = e.action() == Some(AuditAction::EventPosted);
    let kind = if event {
        // The detail of `event.posted` is the event's type.
        format!("{kind}: {} ({})", e.detail.replace('_', " "), e.action)
    } else {
        format!("{kind} ({})", e.action)
    };
    Statement {
        kind,
        tag,
        when: when_exact(e.at),
        referral: e.referral_id.clone().unwrap_or_default(),
        from: e.actor.clone(),
        // An event's entry names the referral's recipient, whoever posted it: not a "to".
        to: if event {
            String::new()
        } else {
            e.recipient.clone().unwrap_or_default()
        },
        detail: if event {
            String::new()
        } else {
            e.detail.clone()
        },
        agreement: e.isa_id.clone().unwrap_or_default(),
        lawful_basis: e.lawful_basis.clone().unwrap_or_default(),
        consent: e.consent.clone().unwrap_or_default(),
        categories: e.categories.join(", "),
        withheld: e.withheld.join(", "),
    }
}

pub async fn subject_access_form(
    user: SignedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    user.caller()
        .require(&state, &[Role::Auditor], "/console/subject-access")
        .await?;
    Ok(render(&SubjectPage {
        layout: Layout::new("Subject access", Some(&user.0), "/console/subject-access"),
        errors: Vec::new(),
        answered: false,
        incomplete: None,
        summary: Vec::new(),
        statements: Vec::new(),
        form: SubjectFormView::default(),
    }))
}

fn csv_field(text: &str) -> String {
    // Quoted, and a leading formula character neutralised for spreadsheets.
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Entries per page of a subject access request the console reads, and how many pages
/// at most (100,000 entries about one person: beyond any real person's history).
const SUBJECT_PAGE_ENTRIES: u32 = 5000;
const SUBJECT_PAGES: usize = 20;

pub async fn subject_access(
    user: SignedIn,
    form: web::Form<SubjectForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    user.check_csrf(&form.csrf)?;
    let caller = user.caller();
    caller
        .require(&state, &[Role::Auditor], "/console/subject-access")
        .await?;
    let value = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let mut body = serde_json::Map::new();
    if let Some(nhs) = value(&form.nhs_number) {
        body.insert("nhs_number".into(), nhs.into());
    }
    let (given, family) = (value(&form.given), value(&form.family));
    if given.is_some() || family.is_some() {
        body.insert(
            "name".into(),
            serde_json::json!({"given": given.clone().unwrap_or_default(), "family": family.clone().unwrap_or_default()}),
        );
    }
    if let Some(dob) = value(&form.date_of_birth) {
        body.insert("date_of_birth".into(), dob.into());
    }
    body.insert("limit".into(), SUBJECT_PAGE_ENTRIES.into());
    let form_view = SubjectFormView {
        nhs_number: form.nhs_number.clone().unwrap_or_default(),
        given: form.given.clone().unwrap_or_default(),
        family: form.family.clone().unwrap_or_default(),
        date_of_birth: form.date_of_birth.clone().unwrap_or_default(),
    };
    let answer = match crate::api::auditor::subject_access(
        &caller,
        &state,
        &serde_json::Value::Object(body.clone()),
    )
    .await
    {
        Ok(answer) => answer,
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY
                || e.status == StatusCode::BAD_REQUEST =>
        {
            let field = |pointer: &str| match pointer {
                "/nhs_number" => "nhs_number",
                "/date_of_birth" => "date_of_birth",
                "/name" => "given",
                _ => "nhs_number",
            };
            // The API's problems in the words of the form (its field names, not the JSON
            // members the API reads).
            let words = |pointer: &str, detail: &str| -> String {
                match pointer {
                    "" => "Enter an NHS number, or a name and date of birth, or both.".to_owned(),
                    "/nhs_number" => {
                        "Enter a valid 10-digit NHS number (spaces are allowed).".to_owned()
                    }
                    "/name" if detail.starts_with("is needed") => {
                        "Enter the given and family names with the date of birth.".to_owned()
                    }
                    "/name" => "Enter both the given name and the family name.".to_owned(),
                    "/date_of_birth" if detail.starts_with("is needed") => {
                        "Enter the date of birth with the name.".to_owned()
                    }
                    "/date_of_birth" => {
                        "Enter the date of birth as a real date, YYYY-MM-DD (for example 1984-03-07)."
                            .to_owned()
                    }
                    other => format!("{} {detail}", other.trim_start_matches('/')),
                }
            };
            let errors = e
                .errors
                .iter()
                .map(|v| (field(&v.pointer).to_owned(), words(&v.pointer, &v.detail)))
                .collect::<Vec<_>>();
            let mut res = render(&SubjectPage {
                layout: Layout::new("Subject access", Some(&user.0), "/console/subject-access"),
                errors,
                answered: false,
                incomplete: None,
                summary: Vec::new(),
                statements: Vec::new(),
                form: form_view,
            });
            *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(res);
        }
        Err(e) => return Err(e.into()),
    };
    let (answer_searched_by, answer_summary) = (answer.searched_by, answer.summary);
    // The whole statement, page by page (each page is recorded in the log as the API's
    // are), up to a bound; beyond it the page says the list is incomplete.
    let mut entries = answer.entries;
    let mut next_cursor = answer.next_cursor;
    let mut pages = 1;
    while let Some(cursor) = next_cursor.take() {
        if pages == SUBJECT_PAGES {
            next_cursor = Some(cursor);
            break;
        }
        body.insert("cursor".into(), cursor.into());
        let page = crate::api::auditor::subject_access(
            &caller,
            &state,
            &serde_json::Value::Object(body.clone()),
        )
        .await?;
        entries.extend(page.entries);
        next_cursor = page.next_cursor;
        pages += 1;
    }
    let incomplete = next_cursor;
    let statements: Vec<Statement> = entries.iter().map(|(e, _)| statement(e)).collect();
    if form.format.as_deref() == Some("csv") {
        let mut csv = String::from(
            "when,what,referral,from,to,agreement,lawful_basis,consent,categories_shared,fields_withheld,detail\n",
        );
        for s in &statements {
            let fields = [
                &s.when,
                &s.kind,
                &s.referral,
                &s.from,
                &s.to,
                &s.agreement,
                &s.lawful_basis,
                &s.consent,
                &s.categories,
                &s.withheld,
                &s.detail,
            ];
            csv.push_str(
                &fields
                    .iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            csv.push('\n');
        }
        if let Some(cursor) = &incomplete {
            csv.push_str(&format!(
                "# incomplete: more than {} entries; read the rest with POST /v1/audit/disclosures and \"cursor\": \"{cursor}\"\n",
                statements.len()
            ));
        }
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"subject-access.csv\"",
            ))
            .body(csv));
    }
    let searched_by: Vec<&str> = answer_searched_by
        .iter()
        .map(|by| match *by {
            "nhs_number" => "NHS number",
            "name_and_date_of_birth" => "name and date of birth",
            _ => "other identifiers",
        })
        .collect();
    let summary = vec![
        (
            "Produced".to_owned(),
            format!(
                "{} by {}",
                when_exact(Timestamp::from(state.clock.now())),
                user.0.identity().actor()
            ),
        ),
        ("Searched by".to_owned(), searched_by.join(" and ")),
        ("Referrals".to_owned(), answer_summary.referrals.join(", ")),
        ("Disclosures".to_owned(), answer_summary.shared.to_string()),
        ("Refusals".to_owned(), answer_summary.refused.to_string()),
    ];
    Ok(render(&SubjectPage {
        layout: Layout::new("Subject access", Some(&user.0), "/console/subject-access"),
        errors: Vec::new(),
        answered: true,
        incomplete,
        summary,
        statements,
        form: form_view,
    }))
}

// ---------------------------------------------------------------- sharing agreements

#[derive(Deserialize)]
pub struct AgreementsQuery {
    from: Option<String>,
    to: Option<String>,
}

/// One agreement of the register as the page shows it.
struct AgreementView {
    id: String,
    title: String,
    rows: Vec<(String, String)>,
    status: &'static str,
    tag: &'static str,
    referrals: i64,
}

#[derive(Template)]
#[template(path = "console/agreements.html")]
struct AgreementsPage {
    /// The period form's values: what was typed, or the period's bounds when nothing was.
    form_from: String,
    form_to: String,
    layout: Layout,
    from: String,
    to: String,
    today: String,
    agreements: Vec<AgreementView>,
}

/// The agreement's standing on `today` (Europe/London): its label and nhsuk tag class.
fn agreement_status(
    a: &crate::domain::sharing::SharingAgreement,
    today: time::Date,
) -> (&'static str, &'static str) {
    if today < a.effective_from {
        ("Not yet in force", "nhsuk-tag--grey")
    } else {
        match a.effective_to {
            Some(end) if end < today => ("Ended", "nhsuk-tag--red"),
            Some(end) if (end - today).whole_days() <= 60 => {
                ("Ends within 60 days", "nhsuk-tag--orange")
            }
            _ => ("In force", "nhsuk-tag--green"),
        }
    }
}

fn listed<'a>(items: impl IntoIterator<Item = &'a String>, none: &str) -> String {
    let text = items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if text.is_empty() {
        none.to_owned()
    } else {
        text
    }
}

/// The register of information sharing agreements with the referrals received under each
/// in the period (auditors only). Governance data, no personal data; the view is recorded
/// in the audit log like the console's other pages.
pub async fn agreements(
    user: SignedIn,
    query: web::Query<AgreementsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let caller = user.caller();
    caller
        .require(&state, &[Role::Auditor], "/console/agreements")
        .await?;
    let (from, to) = match period_or_form(
        &user,
        &state,
        ("Sharing agreements", "/console/agreements"),
        &query.from,
        &query.to,
        &None,
    )? {
        Ok(period) => period,
        Err(page) => return Ok(page),
    };
    let counts = state.store.referrals_per_agreement(from, to).await?;
    crate::api::record_access(
        &state,
        AuditRecord::new(caller.0.actor(), AuditAction::AuditQueried)
            .detail(format!("console agreements register, {from} to {to}")),
    )
    .await?;
    let today = crate::domain::calendar::to_london(state.clock.now()).date();
    let runtime = state.runtime.load();
    let agreements = runtime
        .agreements
        .iter()
        .map(|a| {
            let (status, tag) = agreement_status(a, today);
            let mut recipients = Vec::new();
            if !a.recipient_agencies.is_empty() {
                recipients.push(format!("agencies: {}", listed(&a.recipient_agencies, "")));
            }
            if !a.recipient_service_types.is_empty() {
                recipients.push(format!(
                    "service types: {} in {}",
                    listed(&a.recipient_service_types, ""),
                    listed(&a.areas, "no area")
                ));
            }
            let rows = vec![
                ("Senders".to_owned(), listed(&a.senders, "none")),
                ("Recipients".to_owned(), recipients.join("; ")),
                ("Purpose".to_owned(), a.purpose.clone()),
                ("Lawful basis".to_owned(), a.lawful_basis.clone()),
                ("Categories".to_owned(), listed(&a.categories, "none")),
                (
                    "Sharing without consent".to_owned(),
                    listed(&a.without_consent, "not permitted"),
                ),
                (
                    "Fields beyond the categories".to_owned(),
                    match a.on_excess {
                        crate::domain::sharing::OnExcess::Remove => "removed",
                        crate::domain::sharing::OnExcess::Reject => "referral refused",
                    }
                    .to_owned(),
                ),
                ("Effective from".to_owned(), a.effective_from.to_string()),
                (
                    "Effective to".to_owned(),
                    a.effective_to
                        .map_or_else(|| "no end date".to_owned(), |d| d.to_string()),
                ),
            ];
            AgreementView {
                id: a.id.clone(),
                title: a.title.clone(),
                rows,
                status,
                tag,
                referrals: counts.get(&a.id).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok(render(&AgreementsPage {
        layout: Layout::new("Sharing agreements", Some(&user.0), "/console/agreements"),
        form_from: typed_or(&query.from, from),
        form_to: typed_or(&query.to, to),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        today: today.to_string(),
        agreements,
    }))
}

// ---------------------------------------------------------------- repeat referrals

#[derive(Deserialize)]
pub struct RepeatsQuery {
    from: Option<String>,
    to: Option<String>,
}

/// One referral id of the drill-down, with what the page notes about it.
struct RepeatReferralView {
    id: String,
    href: String,
    at: String,
    note: &'static str,
}

struct RepeatPersonView {
    label: String,
    service_type: String,
    referrals: Vec<RepeatReferralView>,
}

#[derive(Template)]
#[template(path = "console/repeats.html")]
struct RepeatsPage {
    /// The period form's values: what was typed, or the period's bounds when nothing was.
    form_from: String,
    form_to: String,
    layout: Layout,
    from: String,
    to: String,
    buckets: [&'static str; 3],
    counts: Vec<crate::governance::repeats::ServiceRepeats>,
    people: Vec<RepeatPersonView>,
    /// How many people the period holds; the drill-down lists the first `people_max`.
    people_total: usize,
    people_max: usize,
}

/// The drill-down lists at most this many people (the counts cover everyone).
const MAX_REPEAT_PEOPLE: usize = 200;

/// Repeat referrals in the period (auditors only): people referred to a service type 2,
/// 3–4 and 5+ times, referrals re-made after a decline, and the referral ids of each
/// (anonymous) person. Counted from the audit log's person keys, which the page never
/// shows; the view is recorded in the audit log before the page is rendered.
pub async fn repeats(
    user: SignedIn,
    query: web::Query<RepeatsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let caller = user.caller();
    caller
        .require(&state, &[Role::Auditor], "/console/repeats")
        .await?;
    let (from, to) = match period_or_form(
        &user,
        &state,
        ("Repeat referrals", "/console/repeats"),
        &query.from,
        &query.to,
        &None,
    )? {
        Ok(period) => period,
        Err(page) => return Ok(page),
    };
    let submissions = state.store.submissions_by_person(from, to).await?;
    let declined: std::collections::HashMap<String, Timestamp> = state
        .store
        .declined_referrals(from, to)
        .await?
        .into_iter()
        .collect();
    crate::api::record_access(
        &state,
        AuditRecord::new(caller.0.actor(), AuditAction::AuditQueried)
            .detail(format!("console repeat referrals, {from} to {to}")),
    )
    .await?;
    let runtime = state.runtime.load();
    let registry = &runtime.registry;
    let found = crate::governance::repeats::repeats(&submissions, &declined, |recipient| {
        registry
            .get(recipient)
            .map(|a| a.service_type.as_str().to_owned())
    });
    let people_total = found.people.len();
    let people = found
        .people
        .into_iter()
        .take(MAX_REPEAT_PEOPLE)
        .map(|p| RepeatPersonView {
            label: format!("Person {}", p.number),
            service_type: p.service_type,
            referrals: p
                .referrals
                .into_iter()
                .map(|r| RepeatReferralView {
                    href: format!("/console/referrals/{}", r.referral_id),
                    id: r.referral_id,
                    at: when_exact(r.at),
                    note: match (r.remade_after_decline, r.declined) {
                        (true, true) => "re-made after a decline; declined",
                        (true, false) => "re-made after a decline",
                        (false, true) => "declined",
                        (false, false) => "",
                    },
                })
                .collect(),
        })
        .collect();
    Ok(render(&RepeatsPage {
        layout: Layout::new("Repeat referrals", Some(&user.0), "/console/repeats"),
        form_from: typed_or(&query.from, from),
        form_to: typed_or(&query.to, to),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        buckets: crate::governance::repeats::BUCKETS,
        counts: found.by_service,
        people,
        people_total,
        people_max: MAX_REPEAT_PEOPLE,
    }))
}

#[cfg(test)]
mod tests {
    use super::lateness;

    #[test]
    fn lateness_reads_at_a_glance() {
        let minute = 60_000_000;
        assert_eq!(lateness(-5), "under 1 min");
        assert_eq!(lateness(30_000_000), "under 1 min");
        assert_eq!(lateness(12 * minute), "12 min");
        assert_eq!(lateness((5 * 60 + 20) * minute), "5 h 20 min");
        assert_eq!(lateness((24 * 60 + 61) * minute), "1 day 1 h");
        assert_eq!(lateness((3 * 24 * 60 + 4 * 60) * minute), "3 days 4 h");
    }
}
