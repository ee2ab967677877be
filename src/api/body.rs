//! Reading JSON request bodies: media type check (415) and size limit (413).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, web};
use futures_util::StreamExt;

use super::problem::ApiError;

/// Refuses anything but `application/json` (or `+json`), UTF-8.
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
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

/// The whole body, refused with 413 as soon as it exceeds `limit` (declared or streamed).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
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
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
