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
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use nomyo_core::chat::{CudaDevice, MemoryProtectionInfo, Metadata, TpmAttestation};
use nomyo_core::tier::HEADER_SECURITY_TIER;
use nomyo_core::{Fingerprint, SecretBuf, SecurityTier};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use crate::backend::{BackendError, ChatRequest};
use crate::error::ApiError;
use crate::limits::{Claim, ReplayKey};
use crate::metrics::BackendLabels;
use crate::policy::{Caller, RateKey, Route};
use crate::state::AppState;

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

/// Parses and checks the decrypted request (docs/PROTOCOL.md §1.6;
/// the same JSON in v2): a JSON object with a non-empty string `model`, a
/// non-empty array `messages` and a boolean `stream` if any (`true` only
/// where streaming is allowed). Everything else is passed through to the
/// backend as it is. Public for the fuzz target `chat_request`.
pub fn chat_request(
    plaintext: &SecretBuf,
    allow_stream: bool,
) -> Result<Map<String, Value>, ApiError> {
    let body: Map<String, Value> = serde_json::from_slice(plaintext.expose_secret())
        .map_err(|_| ApiError::InvalidChatRequest("the decrypted payload is not a JSON object"))?;
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => {
            return Err(ApiError::InvalidChatRequest(
                "model must be a non-empty string",
            ))
        }
    }
    match body.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => {}
        _ => {
            return Err(ApiError::InvalidChatRequest(
                "messages must be a non-empty array",
            ))
        }
    }
    match body.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) if !allow_stream => return Err(ApiError::StreamingUnsupported),
        Some(Value::Bool(true)) => {}
        Some(_) => return Err(ApiError::InvalidChatRequest("stream must be a boolean")),
    }
    Ok(body)
}

/// A checked plaintext request and where it goes.
pub(crate) struct Routed {
    pub(crate) body: Map<String, Value>,
    pub(crate) model: String,
    pub(crate) route: Route,
    /// Whether the request's plaintext sat in locked memory (the truth for
    /// this request's `_metadata.memory_protection.memory_locking`).
    pub(crate) memory_locked: bool,
}

/// Step 7: the plaintext request checked ([`chat_request`]; the plaintext
/// buffer is wiped here), its tier and model (403/404, a wrong model named
/// with the ones served), and the post-quantum rule for the tier the model
/// chose when the header named none (403).
pub(crate) fn route(
    st: &AppState,
    plaintext: SecretBuf,
    allow_stream: bool,
    tier_header: Option<SecurityTier>,
    post_quantum: bool,
) -> Result<Routed, ApiError> {
    let body = chat_request(&plaintext, allow_stream)?;
    let memory_locked = plaintext.is_locked();
    drop(plaintext);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let route = st
        .inner
        .routing
        .route(&model, tier_header)
        .map_err(|e| super::with_served_models(st, &model, e))?;
    refuse_post_quantum(st, Some(route.tier), post_quantum)?;
    refuse_unattested(st, Some(route.tier))?;
    Ok(Routed {
        body,
        model,
        route,
        memory_locked,
    })
}

/// The `kind` label of a backend error in `nomyo_backend_errors_total`.
pub(crate) fn backend_error_kind(e: &BackendError) -> &'static str {
    match e {
        BackendError::InvalidRequest(_) => "rejected",
        BackendError::ModelNotFound => "unknown_model",
        BackendError::Unavailable { .. } => "unavailable",
        BackendError::Timeout => "timeout",
        BackendError::Upstream(_) => "failed",
        BackendError::StreamingUnsupported => "streaming",
        BackendError::Internal(_) => "internal",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// Counts a backend error of `kind` for `backend`.
pub(crate) fn count_backend_error(st: &AppState, backend: &str, kind: &'static str) {
    st.inner
        .metrics
        .backend_errors
        .get_or_create(&BackendLabels {
            backend: backend.to_owned(),
            kind,
        })
        .inc();
}

/// Step 8's failure: the backend refused or failed. Counted and logged
/// (backend detail strings carry statuses and kinds, never content); the
/// replay entries are given back when the backend did not take the request.
pub(crate) fn backend_failed(
    st: &AppState,
    span: &tracing::Span,
    guard: &mut ReplayGuard<'_>,
    routed: &Routed,
    e: BackendError,
) -> ApiError {
    guard.not_taken(&e);
    let name = &routed.route.backend.name;
    let kind = backend_error_kind(&e);
    count_backend_error(st, name, kind);
    tracing::warn!(parent: span, backend = %name, kind, detail = ?e, "backend error");
    super::with_served_models(st, &routed.model, e.into())
}

/// Step 8 for a whole answer: the backend's completion (its errors counted
/// and logged by [`backend_failed`]), with `metadata()` as its `_metadata`,
/// serialised into a buffer that wipes itself. From the call on, the replay
/// entries are kept.
pub(crate) async fn completion(
    st: &AppState,
    span: &tracing::Span,
    guard: &mut ReplayGuard<'_>,
    routed: &Routed,
    request: ChatRequest,
    metadata: impl FnOnce() -> Value,
) -> Result<SecretBuf, ApiError> {
    let backend = &routed.route.backend;
    let t_backend = Instant::now();
    guard.dispatched();
    let mut completion = match backend.backend.chat(request).await {
        Ok(c) => c,
        Err(e) => return Err(backend_failed(st, span, guard, routed, e)),
    };
    tracing::debug!(
        parent: span,
        backend = %backend.name,
        tier = %routed.route.tier,
        backend_ms = t_backend.elapsed().as_secs_f64() * 1e3,
        "backend answered"
    );
    let Some(obj) = completion.as_object_mut() else {
        count_backend_error(st, &backend.name, "failed");
        tracing::warn!(parent: span, backend = %backend.name, "backend answer is not a JSON object");
        return Err(ApiError::BackendFailed);
    };
    obj.insert("_metadata".to_owned(), metadata());
    let mut out = SecretBuf::new();
    serde_json::to_writer(&mut out, &completion)
        .map_err(|e| ApiError::Internal(format!("serialising the response: {e}")))?;
    Ok(out)
}

/// `_metadata` with true values (docs/PROTOCOL.md §1.7), `attested` its
/// `tpm_attestation` and `attestation` ([`per_answer_quote`]), and the
/// `processed_at` it carries.
pub(crate) fn metadata(
    id: &str,
    tier: SecurityTier,
    memory_locked: bool,
    backend: &dyn crate::backend::Backend,
    attested: AnswerAttestation,
) -> (Value, i64) {
    let processed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let protection = nomyo_core::secure_memory::memory_protection();
    let cuda = backend.cuda_device_hash();
    let metadata = Metadata {
        payload_id: Some(id.to_owned()),
        processed_at: Some(processed_at),
        is_encrypted: Some(true),
        response_status: Some("success".to_owned()),
        security_tier: Some(tier.as_str().to_owned()),
        memory_protection: Some(MemoryProtectionInfo {
            platform: protection.platform,
            memory_locking: memory_locked,
            secure_zeroing: protection.secure_zeroing,
            core_dump_prevention: protection.core_dump_prevention,
            extra: Map::new(),
        }),
        cuda_device: Some(CudaDevice {
            available: cuda.is_some(),
            device_hash: cuda.unwrap_or_default(),
            extra: Map::new(),
        }),
        tpm_attestation: Some(attested.tpm),
        attestation: attested.cvm,
        ..Metadata::default()
    };
    // Serialising `Metadata` cannot fail: every map key is a string and no
    // Serialize impl involved returns an error.
    let value = serde_json::to_value(&metadata).unwrap_or_else(|_| Value::Object(Map::new()));
    (value, processed_at)
}

/// What an answer's `_metadata` says of attestation: `tpm_attestation`
/// (§14.2) and, from a confidential VM, `attestation` (§15.2).
#[derive(Clone, Debug, Default)]
pub(crate) struct AnswerAttestation {
    pub tpm: TpmAttestation,
    pub cvm: Option<nomyo_core::chat::CvmAttestation>,
}

/// The answer's `_metadata.tpm_attestation` (docs/PROTOCOL.md §14.2): with
/// a TPM and a tier that quotes per answer, a quote for `id`, asked before
/// the backend is given the request so that a busy TPM (503) leaves the
/// request unanswered and its replay entries given back; otherwise
/// `{"is_available": false}` at no cost. With configfs-tsm, the same for
/// `_metadata.attestation` (§15.2).
pub(crate) async fn per_answer_quote(
    st: &AppState,
    span: &tracing::Span,
    id: &str,
    tier: SecurityTier,
) -> Result<AnswerAttestation, ApiError> {
    let t = Instant::now();
    let per_answer = st.quotes_per_answer(tier);
    let busy = |e: &ApiError| match e {
        ApiError::TpmBusy => st.inner.metrics.refused("tpm_busy"),
        ApiError::EvidenceBusy => st.inner.metrics.refused("evidence_busy"),
        _ => {}
    };
    let block = st
        .attestation()
        .answer_block(id, per_answer)
        .await
        .inspect_err(busy)?;
    if block.is_available {
        tracing::debug!(parent: span, quote_ms = t.elapsed().as_secs_f64() * 1e3, "TPM quote made");
    }
    let cvm = st
        .attestation()
        .answer_evidence(id, per_answer)
        .await
        .inspect_err(busy)?;
    if let Some(c) = &cvm {
        tracing::debug!(parent: span, kind = %c.kind, report_ms = t.elapsed().as_secs_f64() * 1e3, "configfs-tsm report made");
    }
    Ok(AnswerAttestation { tpm: block, cvm })
}
