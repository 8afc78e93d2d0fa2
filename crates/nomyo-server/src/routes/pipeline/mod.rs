//! The steps every encrypted request takes, whatever its protocol, in the
//! server's one order of checks (the crate's README, "Order of checks"):
//!
//! 1. `admit`: API key (401), the caller's rate limit (429);
//! 2. the protocol's own headers; `refuse_post_quantum`,
//!    `refuse_unattested` and `refuse_seen` (the header-only policy: 403,
//!    503, 409);
//! 3. `read_body`: the body under its size limit (413), deadline (408) and
//!    the server's memory budget for bodies (503);
//! 4. `ReplayGuard::claim`: a request is valid once (409, 429);
//! 5. `acquire_slot`: a processing slot (503);
//! 6. the protocol's own decryption;
//! 7. `route`: the plaintext request checked ([`chat_request`]), its tier
//!    and model (403/404), the post-quantum rule of a tier the model
//!    chose (403) and its attestation rule (503);
//! 8. the backend (`backend_failed` counts and logs its errors) and
//!    `_metadata` (`metadata`), then the protocol's own sealing.
//!
//! `routes::v1` and `routes::v2` keep only their header parsing and their
//! cryptography; every step above is written once, here.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Version};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use nomyo_core::tier::HEADER_SECURITY_TIER;
use nomyo_core::{Fingerprint, SecurityTier};

use crate::error::ApiError;
use crate::limits::ReplayKey;
use crate::policy::{Caller, RateKey};
use crate::state::AppState;

mod answer;
mod request;
mod reserve;

pub(crate) use answer::{
    backend_error_kind, backend_failed, completion, count_backend_error, metadata, per_answer_quote,
};
pub use request::chat_request;
pub(crate) use request::{route, Routed};
pub(crate) use reserve::{acquire_slot, read_body, ReplayGuard, Slot};

/// Runs a protocol's handler under the request timeout (504), logging a
/// refusal's structural detail at debug level (never content).
pub(crate) async fn bounded<F>(st: &AppState, what: &'static str, handler: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    match tokio::time::timeout(st.limits().request_timeout, handler).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            // Details are stable, structural messages: safe to log.
            tracing::debug!(status = e.status().as_u16(), detail = %e.detail(), "{what} refused");
            e.into_response()
        }
        Err(_) => {
            tracing::debug!("{what} timed out");
            ApiError::RequestTimeout.into_response()
        }
    }
}

/// Serves one encrypted request of a protocol (`what`, for the log): the
/// caller's address from the connection, then `handle` under the request
/// timeout ([`bounded`]) with the body for it to take ([`take_body`]); a
/// body it left unread closes an HTTP/1 connection ([`close_if_unread`]).
pub(crate) async fn serve(
    st: &AppState,
    what: &'static str,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    version: Version,
    body: Body,
    handle: impl AsyncFnOnce(Option<IpAddr>, &mut Option<Body>) -> Result<Response, ApiError>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(a))| a.ip());
    let mut body = Some(body);
    let mut resp = bounded(st, what, handle(peer, &mut body)).await;
    close_if_unread(&mut resp, version, body.is_some());
    resp
}

/// Takes the request's body for [`read_body`]; a handler that returns
/// before this leaves it unread (a refusal on the headers alone).
pub(crate) fn take_body(body: &mut Option<Body>) -> Result<Body, ApiError> {
    body.take().ok_or(ApiError::UnreadableBody)
}

/// Ends an HTTP/1 connection whose request body was left unread (a
/// refusal on the headers alone): the server will not read the rest, so
/// the response says `Connection: close` (RFC 9112 §9.6) instead of
/// letting a client reuse a connection the server then closes, whose next
/// request would get no answer at all. HTTP/2 streams are independent and
/// need nothing.
pub(crate) fn close_if_unread(resp: &mut Response, version: Version, unread: bool) {
    if unread && version <= Version::HTTP_11 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Who sent a request, as step 1 found it.
pub(crate) struct Admitted {
    pub(crate) caller: Caller,
    /// The key of the caller's rate limit and replay share.
    pub(crate) principal: RateKey,
}

impl Admitted {
    /// The caller as a log field: the index of its API key, -1 when open.
    pub(crate) fn caller_field(&self) -> i64 {
        match self.caller {
            Caller::Anonymous => -1,
            Caller::Key(i) => i64::from(i),
        }
    }
}

/// Step 1: the API key (401), then the caller's rate limit (429).
pub(crate) fn admit(
    st: &AppState,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Admitted, ApiError> {
    let inner = &st.inner;
    let caller = inner
        .api_keys
        .authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        .inspect_err(|_| inner.metrics.refused("unauthorized"))?;
    let principal = RateKey::of(caller, inner.trusted_proxies.client_addr(peer, headers));
    if let Some(rate) = &inner.rate {
        rate.check(principal)
            .inspect_err(|_| inner.metrics.refused("rate_limited"))?;
    }
    Ok(Admitted { caller, principal })
}

/// `X-Security-Tier`, if any (400 when it names no tier).
pub(crate) fn requested_tier(headers: &HeaderMap) -> Result<Option<SecurityTier>, ApiError> {
    match headers.get(HEADER_SECURITY_TIER) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| ApiError::InvalidTier)?;
            s.parse().map(Some).map_err(|_| ApiError::InvalidTier)
        }
    }
}

/// The post-quantum rule (403): a tier that requires post-quantum
/// encryption (`require_post_quantum`) refuses a request whose suite is not.
/// Asked with the header's tier at step 2, and with the tier the model chose
/// at step 7.
pub(crate) fn refuse_post_quantum(
    st: &AppState,
    tier: Option<SecurityTier>,
    post_quantum: bool,
) -> Result<(), ApiError> {
    if !post_quantum && tier.is_some_and(|t| st.requires_post_quantum(t)) {
        st.inner.metrics.refused("post_quantum");
        return Err(ApiError::PostQuantumRequired);
    }
    Ok(())
}

/// The attestation rule (503, docs/PROTOCOL.md §14.6): a tier that
/// requires TPM attestation (`require_attestation`) refuses every request on
/// a server without a TPM. Asked after the post-quantum rule, at step 2 with
/// the header's tier and at step 7 with the tier the model chose.
pub(crate) fn refuse_unattested(st: &AppState, tier: Option<SecurityTier>) -> Result<(), ApiError> {
    if tier.is_some_and(|t| st.requires_attestation(t)) && !st.attestation().is_available() {
        st.inner.metrics.refused("attestation");
        return Err(ApiError::AttestationRequired);
    }
    Ok(())
}

/// A replay key: SHA-256 over a protocol's domain label and the request's
/// parts that make it unique.
pub(crate) fn replay_key(domain: &[u8], parts: &[&[u8]]) -> ReplayKey {
    let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    all.push(domain);
    all.extend_from_slice(parts);
    Fingerprint::of_parts(&all).0
}

/// Step 2's cheap replay check (409): a key this server has already seen,
/// before the body is read.
pub(crate) fn refuse_seen(st: &AppState, key: ReplayKey) -> Result<(), ApiError> {
    if st.inner.replay.seen_locally(&[key]) {
        st.inner.metrics.refused("replay");
        return Err(ApiError::Replayed);
    }
    Ok(())
}
