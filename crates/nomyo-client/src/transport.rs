//! The transport, the client's lowest layer: the connection pool, the
//! headers every request carries, one retry loop for every request the
//! client sends, and the mapping of HTTP and network failures to
//! [`Error`]s.
//!
//! A caller either hands a whole request to [`Retrier::send`] (the key
//! fetches, v1, the model list, attestation) or, like v2 (which seals each
//! attempt afresh), makes one attempt at a time, says what it came to as an
//! [`Outcome`], and lets [`Attempts::after`] decide, with the retry policy of [`crate::retry`], whether to return or
//! to try again (after the backoff): 429/5xx and network errors
//! are retried `max_retries` times with backoff (a `Retry-After` longer than
//! the client waits for ends it at once), a time-out after the connection
//! and a failed TLS handshake never are.

use std::ops::ControlFlow;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::error::{ApiError, Error, Result};
use crate::retry::{self, Backoff};

/// Largest error body read (it is only shown, shortened, to the user).
pub(crate) const MAX_ERROR_BYTES: usize = 64 * 1024;

/// What one attempt came to.
pub(crate) enum Outcome<T> {
    /// Success: the loop returns it.
    Done(T),
    /// A failure no retry can help: the loop returns it.
    Fail(Error),
    /// A non-success status: retried when the policy says so, else returned
    /// as its typed error.
    Status(ApiError, Option<Duration>),
    /// The request or its answer failed in transit.
    Network(reqwest::Error),
    /// Try again at once, without counting an attempt (the protocol layer
    /// refreshed the server's keys after an answer that asked for it).
    Again,
}

impl<T> Outcome<T> {
    /// A non-success answer, to be retried or not by the policy.
    pub(crate) async fn refused(resp: reqwest::Response, attempt: u32) -> Self {
        let (api, retry_after) = refusal(resp, attempt).await;
        Outcome::Status(api, retry_after)
    }
}

/// A non-success answer: its status and (bounded) body, and `Retry-After`.
pub(crate) async fn refusal(resp: reqwest::Response, attempt: u32) -> (ApiError, Option<Duration>) {
    let status = resp.status().as_u16();
    let retry_after = retry::retry_after(resp.headers());
    let body = read_limited(resp, MAX_ERROR_BYTES)
        .await
        .map(|(b, _)| b)
        .unwrap_or_default();
    (ApiError::new(status, &body, attempt), retry_after)
}

/// The HTTP side of one client, shared by every layer above it.
pub(crate) struct Transport {
    /// The server's origin (`scheme://host[:port]`), as errors name it.
    pub(crate) origin: String,
    /// One connection pool (HTTP/2 where offered).
    pub(crate) http: reqwest::Client,
    /// Content-Type, Authorization (marked sensitive), X-Security-Tier.
    pub(crate) headers: HeaderMap,
    /// The whole-request time-out (as [`Error::Timeout`] reports it).
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
}

impl Transport {
    /// The one retry loop, with this client's settings.
    pub(crate) fn retrier(&self) -> Retrier<'_> {
        Retrier {
            origin: &self.origin,
            timeout: self.timeout,
            max_retries: self.max_retries,
            backoff: &self.backoff,
        }
    }
}

/// The retry settings of one client, borrowed for one request.
#[derive(Clone, Copy)]
pub(crate) struct Retrier<'a> {
    pub(crate) origin: &'a str,
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) backoff: &'a Backoff,
}

impl<'a> Retrier<'a> {
    /// The attempts of one request, from the first.
    pub(crate) fn attempts(self) -> Attempts<'a> {
        Attempts {
            retrier: self,
            n: 1,
        }
    }

    /// Sends the request `make` builds, retrying 429/5xx and network errors
    /// with backoff; returns the body of a 200 answer.
    pub(crate) async fn send(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Bytes> {
        let mut attempts = (*self).attempts();
        loop {
            let attempt = attempts.number();
            let outcome = match make().send().await {
                Err(e) => Outcome::Network(e),
                Ok(resp) if resp.status().as_u16() != 200 => {
                    tracing::debug!(status = resp.status().as_u16(), attempt, "answer");
                    Outcome::refused(resp, attempt).await
                }
                Ok(resp) => {
                    tracing::debug!(status = 200, attempt, "answer");
                    match read_limited(resp, limit).await {
                        Ok((body, false)) => Outcome::Done(body),
                        Ok((_, true)) => Outcome::Fail(Error::InvalidResponse(format!(
                            "the answer is larger than {limit} bytes"
                        ))),
                        Err(e) => Outcome::Network(e),
                    }
                }
            };
            if let ControlFlow::Break(result) = attempts.after(outcome).await {
                return result;
            }
        }
    }

    /// The typed error of a transport failure after `attempts` attempts.
    pub(crate) fn network_error(&self, e: reqwest::Error, attempts: u32) -> Error {
        if e.is_timeout() && !e.is_connect() {
            return Error::Timeout {
                origin: self.origin.to_owned(),
                timeout: self.timeout,
            };
        }
        if is_tls_failure(&e) {
            return Error::Tls {
                origin: self.origin.to_owned(),
                message: describe_network_error(&e),
                source: Some(e),
            };
        }
        Error::Connection {
            origin: self.origin.to_owned(),
            message: describe_network_error(&e),
            attempts,
            source: Some(e),
        }
    }
}

/// The typed error of a non-success status.
pub(crate) fn status_error(api: ApiError, retry_after: Option<Duration>) -> Error {
    match api.status {
        400 => Error::InvalidRequest(api),
        401 => Error::Authentication(api),
        403 => Error::Forbidden(api),
        404 => Error::NotFound(api),
        429 => Error::RateLimit {
            error: api,
            retry_after,
        },
        500 | 502 | 504 => Error::Server(api),
        503 => Error::ServiceUnavailable(api),
        _ => Error::Api(api),
    }
}

/// Reads at most `limit` bytes of a body; the flag says whether it was longer.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<(Bytes, bool), reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok((Bytes::new(), true));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > limit {
            let room = limit - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf.freeze(), true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), false))
}

/// A failed TLS handshake (untrusted certificate, wrong name, no TLS):
/// rustls reports it through tokio-rustls as an `InvalidData` I/O error
/// while connecting. Retrying cannot help.
pub(crate) fn is_tls_failure(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = cur {
        cur = match s.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => return true,
            // An io::Error's source() skips the error it wraps; look inside.
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    false
}

/// The causes of a transport error, without the top-level "error sending
/// request for url (...)" wrapper.
pub(crate) fn describe_network_error(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    if parts.is_empty() {
        parts.push(if e.is_connect() {
            "connection failed".to_owned()
        } else {
            e.to_string()
        });
    }
    crate::error::sanitize(&parts.join(": "))
}

/// The attempts of one request. The caller's loop:
///
/// ```text
/// let mut attempts = transport.retrier().attempts();
/// loop {
///     let outcome = /* one attempt, number attempts.number() */;
///     if let ControlFlow::Break(result) = attempts.after(outcome).await {
///         return result;
///     }
/// }
/// ```
pub(crate) struct Attempts<'a> {
    retrier: Retrier<'a>,
    n: u32,
}

impl Attempts<'_> {
    /// The number of the attempt being made, from 1.
    pub(crate) fn number(&self) -> u32 {
        self.n
    }

    /// What to do after an attempt: `Break` with the request's result, or
    /// `Continue` once the backoff has passed (at once after
    /// [`Outcome::Again`], which counts no attempt).
    pub(crate) async fn after<T>(&mut self, outcome: Outcome<T>) -> ControlFlow<Result<T>> {
        let n = self.n;
        let r = &self.retrier;
        let delay = match outcome {
            Outcome::Done(t) => return ControlFlow::Break(Ok(t)),
            Outcome::Fail(e) => return ControlFlow::Break(Err(e)),
            Outcome::Again => return ControlFlow::Continue(()),
            Outcome::Status(api, retry_after) => {
                if !retry::retryable_status(api.status)
                    || n > r.max_retries
                    || retry_after.is_some_and(|ra| ra > r.backoff.max_retry_after)
                {
                    return ControlFlow::Break(Err(status_error(api, retry_after)));
                }
                r.backoff.delay(n, retry_after)
            }
            Outcome::Network(e) => {
                let retryable = (!e.is_timeout() || e.is_connect()) && !is_tls_failure(&e);
                if !retryable || n > r.max_retries {
                    return ControlFlow::Break(Err(r.network_error(e, n)));
                }
                tracing::debug!(attempt = n, error = %describe_network_error(&e), "network error");
                r.backoff.delay(n, None)
            }
        };
        tracing::debug!(attempt = n, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::time::sleep(delay).await;
        self.n += 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
            max_retry_after: Duration::from_secs(5),
        }
    }

    fn retrier(backoff: &Backoff, max_retries: u32) -> Retrier<'_> {
        Retrier {
            origin: "https://example.org",
            timeout: Duration::from_secs(1),
            max_retries,
            backoff,
        }
    }

    fn status(code: u16, retry_after: Option<Duration>) -> Outcome<()> {
        Outcome::Status(ApiError::new(code, b"{}", 1), retry_after)
    }

    #[tokio::test]
    async fn retryable_statuses_are_retried_max_retries_times_then_returned() {
        let b = backoff();
        let mut a = retrier(&b, 2).attempts();
        assert!(a.after(status(503, None)).await.is_continue());
        assert!(a.after(status(429, None)).await.is_continue());
        assert_eq!(a.number(), 3);
        match a.after(status(503, None)).await {
            ControlFlow::Break(Err(Error::ServiceUnavailable(api))) => assert_eq!(api.status, 503),
            other => panic!("{:?}", other.break_value().map(|r| r.err())),
        }
    }

    #[tokio::test]
    async fn other_statuses_and_long_retry_afters_are_returned_at_once() {
        let b = backoff();
        let mut a = retrier(&b, 5).attempts();
        assert!(matches!(
            a.after(status(400, None)).await,
            ControlFlow::Break(Err(Error::InvalidRequest(_)))
        ));
        let mut a = retrier(&b, 5).attempts();
        match a.after(status(429, Some(Duration::from_secs(60)))).await {
            ControlFlow::Break(Err(Error::RateLimit { retry_after, .. })) => {
                assert_eq!(retry_after, Some(Duration::from_secs(60)))
            }
            _ => panic!("a Retry-After beyond max_retry_after must end the request"),
        }
    }

    #[tokio::test]
    async fn again_counts_no_attempt_and_done_and_fail_end_the_loop() {
        let b = backoff();
        let mut a = retrier(&b, 0).attempts();
        assert!(a.after(Outcome::<()>::Again).await.is_continue());
        assert!(a.after(Outcome::<()>::Again).await.is_continue());
        assert_eq!(a.number(), 1);
        assert!(matches!(
            a.after(Outcome::Done(7)).await,
            ControlFlow::Break(Ok(7))
        ));
        let mut a = retrier(&b, 3).attempts();
        assert!(matches!(
            a.after(Outcome::<()>::Fail(Error::InvalidResponse("x".into())))
                .await,
            ControlFlow::Break(Err(Error::InvalidResponse(_)))
        ));
    }
}
