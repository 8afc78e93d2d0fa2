//! Step 8: the backend's answer with its `_metadata` (and the per-answer
//! attestation it carries), and the backend's errors counted and logged.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nomyo_core::chat::{CudaDevice, MemoryProtectionInfo, Metadata, TpmAttestation};
use nomyo_core::{SecretBuf, SecurityTier};
use serde_json::{Map, Value};

use super::{ReplayGuard, Routed};
use crate::backend::{BackendError, ChatRequest};
use crate::error::ApiError;
use crate::metrics::BackendLabels;
use crate::state::AppState;

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
    crate::routes::with_served_models(st, &routed.model, e.into())
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
