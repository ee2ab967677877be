//! The staff console: server-rendered pages under `/console/` on the staff listener
//! (docs/console.md). Another adapter over the same functions as the staff API: the SLA
//! report, the audit queries, subject access and the referral views are those the API
//! handlers call, so the console's numbers are the API's and every disclosure is audited
//! before the page is sent (fail closed).
//!
//! Sign-in: OpenID Connect (`oidc`) or, when `[staff] dev_tokens = true`, a development
//! sign-in. Session: a sealed cookie (`session`). Every form carries the session's CSRF
//! token; every response carries a strict CSP, `X-Frame-Options: DENY` and
//! `Cache-Control: no-store`.

pub mod oidc;
mod pages;
pub mod session;
pub mod verification;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};

use super::AppState;
use super::problem::ApiError;
use crate::staff_auth::tokens::is_acceptable_subject;
use session::{SESSION_COOKIE, Sealer, Session, SignedOut};

/// What the console keeps besides `AppState`.
#[derive(Debug)]
pub struct ConsoleState {
    pub(crate) sealer: Sealer,
    pub(crate) oidc: Option<oidc::Oidc>,
    pub(crate) dev_sign_in: bool,
    pub(crate) idle_secs: i64,
    pub(crate) absolute_secs: i64,
    pub(crate) signed_out: SignedOut,
    /// The audit settings, for "verify now" to apply `audit verify`'s bounds.
    pub(crate) audit: crate::config::AuditConfig,
    /// "Verify now": the newest background verification of the chain.
    pub(crate) verifications: std::sync::Arc<verification::Verifications>,
}

impl ConsoleState {
    /// `None` when there is no staff access or `[console] enabled = false`.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Option<Self>> {
        let Some(staff) = config.staff.as_ref() else {
            return Ok(None);
        };
        let console = &config.console;
        if !console.enabled {
            return Ok(None);
        }
        let sealer = match &console.session_secret {
            Some(secret) => Sealer::new(secret),
            None => Sealer::random(),
        }
        .map_err(|_| anyhow::anyhow!("cannot derive the console session key"))?;
        let oidc = console.oidc.clone().map(oidc::Oidc::new).transpose()?;
        Ok(Some(Self {
            sealer,
            oidc,
            dev_sign_in: staff.dev_tokens,
            idle_secs: console.idle_timeout.as_secs() as i64,
            absolute_secs: console.absolute_timeout.as_secs() as i64,
            signed_out: SignedOut::default(),
            audit: config.audit.clone(),
            verifications: Default::default(),
        }))
    }

    /// The session a cookie value holds, if it opens, is within both timeouts and was
    /// not signed out.
    pub(crate) fn session(&self, value: &str, now: i64) -> Option<Session> {
        let session: Session = self.sealer.open(SESSION_COOKIE, value)?;
        let fresh = now - session.issued_at < self.absolute_secs
            && now - session.last_seen < self.idle_secs
            && session.issued_at <= now + 60;
        (fresh && is_acceptable_subject(&session.subject) && !self.signed_out.contains(&session.id))
            .then_some(session)
    }

    pub(crate) fn session_cookie(&self, session: &Session) -> Option<String> {
        let value = self.sealer.seal(SESSION_COOKIE, session)?;
        Some(session::set_cookie(SESSION_COOKIE, &value, "Strict", None))
    }
}

/// The console's routes; the development sign-in exists only when `dev_sign_in`.
pub fn configure(dev_sign_in: bool) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::resource("/console")
                .wrap(actix_web::middleware::from_fn(layer))
                .route(web::get().to(pages::to_root)),
        );
        let mut scope = web::scope("/console")
            .wrap(actix_web::middleware::from_fn(layer))
            .app_data(form_config())
            .app_data(query_config())
            .route("/", web::get().to(pages::overview))
            .route("/sign-in", web::get().to(pages::sign_in))
            .route("/sign-out", web::post().to(pages::sign_out))
            .route("/auth/oidc", web::get().to(pages::oidc_start))
            .route("/auth/callback", web::get().to(pages::oidc_callback))
            .route("/overdue", web::get().to(pages::overdue))
            .route("/referrals/{id}", web::get().to(pages::referral))
            .route("/audit", web::get().to(pages::audit_form))
            .route("/audit", web::post().to(pages::audit_search))
            .route("/audit/export", web::post().to(pages::audit_export))
            .route("/audit/verify", web::post().to(pages::audit_verify))
            .route("/agreements", web::get().to(pages::agreements))
            .route("/repeats", web::get().to(pages::repeats))
            .route("/subject-access", web::get().to(pages::subject_access_form))
            .route("/subject-access", web::post().to(pages::subject_access))
            .route("/assets/{name}", web::get().to(pages::asset));
        if dev_sign_in {
            scope = scope.route("/auth/dev", web::post().to(pages::dev_sign_in));
        }
        cfg.service(scope.default_service(web::to(pages::not_found)));
    }
}

/// A console form that cannot be read (another content type, too large, a field missing
/// or malformed) is answered with the console's error page (400), not actix's plain text;
/// the page says nothing of what was sent.
fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(16 * 1024)
        .error_handler(|err, _req| {
            actix_web::error::InternalError::from_response(
                err,
                pages::error_page(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "The form could not be read",
                    "Go back to the page, reload it and send the form again.",
                ),
            )
            .into()
        })
}

/// A console address whose query string cannot be read (a parameter given twice, one
/// that does not parse) gets the console's error page (400), not the API's problem
/// document; the page says nothing of what was sent.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        actix_web::error::InternalError::from_response(
            err,
            pages::error_page(
                actix_web::http::StatusCode::BAD_REQUEST,
                "The address could not be read",
                "Go back to the page and follow its links again, or start from the overview.",
            ),
        )
        .into()
    })
}

/// Security headers on every console response; the session from the cookie in the
/// request's extensions; the session cookie renewed (idle timeout) when it is used.
async fn layer(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let console = req.app_data::<web::Data<ConsoleState>>().cloned();
    let now = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.clock.now().unix_timestamp())
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
    let mut renew = None;
    let mut signed_in = None;
    if let Some(console) = &console
        && !cross_site(req.request())
        && let Some(value) = session::cookie(req.request(), SESSION_COOKIE)
        && let Some(mut session) = console.session(value, now)
    {
        if now - session.last_seen >= 30 {
            session.last_seen = now;
            renew = console.session_cookie(&session);
        }
        signed_in = Some(session.clone());
        req.extensions_mut().insert(session);
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    // An error page shown to a signed-in staff member keeps the navigation and who they
    // are (the error itself was rendered without the session).
    let info = res
        .response()
        .extensions()
        .get::<pages::ErrorPageInfo>()
        .cloned();
    if let (Some(session), Some(info)) = (&signed_in, info) {
        let page = pages::error_page_for(Some(session), &info);
        let mut kept = res.response().headers().clone();
        res = res.into_response(page);
        // The error response's headers stay (Set-Cookie...); the page's own win.
        for (name, value) in res.headers().iter() {
            kept.insert(name.clone(), value.clone());
        }
        *res.headers_mut() = kept;
    }
    let headers = res.headers_mut();
    let sets_session = headers.get_all(header::SET_COOKIE).any(|v| {
        v.as_bytes()
            .strip_prefix(SESSION_COOKIE.as_bytes())
            .is_some_and(|rest| rest.starts_with(b"="))
    });
    if let Some(cookie) = renew.filter(|_| !sets_session)
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        headers.append(header::SET_COOKIE, value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(res)
}

/// Whether the browser says this request was started by another site (Fetch Metadata
/// `Sec-Fetch-Site: cross-site`). Such a request is served as if it carried no session,
/// whatever cookies came with it: a link from elsewhere lands on the sign-in page, and no
/// page, filter result or form action is ever disclosed to, or done for, another site,
/// even by a browser that does not honour `SameSite=Strict`. The provider's redirect back
/// to `/console/auth/callback` needs no session, only the login cookie.
fn cross_site(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// A signed-in staff member (the extractor redirects to the sign-in page otherwise).
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

impl FromRequest for SignedIn {
    type Error = ConsoleError;
    type Future = std::future::Ready<Result<Self, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Session>()
                .cloned()
                .map(SignedIn)
                .ok_or_else(|| ConsoleError::SignIn(return_path(req))),
        )
    }
}

impl SignedIn {
    /// The caller as the staff API's handlers know one.
    pub fn caller(&self) -> super::staff::StaffCaller {
        super::staff::StaffCaller(self.0.identity())
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), ConsoleError> {
        if session::same_token(&self.0.csrf, token) {
            Ok(())
        } else {
            Err(ConsoleError::Csrf)
        }
    }
}

/// The page to come back to after signing in: the address of a `GET` for a console page
/// (not a sign-in step), when it is a safe one (`safe_return_path`).
fn return_path(req: &HttpRequest) -> Option<String> {
    if req.method() != actix_web::http::Method::GET {
        return None;
    }
    let target = req.uri().path_and_query()?.as_str();
    safe_return_path(target).map(str::to_owned)
}

/// A return address is kept only when it is a console page on this origin: it starts with
/// `/console/` (so never `//host` or a scheme), its path has no `.` or `..` segment and no
/// percent-escape (so it cannot climb out of `/console/` or hide a sign-in step), it is at most 1,024
/// visible ASCII characters with no backslash, and it is not a sign-in step or the
/// sign-out. Anything else is
/// dropped, and sign-in goes to the overview: the address comes from a link anybody can
/// make, so it must never send a signed-in browser to another site.
pub fn safe_return_path(target: &str) -> Option<&str> {
    // The path, without its query or fragment: no `.` or `..` segment (a browser would
    // resolve `/console/../x` to `/x`), and no percent-escape at all (no console page
    // needs one, and an escaped `.`, `/`, `\` or letter could hide a dot segment or a
    // sign-in step from the checks here while the browser or the router decodes it).
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let dot_segment = path
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    let kept = target.len() <= 1024
        && target.starts_with("/console/")
        && !dot_segment
        && !path.contains('%')
        && target.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && !["/console/sign-in", "/console/sign-out", "/console/auth/"]
            .iter()
            .any(|step| target.starts_with(step));
    kept.then_some(target)
}

/// `/console/sign-in`, with the page to return to after signing in when there is one.
pub fn sign_in_location(next: Option<&str>) -> String {
    match next.and_then(safe_return_path) {
        Some(next) => format!(
            "/console/sign-in?next={}",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        ),
        None => "/console/sign-in".to_owned(),
    }
}

/// Why a console page is not shown. Rendered as an HTML page (or a redirect to sign in).
#[derive(Debug)]
pub enum ConsoleError {
    /// Not signed in; the page asked for, to return to afterwards.
    SignIn(Option<String>),
    Csrf,
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Api(e)
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        ConsoleError::Api(ApiError::from(e))
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::SignIn(_) => f.write_str("sign in first"),
            ConsoleError::Csrf => f.write_str("the form's security token is missing or stale"),
            ConsoleError::Api(e) => write!(f, "{}: {}", e.title, e.detail),
        }
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn(_) => StatusCode::SEE_OTHER,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::Api(e) => e.status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ConsoleError::SignIn(next) => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, sign_in_location(next.as_deref())))
                .finish(),
            ConsoleError::Csrf => pages::error_page(
                StatusCode::FORBIDDEN,
                "Your form has expired",
                "The form was sent without this session's security token. Go back, reload the page and try again.",
            ),
            ConsoleError::Api(e) => {
                let (heading, detail) = console_words(e);
                pages::error_page(e.status, heading, &detail)
            }
        }
    }
}

/// An API problem in the words of a page (the API's own detail speaks of tokens, resources
/// and calling agencies): the heading and what to say, for the problems a console page can
/// meet; any other keeps the API's title and detail.
fn console_words(e: &ApiError) -> (&'static str, String) {
    use super::problem::ProblemKind::*;
    match e.kind {
        NotFound => (
            "Not found",
            "There is no such referral (or page), or it is not one your agency sent or received.".to_owned(),
        ),
        InsufficientRole => (
            "You cannot see this page",
            "This page is for auditors. Ask your organisation's identity administrator if you need that role.".to_owned(),
        ),
        OtherAgency => (
            "You cannot see this agency's data",
            format!("{} Choose your own agency.", e.detail),
        ),
        NoAgencyClaim => (
            "Your agency is not known here",
            "Your account names no agency registered in this gateway. Ask the scheme operator to check your account's agency.".to_owned(),
        ),
        _ => (e.title, e.detail.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::{safe_return_path, sign_in_location};

    #[test]
    fn only_console_pages_on_this_origin_are_returned_to() {
        for kept in [
            "/console/",
            "/console/overdue?agency=coventry-cmht",
            "/console/referrals/01J0000000000000000000000",
            "/console/audit?from=2026-01-01&to=2026-02-01",
            "/console/overdue?agency=a&note=../..",
            "/console/referrals/x#timeline",
        ] {
            assert_eq!(safe_return_path(kept), Some(kept), "{kept}");
        }
        let long = format!("/console/{}", "a".repeat(1020));
        for dropped in [
            "",
            "/",
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/console/",
            "/consolex/",
            "/console",
            "/console/\\\\evil.example",
            "/console/ overdue",
            "/console/\u{e9}",
            "/console/a\r\nSet-Cookie: x=1",
            "/console/sign-in",
            "/console/sign-in?next=/console/",
            "/console/sign-out",
            "/console/auth/oidc",
            "/console/auth/callback?code=x",
            "/console/../../evil",
            "/console/..",
            "/console/./../evil",
            "/console/%2e%2e/evil",
            "/console/%2E./evil",
            "/console/.%2e/%2e%2e/evil",
            "/console/x%2f..%2f..%2fevil",
            "/console/x%5c..%5cevil",
            "/console/%73ign-in?next=/console/",
            "/console/auth/%6fidc",
            "/console/%61uth/callback?code=x",
            long.as_str(),
        ] {
            assert_eq!(safe_return_path(dropped), None, "{dropped:?}");
        }
    }

    #[test]
    fn the_sign_in_address_carries_the_page_encoded() {
        assert_eq!(sign_in_location(None), "/console/sign-in");
        assert_eq!(
            sign_in_location(Some("//evil.example/")),
            "/console/sign-in"
        );
        assert_eq!(
            sign_in_location(Some("/console/overdue?agency=a&x=1")),
            "/console/sign-in?next=%2Fconsole%2Foverdue%3Fagency%3Da%26x%3D1"
        );
    }
}

#[cfg(test)]
mod words_tests {
    use super::console_words;
    use crate::api::problem::ApiError;

    #[test]
    fn api_problems_are_said_in_the_pages_words() {
        let (heading, detail) = console_words(&ApiError::not_found());
        assert_eq!(heading, "Not found");
        assert!(
            detail.contains("not one your agency sent or received"),
            "{detail}"
        );
    }
}
