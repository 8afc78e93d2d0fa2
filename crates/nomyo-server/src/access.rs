//! The access log: one line per request at info level (target
//! [`ACCESS_TARGET`]) with the request id, route template, protocol, tier,
//! status, request and response bytes and the duration (0.1 ms), written
//! when the response body is finished (streams included) or dropped.
//! Never a body, a path beyond its route template, or a header other than
//! the tier.
//!
//! The handler runs in an info span `request{id=…}` (same target), so the
//! lines it logs name the request too.
//!
//! The request id: the caller's `X-Request-Id` when it is 1 to
//! [`MAX_REQUEST_ID_LEN`] characters of `[A-Za-z0-9._-]`, else a fresh one;
//! it replaces the request's header (handlers see the one logged), is put in
//! the request's extensions as [`RequestId`] and is returned in the
//! response's `X-Request-Id`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use nomyo_core::{v1, v2};

/// The `tracing` target of the access lines (`RUST_LOG=nomyo::access=off`
/// silences them).
pub const ACCESS_TARGET: &str = "nomyo::access";

/// The longest caller-chosen request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id header (lower case, as HTTP/2 sends it).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(nomyo_core::HEADER_REQUEST_ID);

/// The id of the request being handled (in its extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether a caller's request id is kept as it is.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A fresh request id: 128 random bits in hex.
pub fn fresh_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The protocol a route belongs to.
fn protocol(route: &str) -> &'static str {
    match route {
        v1::PUBLIC_KEY_PATH | v1::SECURE_COMPLETION_PATH => "v1",
        v2::HPKE_KEYS_PATH | v2::CHAT_COMPLETIONS_PATH => "v2",
        _ => "plain",
    }
}

/// The tier the request asked for, when it names one ("-" otherwise: a bad
/// value is refused by the route, and never copied into the log).
fn tier(req: &Request) -> &'static str {
    match req
        .headers()
        .get(nomyo_core::tier::HEADER_SECURITY_TIER)
        .map(HeaderValue::as_bytes)
    {
        None => "-",
        Some(v) if v.eq_ignore_ascii_case(b"standard") => "standard",
        Some(v) if v.eq_ignore_ascii_case(b"high") => "high",
        Some(v) if v.eq_ignore_ascii_case(b"maximum") => "maximum",
        Some(_) => "invalid",
    }
}

/// What the access line says, filled in as the request goes.
struct Line {
    id: String,
    method: axum::http::Method,
    route: String,
    protocol: &'static str,
    tier: &'static str,
    status: u16,
    started: Instant,
    request_bytes: Arc<AtomicU64>,
}

impl Line {
    fn emit(&self, response_bytes: u64, complete: bool) {
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %self.id,
            method = %self.method,
            route = %self.route,
            protocol = self.protocol,
            tier = self.tier,
            status = self.status,
            request_bytes = self.request_bytes.load(Ordering::Relaxed),
            response_bytes,
            duration_ms = (ms * 10.0).round() / 10.0,
            complete,
            "request"
        );
    }
}

/// A request body that counts the bytes read from it.
struct CountIn {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl http_body::Body for CountIn {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its bytes and writes the access line when it
/// ends or is dropped (a client that went away).
struct CountOut {
    inner: Body,
    bytes: u64,
    line: Option<Line>,
}

impl CountOut {
    fn finish(&mut self, complete: bool) {
        if let Some(line) = self.line.take() {
            line.emit(self.bytes, complete);
        }
    }
}

impl http_body::Body for CountOut {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountOut {
    fn drop(&mut self) {
        // An empty body may never be polled: it is complete all the same.
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.finish(complete);
    }
}

/// The middleware: request id in, access line out.
pub(crate) async fn access_log(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match req.headers().get(&REQUEST_ID_HEADER) {
        Some(v) if is_valid_request_id(v.as_bytes()) => {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
        _ => fresh_request_id(),
    };
    // Valid by construction: [A-Za-z0-9._-] only.
    let header = HeaderValue::from_str(&id).ok();
    if let Some(h) = &header {
        req.headers_mut().insert(REQUEST_ID_HEADER, h.clone());
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_bytes = Arc::new(AtomicU64::new(0));
    let line = Line {
        id,
        method: req.method().clone(),
        protocol: protocol(&route),
        route,
        tier: tier(&req),
        status: 0,
        started,
        request_bytes: request_bytes.clone(),
    };
    let req = req.map(|b| {
        Body::new(CountIn {
            inner: b,
            count: request_bytes,
        })
    });

    // Every line logged while the handler runs names the request
    // (`request{id=…}:` in text, `span` in json).
    let span = tracing::info_span!(target: ACCESS_TARGET, "request", id = %line.id);
    let mut resp = tracing::Instrument::instrument(next.run(req), span).await;
    if let Some(h) = header {
        resp.headers_mut().insert(REQUEST_ID_HEADER, h);
    }
    let status = resp.status().as_u16();
    resp.map(|b| {
        Body::new(CountOut {
            inner: b,
            bytes: 0,
            line: Some(Line { status, ..line }),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_kept_and_refused() {
        assert!(is_valid_request_id(b"proxy-0123abcdef"));
        assert!(is_valid_request_id(b"a.b_c-D9"));
        assert!(is_valid_request_id(&[b'x'; MAX_REQUEST_ID_LEN]));
        assert!(!is_valid_request_id(&[b'x'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"semi;colon"));
        assert!(!is_valid_request_id("é".as_bytes()));
        let fresh = fresh_request_id();
        assert_eq!(fresh.len(), 32);
        assert!(is_valid_request_id(fresh.as_bytes()));
        assert_ne!(fresh, fresh_request_id());
    }

    #[test]
    fn routes_name_their_protocol() {
        assert_eq!(protocol("/v1/chat/secure_completion"), "v1");
        assert_eq!(protocol("/pki/public_key"), "v1");
        assert_eq!(protocol("/v1/chat/completions"), "v2");
        assert_eq!(protocol("/.well-known/hpke-keys"), "v2");
        assert_eq!(protocol("/health"), "plain");
        assert_eq!(protocol("unmatched"), "plain");
    }
}
