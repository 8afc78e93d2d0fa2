//! Steps 3 to 5: what a request holds while it is served, each given back
//! when dropped: its body's share of the server's memory budget for bodies
//! ([`read_body`]), its replay claim ([`ReplayGuard`]) and a processing
//! slot ([`acquire_slot`]).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;

use crate::backend::BackendError;
use crate::error::ApiError;
use crate::limits::{Claim, ReplayKey};
use crate::policy::RateKey;
use crate::state::AppState;

/// Body bytes held in memory for this request: given back to the server's
/// budget (`max_buffered_body_bytes`) when dropped.
pub(crate) struct BodyBudget(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// Step 3: reads the body under its deadline and size limit, counting its
/// bytes against the server's budget for bodies being read or waiting to be
/// opened (bodies are read before a processing slot is taken, so this is
/// what bounds their memory): a request that would exceed it gets 503.
pub(crate) async fn read_body(
    st: &AppState,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<(Bytes, BodyBudget), ApiError> {
    let limit = st.limits().max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        if len == 0 {
            return Err(ApiError::EmptyBody);
        }
    }
    let budget = &st.inner.body_budget;
    let read = async {
        let mut buf = bytes::BytesMut::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut held_kib = 0u32;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::UnreadableBody)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we use
            };
            let total = buf.len() + data.len();
            if total > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            let need = u32::try_from(total.div_ceil(1024)).unwrap_or(u32::MAX);
            if need > held_kib {
                let more = Arc::clone(budget)
                    .try_acquire_many_owned(need - held_kib)
                    .map_err(|_| {
                        st.inner.metrics.refused("body_budget");
                        tracing::debug!(
                            body_bytes = total,
                            "request bodies in memory at their budget; refusing"
                        );
                        ApiError::Saturated
                    })?;
                match held.as_mut() {
                    Some(h) => h.merge(more),
                    None => held = Some(more),
                }
                held_kib = need;
            }
            buf.extend_from_slice(&data);
        }
        Ok((buf.freeze(), BodyBudget(held)))
    };
    let (bytes, held) = tokio::time::timeout(st.limits().body_timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout)??;
    if bytes.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    Ok((bytes, held))
}

/// Holds the replay entries a request claimed. Dropped before
/// [`ReplayGuard::dispatched`] (the request refused before the backend was
/// given it, or cancelled then), it gives them back so that the client's
/// retry of the same bytes is served; once dispatched they are kept.
pub(crate) struct ReplayGuard<'a> {
    st: &'a AppState,
    keys: [ReplayKey; 2],
    owner: RateKey,
    keep: bool,
}

impl<'a> ReplayGuard<'a> {
    /// Step 4: claims both keys of a request in the replay window for
    /// `owner`: a request is valid once. v1 claims its payload id and
    /// package, v2 its `enc` and body.
    pub(crate) async fn claim(
        st: &'a AppState,
        keys: [ReplayKey; 2],
        owner: RateKey,
    ) -> Result<Self, ApiError> {
        match st.inner.replay.claim(&keys, owner).await? {
            Claim::Fresh => Ok(ReplayGuard {
                st,
                keys,
                owner,
                keep: false,
            }),
            Claim::Replayed => {
                st.inner.metrics.refused("replay");
                Err(ApiError::Replayed)
            }
            Claim::OverShare => {
                st.inner.metrics.refused("replay_share");
                tracing::debug!(?owner, "caller holds its share of the replay window");
                Err(ApiError::ReplayShareExceeded)
            }
            Claim::Full => {
                tracing::warn!("replay window full; refusing new requests until entries expire");
                Err(ApiError::Saturated)
            }
        }
    }

    /// The backend is about to be given the request: from now on the
    /// entries are kept, whatever happens (time-out, cancellation, 5xx).
    pub(crate) fn dispatched(&mut self) {
        self.keep = true;
    }

    /// The backend did not take the request after all (`Unavailable`: busy,
    /// not ready, unreachable, or an upstream that answered 429/503): the
    /// entries are given back.
    pub(crate) fn not_taken(&mut self, e: &BackendError) {
        if matches!(e, BackendError::Unavailable { .. }) {
            self.keep = false;
        }
    }
}

impl Drop for ReplayGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            tracing::debug!("replay entries given back (refused before dispatch)");
            self.st.inner.replay.release(&self.keys, self.owner);
        }
    }
}

/// A processing slot, counted in `nomyo_requests_in_flight` for as long as
/// it is held (a streamed answer holds it until its stream ends).
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// Step 5: a processing slot, or 503 when the bounded queue is full or the
/// wait expires.
pub(crate) async fn acquire_slot(st: &AppState, span: &tracing::Span) -> Result<Slot, ApiError> {
    let inner = &st.inner;
    let permit = inner.gate.acquire().await.inspect_err(|_| {
        inner.metrics.refused("saturated");
        tracing::debug!(parent: span, "saturated");
    })?;
    let in_flight = inner.metrics.in_flight.clone();
    in_flight.inc();
    Ok(Slot {
        _permit: permit,
        in_flight,
    })
}
