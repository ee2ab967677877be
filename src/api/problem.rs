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

/// An error answer. `kind` becomes the problem `type` (`urn:referral-gateway:problem:<kind>`);
/// every kind is listed in docs/api.md.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<Violation>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [Violation],
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    pub fn forbidden(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, "Forbidden", detail)
    }

    /// 401 for staff endpoints: no bearer token, or one that does not verify.
    pub fn unauthorized(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, kind, "Unauthorized", detail)
    }

    /// The same answer whether the resource does not exist or the caller may not see it.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
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
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "schema-validation",
            title,
            detail,
            errors: violations,
        }
    }

    /// 400 for a body that is not acceptable JSON (syntax, duplicate member names, NUL),
    /// with the offending member's JSON Pointer when there is one.
    pub fn malformed_json(error: &crate::intake::json::JsonError) -> Self {
        let mut problem = Self::bad_request(
            "malformed-json",
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
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
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
            type_uri: format!("{TYPE_PREFIX}{}", self.kind),
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
            let challenge = if self.kind == "invalid-token" {
                r#"Bearer realm="referral-gateway", error="invalid_token""#
            } else {
                r#"Bearer realm="referral-gateway""#
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        response.body(json)
    }
}

/// Query strings that cannot be parsed (a parameter given twice, say) answer with a
/// problem document too.
pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request(
            "bad-query",
            format!("The query string cannot be read: {err}"),
        )
        .into()
    })
}

/// Fallback for unknown paths.
pub async fn no_such_route() -> HttpResponse {
    ApiError::not_found().error_response()
}

/// Fallback for a known path with another method.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "This resource does not support that method; see docs/api.md.",
    )
    .error_response()
}
