//! Request bodies: the JSON reader (size limit 413, media type 415) and the middleware
//! that reads whatever a handler left unread before its answer goes out.

use std::cell::RefCell;
use std::rc::Rc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, web};
use futures_util::StreamExt;

use super::problem::ApiError;

/// How much of an unread body is read and discarded so the answer reaches the client.
/// Bodies declared larger are left alone.
const DRAIN_CAP: usize = 1024 * 1024;

fn declared_length(headers: &header::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Middleware for every listener. Over HTTP/2, answering while the client is still
/// sending its body (a 404, 405, 413 or 415, a refused token or certificate, a bad
/// header) makes the server reset the stream, and clients such as curl then report a
/// stream error instead of the answer. So once the handler has answered, the rest of
/// the body (up to [`DRAIN_CAP`]) is read and discarded before the answer is sent.
pub async fn drain_unread_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let drainable = declared_length(req.headers()).is_none_or(|n| n <= DRAIN_CAP);
    // The handler reads through a pass-through; the original stays here for the drain.
    let original = Rc::new(RefCell::new(req.take_payload()));
    let shared = original.clone();
    type Chunks = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>>,
    >;
    let passthrough: Chunks = Box::pin(futures_util::stream::poll_fn(move |cx| {
        shared.borrow_mut().poll_next_unpin(cx)
    }));
    req.set_payload(Payload::from(passthrough));
    let result = next.call(req).await;
    if drainable {
        let mut rest = std::mem::replace(&mut *original.borrow_mut(), Payload::None);
        let mut seen = 0;
        while seen <= DRAIN_CAP {
            match rest.next().await {
                Some(Ok(chunk)) => seen += chunk.len(),
                _ => break,
            }
        }
    }
    result
}

/// The whole body of a JSON request: 415 unless the media type is `application/json`
/// (or `+json`), UTF-8; 413 past `limit`.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    require_json(req)?;
    read_body(req, payload, limit).await
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

/// The whole body, refused with 413 as soon as it exceeds `limit` (declared or streamed).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = declared_length(req.headers());
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
