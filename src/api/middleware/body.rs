//! Request bodies: the JSON reader (size limit 413, media type 415, time limit 408) and
//! the middleware that bounds how long a body may take and reads whatever a handler
//! left unread (briefly) before its answer goes out.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, web};
use futures_util::{Stream, StreamExt};

use crate::api::problem::{ApiError, ProblemKind};
use crate::config::BodyTimeouts;

/// How much of an unread body, beyond the body size limit, is read and discarded so the
/// answer reaches the client: a body just over the limit still gets its 413. Bodies
/// declared larger are left alone (the connection is closed after the answer, and the
/// client may see the close rather than the answer).
const DRAIN_CAP: usize = 1024 * 1024;
/// How long the middleware waits for an unread body before answering anyway.
const DRAIN_TIME: Duration = Duration::from_secs(1);

fn declared_length(headers: &header::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// A request body that ends in a `TimedOut` error once it has taken longer than its
/// [`BodyTimeouts`]: a client trickling its body cannot hold a worker's buffer for ever.
struct TimedBody {
    inner: Rc<RefCell<Payload>>,
    idle_for: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    finished: bool,
}

impl TimedBody {
    fn new(inner: Rc<RefCell<Payload>>, timeouts: BodyTimeouts) -> Self {
        Self {
            inner,
            idle_for: timeouts.idle,
            idle: Box::pin(tokio::time::sleep(timeouts.idle)),
            deadline: Box::pin(tokio::time::sleep(timeouts.total)),
            finished: false,
        }
    }
}

impl Stream for TimedBody {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        match this.inner.borrow_mut().poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next = tokio::time::Instant::now() + this.idle_for;
                this.idle.as_mut().reset(next);
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => {
                this.finished = true;
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        if this.deadline.as_mut().poll(cx).is_ready() || this.idle.as_mut().poll(cx).is_ready() {
            this.finished = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body took too long",
            )))));
        }
        Poll::Pending
    }
}

fn timed_out(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// Middleware for every listener. The handler reads the body through a [`TimedBody`].
/// Over HTTP/2, answering while the client is still sending its body (a 404, 405, 413
/// or 415, a refused token or certificate, a bad header) makes the server reset the
/// stream, and clients such as curl then report a stream error instead of the answer.
/// So once the handler has answered, the rest of the body (up to the body size limit plus
/// [`DRAIN_CAP`] bytes, and [`DRAIN_TIME`]) is read and discarded before the answer is
/// sent; a client that is slower than that gets its answer anyway.
pub async fn drain_unread_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let (timeouts, limit) = req
        .app_data::<web::Data<crate::api::AppState>>()
        .map(|s| (s.body_timeouts, s.max_body_bytes))
        .unwrap_or_default();
    let cap = limit.saturating_add(DRAIN_CAP);
    let drainable = declared_length(req.headers()).is_none_or(|n| n <= cap);
    // The handler reads through a pass-through; the original stays here for the drain.
    let original = Rc::new(RefCell::new(req.take_payload()));
    let timed: Pin<Box<dyn Stream<Item = Result<web::Bytes, PayloadError>>>> =
        Box::pin(TimedBody::new(original.clone(), timeouts));
    req.set_payload(Payload::from(timed));
    let result = next.call(req).await;
    if drainable {
        let mut rest = std::mem::replace(&mut *original.borrow_mut(), Payload::None);
        let drain = async {
            let mut seen = 0;
            while seen <= cap {
                match rest.next().await {
                    Some(Ok(chunk)) => seen += chunk.len(),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    result
}

/// The whole body of a JSON request: 415 unless the media type is `application/json`
/// (or `+json`), UTF-8; 413 past `limit`; 408 when it takes too long.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    require_json(req)?;
    read_body(req, payload, limit).await
}

/// Refuses anything but `application/json` (or `+json`), UTF-8, with no content coding
/// (`Content-Encoding` other than `identity`: the gateway decodes none, RFC 9110 15.5.16).
pub(crate) fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    if let Some(coding) = req.headers().get(actix_web::http::header::CONTENT_ENCODING)
        && !coding
            .to_str()
            .is_ok_and(|c| c.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::of(
            ProblemKind::UnsupportedMediaType,
            "Send the body without a Content-Encoding: the gateway accepts no compressed bodies.",
        ));
    }
    let unsupported = || {
        ApiError::of(
            ProblemKind::UnsupportedMediaType,
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
    ApiError::of(
        ProblemKind::PayloadTooLarge,
        format!("A request body may be at most {limit} bytes."),
    )
}

/// The whole body, refused with 413 as soon as it exceeds `limit` (declared or streamed).
pub(crate) async fn read_body(
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
            if timed_out(&e) {
                ApiError::of(
                    ProblemKind::BodyTimeout,
                    "The request body did not arrive in time; send it without pauses.",
                )
            } else {
                ApiError::bad_request(
                    ProblemKind::UnreadableBody,
                    format!("The request body could not be read: {e}"),
                )
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
