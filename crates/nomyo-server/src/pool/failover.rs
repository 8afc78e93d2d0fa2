//! A request's way through the pool: the [`Backend`] impl of
//! [`PoolBackend`], which tries one endpoint after another while no answer
//! byte has reached the client (failover, see the `pool` module docs).

use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;

use super::endpoint::{Inner, Outcome, Slot};
use super::PoolBackend;
use crate::backend::{Backend, BackendError, ChatRequest, ChunkStream};

/// Whether an endpoint's error is its own failure (retry elsewhere, count
/// against its breaker) rather than a verdict on the request.
fn is_endpoint_failure(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Unavailable { .. } | BackendError::Timeout | BackendError::Upstream(_)
    )
}

/// One request's walk over the endpoints (each tried at most once) and the
/// failures met on the way.
struct Failover {
    tried: Vec<bool>,
    last: Option<BackendError>,
    /// The first failure of an endpoint that may have received the
    /// request (a time-out, a reset, a 5xx): once one did, the pool never
    /// answers `Unavailable` (which gives the request's replay claim
    /// back), whatever the endpoints tried after it say.
    reached: Option<BackendError>,
}

impl Failover {
    fn new(endpoints: usize) -> Self {
        Self {
            tried: vec![false; endpoints],
            last: None,
            reached: None,
        }
    }

    /// Reserves the next endpoint to try for `model`; when none is left,
    /// the error to answer.
    fn next(&mut self, inner: &Arc<Inner>, model: &str) -> Result<Slot, BackendError> {
        let slot = match inner.acquire(model, &self.tried) {
            Ok(s) => s,
            Err(e) => return Err(self.reached.take().or(self.last.take()).unwrap_or(e)),
        };
        self.tried[slot.idx] = true;
        Ok(slot)
    }

    /// An attempt's error: an endpoint failure is counted on `slot`, logged
    /// as `what` and kept (`Ok`: try another endpoint); any other error is
    /// the request's answer, returned as it is.
    fn failed(
        &mut self,
        slot: &mut Slot,
        request_id: &str,
        e: BackendError,
        what: &'static str,
    ) -> Result<(), BackendError> {
        if !is_endpoint_failure(&e) {
            slot.outcome = Outcome::Rejected;
            return Err(e);
        }
        slot.outcome = Outcome::Failed;
        let (inner, idx) = (&slot.inner, slot.idx);
        tracing::debug!(backend = %inner.name, endpoint = %inner.endpoints[idx].label, request_id = %request_id, error = ?e, "{what}");
        self.remember(e);
        Ok(())
    }

    /// Keeps an endpoint's failure: the first one that may have reached the
    /// endpoint (anything but `Unavailable`) in `reached`, the latest in `last`.
    fn remember(&mut self, e: BackendError) {
        if self.reached.is_none() && !matches!(e, BackendError::Unavailable { .. }) {
            self.reached = Some(e);
        } else {
            self.last = Some(e);
        }
    }
}

fn copy_request(r: &ChatRequest) -> ChatRequest {
    ChatRequest {
        body: r.body.clone(),
        tier: r.tier,
        request_id: r.request_id.clone(),
    }
}

/// A stream past its first chunk: from here on the answer is the client's,
/// never retried. The slot is held until the stream ends and records how.
fn committed(first: Value, rest: ChunkStream, slot: Slot) -> ChunkStream {
    let state = (Some(first), rest, slot);
    Box::pin(futures::stream::unfold(
        state,
        |(first, mut rest, mut slot)| async move {
            if let Some(c) = first {
                return Some((Ok(c), (None, rest, slot)));
            }
            match rest.next().await {
                Some(Ok(c)) => Some((Ok(c), (None, rest, slot))),
                Some(Err(e)) => {
                    slot.outcome = if is_endpoint_failure(&e) {
                        Outcome::Cut
                    } else {
                        Outcome::Rejected
                    };
                    // Ends the stream after this item.
                    let done: ChunkStream = Box::pin(futures::stream::empty());
                    Some((Err(e), (None, done, slot)))
                }
                None => {
                    if slot.outcome == Outcome::Cancelled {
                        slot.set(Outcome::Ok);
                    }
                    None
                }
            }
        },
    ))
}

#[async_trait::async_trait]
impl Backend for PoolBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    fn is_ready(&self) -> bool {
        self.inner.ready_count() > 0
    }

    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
        let mut walk = Failover::new(self.inner.endpoints.len());
        loop {
            let mut slot = walk.next(&self.inner, request.model())?;
            let ep = &self.inner.endpoints[slot.idx];
            match ep.backend.chat(copy_request(&request)).await {
                Ok(v) => {
                    slot.outcome = Outcome::Ok;
                    return Ok(v);
                }
                Err(e) => walk.failed(
                    &mut slot,
                    &request.request_id,
                    e,
                    "endpoint failed; trying another",
                )?,
            }
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        let mut walk = Failover::new(self.inner.endpoints.len());
        loop {
            let mut slot = walk.next(&self.inner, request.model())?;
            let ep = &self.inner.endpoints[slot.idx];
            let first = match ep.backend.chat_stream(copy_request(&request)).await {
                Ok(mut stream) => match stream.next().await {
                    Some(Ok(chunk)) => Ok(Some((chunk, stream))),
                    None => Ok(None),
                    Some(Err(e)) => Err(e),
                },
                Err(e) => Err(e),
            };
            match first {
                Ok(None) => {
                    slot.outcome = Outcome::Ok;
                    return Ok(Box::pin(futures::stream::empty()));
                }
                Ok(Some((chunk, rest))) => return Ok(committed(chunk, rest, slot)),
                Err(e) => walk.failed(
                    &mut slot,
                    &request.request_id,
                    e,
                    "endpoint failed before its first chunk; trying another",
                )?,
            }
        }
    }
}
