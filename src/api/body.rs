//! Reading JSON request bodies: size limit (413) and media type check (415).
//!
//! Bodies are read (or, past the limit, drained up to [`DRAIN_CAP`]) before any early
//! answer: over HTTP/2, answering while the client is still sending makes the server
//! reset the stream, and some clients (curl) then report a stream error instead of the
//! problem document.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, web};
use futures_util::StreamExt;

use super::problem::ApiError;

/// How much of an unwanted body is read and discarded so the answer reaches the client.
/// Larger declared bodies are refused at once.
pub const DRAIN_CAP: usize = 1024 * 1024;

/// Reads and discards the rest of a body, up to [`DRAIN_CAP`] bytes in all.
pub async fn drain(mut payload: web::Payload, already: usize) {
    let mut seen = already;
    while seen <= DRAIN_CAP {
        match payload.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => return,
        }
    }
}

/// The whole body of a JSON request: 413 past `limit`, then 415 unless the media type
/// is `application/json` (or `+json`), UTF-8.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let body = read_body(req, payload, limit).await?;
    require_json(req)?;
    Ok(body)
}

/// Refuses anything but `application/json` (or `+json`), UTF-8.
fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let unsupported = || {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the body as Content-Type: application/json (UTF-8).",
        )
    };
    let mime = req
        .mime_type()
        .map_err(|_| unsupported())?
        .ok_or_else(unsupported)?;
    let is_json = mime.type_() == "application"
        && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"));
    let charset_ok = mime
        .get_param("charset")
        .is_none_or(|c| c.as_str().eq_ignore_ascii_case("utf-8"));
    if is_json && charset_ok {
        Ok(())
    } else {
        Err(unsupported())
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
        format!("A request body may be at most {limit} bytes."),
    )
}

/// The whole body, refused with 413 when it exceeds `limit` (declared or streamed); the
/// excess is drained first (up to [`DRAIN_CAP`]) so the answer is delivered.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        if n <= DRAIN_CAP {
            drain(payload, 0).await;
        }
        return Err(too_large(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "unreadable-body",
                format!("The request body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            drain(payload, body.len() + chunk.len()).await;
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
