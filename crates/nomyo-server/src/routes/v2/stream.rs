//! A streamed v2 answer: each backend chunk sealed as its own SSE event by
//! a task that holds the processing slot until the stream ends, cut on a
//! backend error, an idle backend, a client that stops reading, or a client
//! gone.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use nomyo_core::v2::response::ResponseSealer;
use nomyo_core::SecretBuf;
use serde_json::Value;

use crate::backend::{BackendError, ChunkStream};
use crate::routes::pipeline::{self, Slot};
use crate::state::AppState;

pub(super) struct StreamState {
    pub(super) chunks: ChunkStream,
    pub(super) sealer: ResponseSealer,
    pub(super) metadata: Option<Value>,
    pub(super) st: AppState,
    pub(super) backend: String,
    /// The processing slot is held until the stream ends.
    pub(super) _slot: Slot,
    pub(super) span: tracing::Span,
}

/// Sealed events buffered between the task that makes them and the
/// response body: a client that stops reading stops the task after this
/// many events and the write time-out.
const STREAM_BUFFER: usize = 4;

/// The response body of a streamed answer: a task seals the backend's
/// chunks into events and hands them over through a small buffer. The task
/// (with the processing slot and the backend's stream) ends with the
/// stream: after `[DONE]`, on a backend error, when the backend produces
/// nothing for the idle time-out, when the client reads nothing for the
/// write time-out, or when the client is gone. Every end but `[DONE]`
/// leaves the client a cut stream.
pub(super) fn stream_body(s: StreamState) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_BUFFER);
    let limits = s.st.limits();
    let (idle, write) = (limits.stream_idle_timeout, limits.stream_write_timeout);
    tokio::spawn(pump(s, tx, idle, write));
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    }))
}

async fn pump(
    mut s: StreamState,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    idle: Duration,
    write: Duration,
) {
    let t = Instant::now();
    let mut events = 0usize;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, s.chunks.next()) => match next {
                Ok(next) => next,
                Err(_) => {
                    s.st.metrics().refused("stream_idle");
                    tracing::warn!(parent: &s.span, backend = %s.backend, idle_secs = idle.as_secs_f64(), "backend produced nothing within the stream idle time-out; cutting the stream");
                    return;
                }
            },
            _ = tx.closed() => {
                tracing::debug!(parent: &s.span, events, "client gone; stream stopped");
                return;
            }
        };
        let Some((event, done)) = s.event(next) else {
            return;
        };
        match tokio::time::timeout(write, tx.send(event)).await {
            Ok(Ok(())) => events += 1,
            Ok(Err(_)) => {
                tracing::debug!(parent: &s.span, events, "client gone; stream stopped");
                return;
            }
            Err(_) => {
                s.st.metrics().refused("stream_stalled");
                tracing::debug!(parent: &s.span, events, write_secs = write.as_secs_f64(), "client read nothing within the stream write time-out; cutting the stream");
                return;
            }
        }
        if done {
            tracing::debug!(parent: &s.span, events, stream_ms = t.elapsed().as_secs_f64() * 1e3, "stream complete");
            return;
        }
    }
}

impl StreamState {
    /// The sealed SSE event for the backend's next item, and whether it is
    /// the last (`[DONE]`); `None` cuts the stream (a backend error).
    fn event(&mut self, next: Option<Result<Value, BackendError>>) -> Option<(Bytes, bool)> {
        let mut event = SecretBuf::new();
        let done = match next {
            Some(Ok(mut chunk)) => {
                if let (Some(m), Some(obj)) = (self.metadata.take(), chunk.as_object_mut()) {
                    obj.insert("_metadata".to_owned(), m);
                }
                event.extend_from_slice(b"data: ");
                if serde_json::to_writer(&mut event, &chunk).is_err() {
                    tracing::warn!(parent: &self.span, "stream chunk not serialisable; cutting the stream");
                    return None;
                }
                event.extend_from_slice(b"\n\n");
                false
            }
            Some(Err(e)) => {
                let kind = pipeline::backend_error_kind(&e);
                pipeline::count_backend_error(&self.st, &self.backend, kind);
                tracing::warn!(parent: &self.span, backend = %self.backend, kind, detail = ?e, "backend error mid-stream; cutting the stream");
                return None;
            }
            None => {
                event.extend_from_slice(b"data: [DONE]\n\n");
                true
            }
        };
        match self.sealer.seal_chunk(event.expose_secret()) {
            Ok(sealed) => Some((Bytes::from(sealed), done)),
            Err(_) => {
                tracing::error!(parent: &self.span, "sealing a stream event failed; cutting the stream");
                None
            }
        }
    }
}
