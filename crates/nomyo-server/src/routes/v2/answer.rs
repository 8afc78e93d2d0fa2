//! Step 8 of a v2 request: the backend's answer, whole or streamed, with
//! `_metadata` naming the protocol and the HPKE suite this request used.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use nomyo_core::v2::keys::Kem;
use nomyo_core::SecretBuf;
use serde_json::{json, Map, Value};

use crate::backend::{BackendError, ChatRequest, ChunkStream};
use crate::error::ApiError;
use crate::policy::NamedBackend;
use crate::routes::pipeline::{self, ReplayGuard, Routed};
use crate::state::AppState;

/// The suite of this request, for `_metadata.hpke`.
fn key_info(kem: Kem) -> Value {
    json!({
        "kem": kem.name(),
        "kdf": "hkdf-sha256",
        "aead": "aes-256-gcm",
        "post_quantum": kem.is_post_quantum(),
    })
}

pub(super) enum Reply {
    Json(SecretBuf),
    Stream {
        chunks: ChunkStream,
        metadata: Value,
        backend: String,
    },
}

/// Step 8: backend, `_metadata` (with the suite this request used).
pub(super) async fn answer(
    st: &AppState,
    span: &tracing::Span,
    guard: &mut ReplayGuard<'_>,
    id: &str,
    kem: Kem,
    mut routed: Routed,
) -> Result<Reply, ApiError> {
    let backend: Arc<NamedBackend> = Arc::clone(&routed.route.backend);
    let tier = routed.route.tier;
    let body = std::mem::take(&mut routed.body);
    let stream = body.get("stream") == Some(&Value::Bool(true));
    // docs/PROTOCOL.md §14.2: the quote before the backend is given the request.
    let tpm = pipeline::per_answer_quote(st, span, id, tier).await?;
    let (mut meta, _) = pipeline::metadata(id, tier, routed.memory_locked, &*backend.backend, tpm);
    if let Some(m) = meta.as_object_mut() {
        m.insert("protocol".to_owned(), json!("v2"));
        m.insert("hpke".to_owned(), key_info(kem));
    }
    let request = |body: Map<String, Value>| ChatRequest {
        body,
        tier,
        request_id: id.to_owned(),
    };
    let t_backend = Instant::now();

    guard.dispatched();
    if stream {
        let chunks = match backend.backend.chat_stream(request(body.clone())).await {
            Ok(s) => s,
            Err(BackendError::StreamingUnsupported) => {
                // One complete answer, sent as a single chunk event. The
                // backend is asked for a plain completion, not a stream.
                let mut body = body;
                body.remove("stream");
                body.remove("stream_options");
                let completion = match backend.backend.chat(request(body)).await {
                    Ok(c) => c,
                    Err(e) => return Err(pipeline::backend_failed(st, span, guard, &routed, e)),
                };
                let chunk =
                    nomyo_core::chat::completion_to_chunk(&completion).ok_or_else(|| {
                        pipeline::count_backend_error(st, &backend.name, "failed");
                        ApiError::BackendFailed
                    })?;
                futures::stream::iter([Ok(chunk)]).boxed()
            }
            Err(e) => return Err(pipeline::backend_failed(st, span, guard, &routed, e)),
        };
        tracing::debug!(
            parent: span,
            backend = %backend.name,
            tier = %tier,
            backend_ms = t_backend.elapsed().as_secs_f64() * 1e3,
            "backend stream started"
        );
        return Ok(Reply::Stream {
            chunks,
            metadata: meta,
            backend: backend.name.clone(),
        });
    }

    let out = pipeline::completion(st, span, guard, &routed, request(body), || meta).await?;
    Ok(Reply::Json(out))
}
