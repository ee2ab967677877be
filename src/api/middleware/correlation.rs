//! `X-Correlation-ID`: taken from the request (or generated), echoed on every response,
//! stored with the referral and put on every log line of the request.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use crate::api::identity::PeerCertificate;
use crate::api::problem::{ApiError, ProblemKind};

pub const HEADER: HeaderName = HeaderName::from_static("x-correlation-id");
const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(String);

impl CorrelationId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// 1-128 characters from `A-Z a-z 0-9 - _ . : / + = @`: enough for UUIDs, ULIDs and
    /// W3C trace ids, nothing that could smuggle data into logs or headers.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b));
        ok.then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let started = Instant::now();
    let id = match single_header(&req, &HEADER).and_then(|value| {
        match value {
        None => Ok(CorrelationId::generate()),
        Some(v) => v.to_str().ok().and_then(CorrelationId::parse).ok_or_else(|| {
            ApiError::bad_request(
                ProblemKind::BadCorrelationId,
                "X-Correlation-ID must be 1-128 characters of letters, digits and - _ . : / + = @",
            )
        }),
    }
    }) {
        Ok(id) => id,
        // Answered here as a response, not an error, so that the request counter
        // outside still sees the request and its route.
        Err(refused) => return Ok(req.error_response(refused).map_into_right_body()),
    };
    req.extensions_mut().insert(id.clone());
    // The request's configuration snapshot is taken here, at its start.
    let snapshot = crate::runtime::Snapshot::of(req.request());
    let agency = req
        .conn_data::<PeerCertificate>()
        .zip(snapshot.as_ref())
        .and_then(|(p, s)| p.agency(&s.registry).map(|a| a.id.to_string()))
        .unwrap_or_default();
    // A fixed method name, and (below) the route pattern: never the caller's path or
    // method text, which could hold anything.
    let method = crate::metrics::method_label(req.method());
    let span = tracing::info_span!(
        "request",
        correlation_id = id.as_str(),
        agency = agency.as_str(),
        method,
        route = tracing::field::Empty
    );
    let mut res = next.call(req).instrument(span.clone()).await?;
    span.record(
        "route",
        res.request()
            .match_pattern()
            .as_deref()
            .unwrap_or("unmatched"),
    );
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(HEADER, value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    Ok(res.map_into_left_body())
}

/// The value of a header that may appear at most once: `400 duplicate-header` when it
/// appears twice (which copy would count is otherwise up to each component).
pub fn single_header<'a>(
    req: &'a impl HttpMessage,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut values = req.headers().get_all(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            ProblemKind::DuplicateHeader,
            format!("The {name} header may be sent once only."),
        ));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_id_formats_and_refuses_the_rest() {
        for ok in [
            "3f1c2a4e-9b7d-4c1e-8f00-123456789abc",
            "01HZX3Y8J9K",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(CorrelationId::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "has space", "new\nline", "é", &"x".repeat(129)] {
            assert!(CorrelationId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
