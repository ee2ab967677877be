//! RFC 9457 problem details: the one place where errors become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::intake::schema::Violation;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// At most this many entries in a problem's `errors`; `detail` gives the total.
pub const MAX_LISTED_PROBLEMS: usize = 100;
const TYPE_PREFIX: &str = "urn:referral-gateway:problem:";

/// Every kind of problem the API answers with: its slug (the problem `type` is
/// `urn:referral-gateway:problem:<slug>`), its HTTP status and its usual title.
/// docs/api.md lists exactly these (checked by a test below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    BadCorrelationId,
    BadIdempotencyKey,
    DuplicateHeader,
    UnreadableBody,
    MalformedJson,
    BadQuery,
    Unauthorized,
    InvalidToken,
    InsufficientRole,
    OtherAgency,
    NoAgencyClaim,
    UnknownAgency,
    NoClientCertificate,
    NotPermitted,
    SharingRefused,
    NotFound,
    MethodNotAllowed,
    BodyTimeout,
    IdempotencyConflict,
    IllegalTransition,
    TooManyEvents,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unroutable,
    SchemaValidation,
    ExcessData,
    BadForm,
    IdentityProvider,
    Overloaded,
    Internal,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 30] = [
        Self::BadCorrelationId,
        Self::BadIdempotencyKey,
        Self::DuplicateHeader,
        Self::UnreadableBody,
        Self::MalformedJson,
        Self::BadQuery,
        Self::Unauthorized,
        Self::InvalidToken,
        Self::InsufficientRole,
        Self::OtherAgency,
        Self::NoAgencyClaim,
        Self::UnknownAgency,
        Self::NoClientCertificate,
        Self::NotPermitted,
        Self::SharingRefused,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::BodyTimeout,
        Self::IdempotencyConflict,
        Self::IllegalTransition,
        Self::TooManyEvents,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::Unroutable,
        Self::SchemaValidation,
        Self::ExcessData,
        Self::BadForm,
        Self::IdentityProvider,
        Self::Overloaded,
        Self::Internal,
    ];

    /// `(slug, status, title)`.
    const fn parts(self) -> (&'static str, StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Self::BadCorrelationId => ("bad-correlation-id", S::BAD_REQUEST, "Bad request"),
            Self::BadIdempotencyKey => ("bad-idempotency-key", S::BAD_REQUEST, "Bad request"),
            Self::DuplicateHeader => ("duplicate-header", S::BAD_REQUEST, "Bad request"),
            Self::UnreadableBody => ("unreadable-body", S::BAD_REQUEST, "Bad request"),
            Self::MalformedJson => ("malformed-json", S::BAD_REQUEST, "Bad request"),
            Self::BadQuery => ("bad-query", S::BAD_REQUEST, "Bad request"),
            Self::Unauthorized => ("unauthorized", S::UNAUTHORIZED, "Unauthorized"),
            Self::InvalidToken => ("invalid-token", S::UNAUTHORIZED, "Unauthorized"),
            Self::InsufficientRole => ("insufficient-role", S::FORBIDDEN, "Forbidden"),
            Self::OtherAgency => ("other-agency", S::FORBIDDEN, "Forbidden"),
            Self::NoAgencyClaim => ("no-agency-claim", S::FORBIDDEN, "Forbidden"),
            Self::UnknownAgency => ("unknown-agency", S::FORBIDDEN, "Forbidden"),
            Self::NoClientCertificate => ("no-client-certificate", S::FORBIDDEN, "Forbidden"),
            Self::NotPermitted => ("not-permitted", S::FORBIDDEN, "Forbidden"),
            Self::SharingRefused => ("sharing-refused", S::FORBIDDEN, "Forbidden"),
            Self::NotFound => ("not-found", S::NOT_FOUND, "Not found"),
            Self::MethodNotAllowed => (
                "method-not-allowed",
                S::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            Self::BodyTimeout => ("body-timeout", S::REQUEST_TIMEOUT, "Request body too slow"),
            Self::IdempotencyConflict => (
                "idempotency-conflict",
                S::CONFLICT,
                "Idempotency key reused",
            ),
            Self::IllegalTransition => (
                "illegal-transition",
                S::CONFLICT,
                "Illegal status transition",
            ),
            Self::TooManyEvents => ("too-many-events", S::CONFLICT, "Too many events"),
            Self::PayloadTooLarge => (
                "payload-too-large",
                S::PAYLOAD_TOO_LARGE,
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                "unsupported-media-type",
                S::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            Self::Unroutable => (
                "unroutable",
                S::UNPROCESSABLE_ENTITY,
                "Referral cannot be routed",
            ),
            Self::SchemaValidation => (
                "schema-validation",
                S::UNPROCESSABLE_ENTITY,
                "Referral does not match its schema",
            ),
            Self::ExcessData => (
                "excess-data",
                S::UNPROCESSABLE_ENTITY,
                "Referral holds data the sharing agreement does not cover",
            ),
            Self::BadForm => ("bad-form", S::BAD_REQUEST, "Bad request"),
            Self::IdentityProvider => (
                "identity-provider",
                S::BAD_GATEWAY,
                "Sign-in is not available",
            ),
            Self::Overloaded => (
                "overloaded",
                S::SERVICE_UNAVAILABLE,
                "Too many requests waiting",
            ),
            Self::Internal => ("internal", S::INTERNAL_SERVER_ERROR, "Internal error"),
        }
    }

    pub const fn slug(self) -> &'static str {
        self.parts().0
    }

    pub const fn status(self) -> StatusCode {
        self.parts().1
    }

    pub const fn title(self) -> &'static str {
        self.parts().2
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.slug())
    }
}

/// An error answer: a [`ProblemKind`] (which gives the status and the problem `type`), a
/// title (the kind's own unless a resource words it more precisely) and a detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ProblemKind,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<Violation>,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemBody<'a> {
    /// `urn:referral-gateway:problem:<kind>`; each response lists the kinds it can be.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:referral-gateway:problem:[a-z-]+$")]
    type_uri: String,
    /// Short, the same for every problem of a kind (a resource may word it more precisely).
    #[schema(value_type = String)]
    title: &'a str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong in this request, in words.
    #[schema(value_type = String)]
    detail: &'a str,
    /// Each problem with the JSON Pointer of the value at fault (schema validation, malformed
    /// JSON, excess data); absent when there are none.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(value_type = Vec<Violation>, max_items = 100)]
    errors: &'a [Violation],
}

/// The problem `type` URI of `kind`.
pub fn type_uri(kind: ProblemKind) -> String {
    format!("{TYPE_PREFIX}{kind}")
}

impl ApiError {
    /// A problem of `kind`, with the kind's status and title.
    pub fn of(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            status: kind.status(),
            kind,
            title: kind.title(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// The same with a title worded for the resource (for example "Event id reused").
    pub fn titled(mut self, title: &'static str) -> Self {
        self.title = title;
        self
    }

    pub fn bad_request(kind: ProblemKind, detail: impl Into<String>) -> Self {
        debug_assert_eq!(kind.status(), StatusCode::BAD_REQUEST);
        Self::of(kind, detail)
    }

    pub fn forbidden(kind: ProblemKind, detail: impl Into<String>) -> Self {
        debug_assert_eq!(kind.status(), StatusCode::FORBIDDEN);
        Self::of(kind, detail)
    }

    /// 401 for staff endpoints: no bearer token, or one that does not verify.
    pub fn unauthorized(kind: ProblemKind, detail: impl Into<String>) -> Self {
        debug_assert_eq!(kind.status(), StatusCode::UNAUTHORIZED);
        Self::of(kind, detail)
    }

    /// The same answer whether the resource does not exist or the caller may not see it.
    pub fn not_found() -> Self {
        Self::of(
            ProblemKind::NotFound,
            "No such resource, or it is not visible to the calling agency.",
        )
    }

    /// 422 listing the schema violations with their JSON Pointers: the first
    /// [`MAX_LISTED_PROBLEMS`], and how many more there are.
    pub fn schema_validation(title: &'static str, mut violations: Vec<Violation>) -> Self {
        let total = violations.len();
        violations.truncate(MAX_LISTED_PROBLEMS);
        let detail = if total > MAX_LISTED_PROBLEMS {
            format!(
                "{total} problem(s); 'errors' lists the first {MAX_LISTED_PROBLEMS}, each with a JSON Pointer to the value at fault."
            )
        } else {
            format!(
                "{total} problem(s); each entry of 'errors' has a JSON Pointer to the value at fault."
            )
        };
        Self {
            errors: violations,
            ..Self::of(ProblemKind::SchemaValidation, detail).titled(title)
        }
    }

    /// 400 for a body that is not acceptable JSON (syntax, duplicate member names, NUL),
    /// with the offending member's JSON Pointer when there is one.
    pub fn malformed_json(error: &crate::intake::json::JsonError) -> Self {
        let mut problem = Self::bad_request(
            ProblemKind::MalformedJson,
            format!("The body is not acceptable JSON: {error}."),
        );
        if let Some(pointer) = error.pointer() {
            problem.errors.push(Violation {
                pointer: pointer.to_owned(),
                keyword: error.code().to_owned(),
                detail: match error {
                    crate::intake::json::JsonError::DuplicateMember { .. } => {
                        "this member name appears more than once in its object".to_owned()
                    }
                    _ => "strings may not hold NUL (\\u0000)".to_owned(),
                },
            });
        }
        problem
    }

    pub fn internal() -> Self {
        Self::of(
            ProblemKind::Internal,
            "The gateway could not complete the request; nothing was accepted or disclosed. Retry (a referral with the same Idempotency-Key, an event with the same event_id).",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = ProblemBody {
            type_uri: type_uri(self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: say which scheme, and whether a token was given but refused.
            let challenge = if self.kind == ProblemKind::InvalidToken {
                r#"Bearer realm="referral-gateway", error="invalid_token""#
            } else {
                r#"Bearer realm="referral-gateway""#
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if self.kind == ProblemKind::Overloaded {
            response.insert_header((header::RETRY_AFTER, OVERLOADED_RETRY_AFTER_SECS.to_string()));
        }
        response.body(json)
    }
}

/// `Retry-After` (seconds) of an `overloaded` answer.
pub const OVERLOADED_RETRY_AFTER_SECS: u32 = 1;

impl From<crate::intake::referrals::IntakeError> for ApiError {
    #[track_caller]
    fn from(error: crate::intake::referrals::IntakeError) -> Self {
        use crate::intake::referrals::IntakeError as E;
        match error {
            E::NotASender(_) | E::NotPermitted { .. } => {
                Self::of(ProblemKind::NotPermitted, error.to_string())
            }
            E::MalformedJson(e) => Self::malformed_json(&e),
            E::Routing(e) => Self::of(ProblemKind::Unroutable, e.to_string()),
            E::Sharing(refusal) => Self::of(ProblemKind::SharingRefused, refusal.to_string()),
            E::Excess { isa_id, pointers } => Self {
                detail: format!(
                    "Agreement '{isa_id}' does not let this recipient receive {} field(s); remove them and send again.",
                    pointers.len()
                ),
                errors: pointers
                    .into_iter()
                    .map(|pointer| Violation {
                        pointer,
                        keyword: "x-category".into(),
                        detail: "this field's category is not covered by the sharing agreement"
                            .into(),
                    })
                    .collect(),
                ..Self::of(ProblemKind::ExcessData, String::new())
            },
            E::Invalid(violations) => {
                Self::schema_validation("Referral does not match its schema", violations)
            }
            E::IdempotencyConflict => Self::of(
                ProblemKind::IdempotencyConflict,
                "This Idempotency-Key was already used with a different body. Use a new key for a new referral.",
            ),
            E::Store(e) => Self::from(e),
        }
    }
}

impl From<crate::intake::events::EventError> for ApiError {
    #[track_caller]
    fn from(error: crate::intake::events::EventError) -> Self {
        use crate::intake::events::EventError as E;
        match error {
            E::NotFound => Self::not_found(),
            E::MalformedJson(e) => Self::malformed_json(&e),
            E::Invalid(violations) => {
                Self::schema_validation("Event does not match its schema", violations)
            }
            E::WrongParty(..) => Self::of(ProblemKind::NotPermitted, error.to_string()),
            E::Illegal(e) => Self::of(ProblemKind::IllegalTransition, e.to_string()),
            E::Conflict => Self::of(
                ProblemKind::IdempotencyConflict,
                "This event_id was already used for a different event on this referral. Use a new event_id for a new event.",
            )
            .titled("Event id reused"),
            E::TooMany => Self::of(
                ProblemKind::TooManyEvents,
                format!(
                    "Your agency already has {} events on this referral, the most it may post. Contact the other agency another way.",
                    crate::store::MAX_EVENTS_PER_REFERRAL
                ),
            ),
            E::Store(e) => Self::from(e),
        }
    }
}

/// A store failure is logged here, once, with where it was met, and answered `500`
/// without details.
impl From<crate::store::StoreError> for ApiError {
    #[track_caller]
    fn from(error: crate::store::StoreError) -> Self {
        if matches!(error, crate::store::StoreError::Busy) {
            return Self::of(
                ProblemKind::Overloaded,
                "Too many requests are waiting to be written; nothing was accepted. Retry after the time Retry-After gives (a referral with the same Idempotency-Key).",
            );
        }
        let at = std::panic::Location::caller();
        tracing::error!(error = %error, at = %at, "store failure");
        Self::internal()
    }
}

/// Query strings that cannot be parsed (a parameter given twice, say) answer with a
/// problem document too.
pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request(
            ProblemKind::BadQuery,
            format!("The query string cannot be read: {err}"),
        )
        .into()
    })
}

/// Fallback for unknown paths.
pub async fn no_such_route() -> HttpResponse {
    ApiError::not_found().error_response()
}

/// Fallback for a known path with another method: `405` with an `Allow` header naming
/// the methods it has (`allow`, for example `"GET, POST"`), as RFC 9110 asks.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    actix_web::web::to(move || async move {
        let mut response = ApiError::of(
            ProblemKind::MethodNotAllowed,
            format!("This resource supports {allow} only; see docs/api.md."),
        )
        .error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/api.md's table of problem kinds lists exactly the kinds the code has, each
    /// with its status.
    #[test]
    fn docs_list_every_problem_kind_with_its_status() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md"),
        )
        .unwrap();
        let table = docs
            .split("The kinds (every")
            .nth(1)
            .and_then(|rest| rest.split("\n\n###").next())
            .expect("docs/api.md has the table of kinds");
        let documented: Vec<(String, String)> = table
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let slug = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((slug.to_owned(), cells.get(2)?.to_string()))
            })
            .collect();
        let expected: Vec<(String, String)> = ProblemKind::ALL
            .iter()
            .map(|k| (k.slug().to_owned(), k.status().as_u16().to_string()))
            .collect();
        for kind in &expected {
            assert!(documented.contains(kind), "{kind:?} is not in docs/api.md");
        }
        for kind in &documented {
            assert!(
                expected.contains(kind),
                "docs/api.md lists {kind:?}, which the code lacks"
            );
        }
    }
}
