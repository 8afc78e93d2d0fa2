//! Protocol v1 (docs/PROTOCOL.md §3): `GET /pki/public_key` and
//! `POST /v1/chat/secure_completion`.
//!
//! A secure request goes through the server's one order of checks (the
//! crate's README, "Order of checks"; v2 follows the same), cheap checks
//! first, so that an unauthenticated or malformed request never costs an RSA
//! operation and a slow client never holds a processing slot:
//!
//! 1. API key (401); the caller's rate limit (429);
//! 2. headers: `X-Payload-ID`, `X-Security-Tier`, `X-Public-Key` (400);
//!    header-only policy: a tier that requires post-quantum encryption
//!    (`require_post_quantum`) is refused over RSA (403); a used
//!    `X-Payload-ID` (409);
//! 3. the body, bounded in size (413) and time (408); the strict package
//!    parse (400);
//! 4. the replay window claims the id and the package (409; the caller's
//!    share of the window used up: 429);
//! 5. a processing slot (503 when the bounded queue is full or the wait expires);
//! 6. RSA-OAEP + AES-GCM open on the blocking pool: one opaque 400 on failure;
//! 7. the plaintext request: JSON object, `model`, non-empty `messages`,
//!    no `stream: true` (400); tier and model policy (403/404), and the
//!    post-quantum rule again for a tier chosen by the model (403);
//! 8. the backend (502/503/504), `_metadata`, seal to the client key.
//!
//! The replay claim of step 4 is given back when the request is refused
//! before the backend was given it (steps 5–7, or a backend that did not
//! take it: `Unavailable`, 503), so a client's retry of the same bytes is
//! served; from the moment the backend is called it is kept, whatever
//! happens next (time-out, cancellation, 5xx), so the same bytes never run
//! the backend twice.
//!
//! The whole request is bounded by the request timeout (504).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use nomyo_core::keys::PublicKey;
use nomyo_core::tier::HEADER_SECURITY_TIER;
use nomyo_core::v1::{
    self, Package, HEADER_PAYLOAD_ID, HEADER_PUBLIC_KEY, PUBLIC_KEY_PATH, SECURE_COMPLETION_PATH,
};
use nomyo_core::{Fingerprint, SecretBuf, SecurityTier};
use serde_json::{json, Map, Value};

use crate::backend::{BackendError, ChatRequest};
use crate::error::ApiError;
use crate::keystore::KeySet;
use crate::limits::{Claim, ReplayKey};
use crate::metrics::BackendLabels;
use crate::policy::{Caller, RateKey};
use crate::state::AppState;

/// The v1 routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PUBLIC_KEY_PATH, get(public_key))
        .route(SECURE_COMPLETION_PATH, post(secure_completion))
}

/// The server's current RSA public key, PEM SPKI.
async fn public_key(State(st): State<AppState>) -> Response {
    let key = st.keys().current();
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // A rotation must reach clients at once.
            (header::CACHE_CONTROL, "no-store"),
        ],
        key.public_pem().clone(),
    )
        .into_response()
}

async fn secure_completion(
    State(st): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timeout = st.limits().request_timeout;
    let peer = peer.map(|Extension(ConnectInfo(a))| a.ip());
    match tokio::time::timeout(timeout, handle(&st, peer, &headers, body)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            // Details are stable, structural messages: safe to log.
            tracing::debug!(status = e.status().as_u16(), detail = %e.detail(), "secure request refused");
            e.into_response()
        }
        Err(_) => {
            tracing::debug!("secure request timed out");
            ApiError::RequestTimeout.into_response()
        }
    }
}

/// Holds the replay entries a request claimed. Dropped before
/// [`ReplayGuard::dispatched`] (the request refused before the backend was
/// given it, or cancelled then), it gives them back so that the client's
/// retry of the same bytes is served; once dispatched they are kept.
pub(crate) struct ReplayGuard<'a> {
    pub(crate) st: &'a AppState,
    pub(crate) keys: [ReplayKey; 2],
    pub(crate) owner: RateKey,
    pub(crate) keep: bool,
}

impl<'a> ReplayGuard<'a> {
    /// Claims both keys of a request in the replay window for `owner`: a
    /// request is valid once. Shared by v1 (payload id, package) and v2
    /// (enc, body).
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

/// `X-Payload-ID`: 1–128 of `[A-Za-z0-9._-]` (a UUID in practice). Strict so
/// that it can be logged and used as a key as is.
fn payload_id(headers: &HeaderMap) -> Result<&str, ApiError> {
    let v = headers
        .get(HEADER_PAYLOAD_ID)
        .ok_or(ApiError::MissingHeader("X-Payload-ID"))?;
    let s = v.to_str().map_err(|_| ApiError::InvalidPayloadId)?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s)
    } else {
        Err(ApiError::InvalidPayloadId)
    }
}

pub(crate) fn requested_tier(headers: &HeaderMap) -> Result<Option<SecurityTier>, ApiError> {
    match headers.get(HEADER_SECURITY_TIER) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| ApiError::InvalidTier)?;
            SecurityTier::from_str(s)
                .map(Some)
                .map_err(|_| ApiError::InvalidTier)
        }
    }
}

/// Parsed `X-Public-Key` values, keyed by the header's exact bytes (all of
/// them: a lookup compares the whole value, never a prefix or a hash), at
/// most [`CLIENT_KEY_CACHE`] of them. A client normally keeps one key pair
/// for all its requests (the reference client does), so this skips the PEM
/// and SPKI parse and aws-lc's per-key Montgomery set-up on every request but
/// its first. Only public keys that parsed are kept; nothing secret. Full:
/// one entry is dropped (which one does not matter: a miss costs what every
/// request used to). Shared by every server in the process: the parse is a
/// pure function of the bytes.
const CLIENT_KEY_CACHE: usize = 256;

type ClientKeys = HashMap<Box<[u8]>, Arc<PublicKey>>;

fn client_key_cache() -> &'static Mutex<ClientKeys> {
    static CACHE: OnceLock<Mutex<ClientKeys>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::with_capacity(CLIENT_KEY_CACHE)))
}

fn client_key(headers: &HeaderMap) -> Result<Arc<PublicKey>, ApiError> {
    let v = headers
        .get(HEADER_PUBLIC_KEY)
        .ok_or(ApiError::MissingHeader("X-Public-Key"))?;
    let raw = v.as_bytes();
    // Never store (or hash) what the parser would refuse for its length.
    if raw.len() > v1::MAX_PUBLIC_KEY_HEADER {
        return Err(ApiError::InvalidPublicKey);
    }
    let cache = client_key_cache();
    if let Some(k) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(raw) {
        return Ok(Arc::clone(k));
    }
    let s = v.to_str().map_err(|_| ApiError::InvalidPublicKey)?;
    let key = Arc::new(v1::decode_public_key_header(s).map_err(|_| ApiError::InvalidPublicKey)?);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= CLIENT_KEY_CACHE && !map.contains_key(raw) {
        if let Some(old) = map.keys().next().cloned() {
            map.remove(&old);
        }
    }
    map.insert(raw.into(), Arc::clone(&key));
    Ok(key)
}

pub(crate) fn replay_key(domain: &[u8], parts: &[&[u8]]) -> ReplayKey {
    let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    all.push(domain);
    all.extend_from_slice(parts);
    Fingerprint::of_parts(&all).0
}

/// Body bytes held in memory for this request: given back to the server's
/// budget (`max_buffered_body_bytes`) when dropped.
pub(crate) struct BodyBudget(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);

/// Reads the body under its deadline and size limit, counting its bytes
/// against the server's budget for bodies being read or waiting to be
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
        let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
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

/// Opens with the current key, then with retired keys still in their grace
/// period. One opaque error whatever failed.
fn open_with(set: &KeySet, package: &Package) -> Result<SecretBuf, ApiError> {
    let mut first_err = None;
    for key in set.openers(Instant::now()) {
        match v1::open(package, key.private_key()) {
            Ok(p) => return Ok(p),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(match first_err {
        Some(nomyo_core::Error::PayloadTooLarge { .. }) => ApiError::PayloadTooLarge {
            limit: v1::MAX_PLAINTEXT,
        },
        // A wrapped key whose length fits no key we hold is a structural
        // error the core describes (the length is public).
        Some(e @ nomyo_core::Error::Malformed(_)) => ApiError::MalformedPackage(e.to_string()),
        _ => ApiError::DecryptionFailed,
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

async fn handle(
    st: &AppState,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let inner = &st.inner;
    // 1. Who, and how often.
    let caller = inner
        .api_keys
        .authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        .inspect_err(|_| inner.metrics.refused("unauthorized"))?;
    let principal = RateKey::of(caller, inner.trusted_proxies.client_addr(peer, headers));
    if let Some(rate) = &inner.rate {
        rate.check(principal)
            .inspect_err(|_| inner.metrics.refused("rate_limited"))?;
    }
    // 2. Headers, and the policy they alone decide.
    let id = payload_id(headers)?;
    let tier_header = requested_tier(headers)?;
    let client_key = client_key(headers)?;
    if tier_header.is_some_and(|t| st.requires_post_quantum(t)) {
        inner.metrics.refused("post_quantum");
        return Err(ApiError::PostQuantumRequired);
    }
    let id_key = replay_key(b"nomyo-v1-payload-id\0", &[id.as_bytes()]);
    if inner.replay.seen_locally(&[id_key]) {
        inner.metrics.refused("replay");
        return Err(ApiError::Replayed);
    }
    let span = tracing::debug_span!(
        "secure_completion",
        payload_id = %id,
        caller = match caller { Caller::Anonymous => -1i64, Caller::Key(i) => i64::from(i) },
    );

    // 3. The package, read under its deadline without holding a slot.
    let (bytes, _budget) = read_body(st, headers, body).await?;
    let package = Package::from_json(&bytes).map_err(|e| match e {
        nomyo_core::Error::PayloadTooLarge { .. } => ApiError::PayloadTooLarge {
            limit: inner.limits.max_body_bytes,
        },
        other => ApiError::MalformedPackage(other.to_string()),
    })?;
    let body_len = bytes.len();
    drop(bytes);
    let pkg_key = replay_key(
        b"nomyo-v1-package\0",
        &[&package.nonce, &package.tag, &package.encrypted_key],
    );

    // 4. A package is valid once.
    let mut guard = ReplayGuard::claim(st, [id_key, pkg_key], principal).await?;

    // 5. A processing slot.
    let _slot = inner.gate.acquire().await.inspect_err(|_| {
        inner.metrics.refused("saturated");
        tracing::debug!(parent: &span, "saturated");
    })?;
    inner.metrics.in_flight.inc();
    struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _in_flight = InFlight(&inner.metrics.in_flight);

    // 6. Open (RSA private-key operation) on the blocking pool.
    let t_open = Instant::now();
    let set = inner.keys.snapshot();
    let plaintext = st
        .blocking(move || open_with(&set, &package))
        .await?
        .inspect_err(|_| inner.metrics.refused("decryption"))?;
    tracing::debug!(
        parent: &span,
        body_bytes = body_len,
        plaintext_bytes = plaintext.len(),
        open_ms = t_open.elapsed().as_secs_f64() * 1e3,
        "package opened"
    );

    answer(
        st,
        &span,
        &mut guard,
        id,
        tier_header,
        client_key,
        plaintext,
    )
    .await
}

/// Steps 7–8: policy, backend, `_metadata`, seal.
async fn answer(
    st: &AppState,
    span: &tracing::Span,
    guard: &mut ReplayGuard<'_>,
    id: &str,
    tier_header: Option<SecurityTier>,
    client_key: Arc<PublicKey>,
    plaintext: SecretBuf,
) -> Result<Response, ApiError> {
    let inner = &st.inner;
    let body = chat_request(&plaintext, false)?;
    // The truth for this request: whether its plaintext sat in locked memory.
    let memory_locked = plaintext.is_locked();
    drop(plaintext);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let model = model.as_str();
    let route = inner
        .routing
        .route(model, tier_header)
        .map_err(|e| super::with_served_models(st, model, e))?;
    // A tier chosen by the model (no header) obeys the same rule.
    if st.requires_post_quantum(route.tier) {
        inner.metrics.refused("post_quantum");
        return Err(ApiError::PostQuantumRequired);
    }
    let backend = &route.backend;

    let t_backend = Instant::now();
    let request = ChatRequest {
        body,
        tier: route.tier,
        request_id: id.to_owned(),
    };
    guard.dispatched();
    let mut completion = match backend.backend.chat(request).await {
        Ok(v) => v,
        Err(e) => {
            guard.not_taken(&e);
            let kind = backend_error_kind(&e);
            inner
                .metrics
                .backend_errors
                .get_or_create(&BackendLabels {
                    backend: backend.name.clone(),
                    kind,
                })
                .inc();
            // Backend detail strings carry statuses and kinds, never content.
            tracing::warn!(parent: span, backend = %backend.name, kind, detail = ?e, "backend error");
            return Err(super::with_served_models(st, model, e.into()));
        }
    };
    tracing::debug!(
        parent: span,
        backend = %backend.name,
        tier = %route.tier,
        backend_ms = t_backend.elapsed().as_secs_f64() * 1e3,
        "backend answered"
    );
    let Some(obj) = completion.as_object_mut() else {
        inner
            .metrics
            .backend_errors
            .get_or_create(&BackendLabels {
                backend: backend.name.clone(),
                kind: "failed",
            })
            .inc();
        tracing::warn!(parent: span, backend = %backend.name, "backend answer is not a JSON object");
        return Err(ApiError::BackendFailed);
    };

    // docs/PROTOCOL.md §1.7: `_metadata` with true values.
    let (metadata, processed_at) = metadata(id, route.tier, memory_locked, &*backend.backend);
    obj.insert("_metadata".to_owned(), metadata);
    let mut out = SecretBuf::new();
    serde_json::to_writer(&mut out, &completion)
        .map_err(|e| ApiError::Internal(format!("serialising the response: {e}")))?;
    drop(completion);

    // Seal to the client's key (an RSA public-key operation: cheap, but kept
    // off the async workers with the rest of the crypto).
    let t_seal = Instant::now();
    let id_owned = id.to_owned();
    let package = st
        .blocking(move || {
            v1::seal(out.expose_secret(), &client_key).map(|mut p| {
                p.payload_id = Some(id_owned);
                p.processed_at = Some(processed_at);
                p.to_json()
            })
        })
        .await?
        .map_err(|e| match e {
            nomyo_core::Error::PayloadTooLarge { .. } => ApiError::BackendFailed,
            other => ApiError::Internal(format!("sealing the response: {other}")),
        })?;
    tracing::debug!(
        parent: span,
        response_bytes = package.len(),
        seal_ms = t_seal.elapsed().as_secs_f64() * 1e3,
        "response sealed"
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        package,
    )
        .into_response())
}

/// `_metadata` with true values (docs/PROTOCOL.md §1.7), and the
/// `processed_at` it carries.
pub(crate) fn metadata(
    id: &str,
    tier: SecurityTier,
    memory_locked: bool,
    backend: &dyn crate::backend::Backend,
) -> (Value, i64) {
    let processed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let protection = nomyo_core::secure_memory::memory_protection();
    let cuda = backend.cuda_device_hash();
    let value = json!({
        "payload_id": id,
        "processed_at": processed_at,
        "is_encrypted": true,
        "response_status": "success",
        "security_tier": tier.as_str(),
        "memory_protection": {
            "platform": protection.platform,
            "memory_locking": memory_locked,
            "secure_zeroing": protection.secure_zeroing,
            "core_dump_prevention": protection.core_dump_prevention,
        },
        "cuda_device": {
            "available": cuda.is_some(),
            "device_hash": cuda.unwrap_or_default(),
        },
    });
    (value, processed_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use nomyo_core::keys::{PrivateKey, RsaBits};

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_PUBLIC_KEY, HeaderValue::from_str(value).unwrap());
        h
    }

    /// The same PEM with the dashes whose bit is set in `mask`
    /// percent-encoded: other header bytes, the same key.
    fn variant(pem: &str, mask: u32) -> String {
        let mut n = 0;
        pem.chars()
            .map(|c| {
                if c == '-' {
                    n += 1;
                    if mask & (1 << (n - 1)) != 0 {
                        return "%2D".to_owned();
                    }
                }
                v1::encode_public_key_header(&c.to_string())
            })
            .collect()
    }

    #[test]
    fn client_keys_are_cached_by_their_exact_bytes_and_bounded() {
        let key = PrivateKey::generate(RsaBits::B2048).unwrap();
        let pem = key.public_key().to_pem();
        let header = v1::encode_public_key_header(&pem);
        let a = client_key(&headers(&header)).unwrap();
        let b = client_key(&headers(&header)).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second request parses nothing");
        assert_eq!(a.fingerprint(), key.public_key().fingerprint());

        // Other bytes for the same key are another entry (exact match only),
        // and garbage next to a cached value is refused, never served from it.
        let other = client_key(&headers(&variant(&pem, 1))).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(other.fingerprint(), a.fingerprint());
        let truncated = &header[..header.len() - 10];
        assert!(matches!(
            client_key(&headers(truncated)),
            Err(ApiError::InvalidPublicKey)
        ));
        match client_key(&headers(&format!("{header}%0A"))) {
            Ok(k) => assert!(
                !Arc::ptr_eq(&k, &a),
                "a longer value served as the cached one"
            ),
            Err(e) => assert!(matches!(e, ApiError::InvalidPublicKey)),
        }
        let huge = "A".repeat(v1::MAX_PUBLIC_KEY_HEADER + 1);
        assert!(matches!(
            client_key(&headers(&huge)),
            Err(ApiError::InvalidPublicKey)
        ));

        // Bounded: many distinct values never grow it past its size.
        assert!(pem.matches('-').count() >= 20);
        for mask in 1..(CLIENT_KEY_CACHE as u32 + 40) {
            let k = client_key(&headers(&variant(&pem, mask))).unwrap();
            assert_eq!(k.fingerprint(), a.fingerprint());
        }
        let len = client_key_cache().lock().unwrap().len();
        assert!(len <= CLIENT_KEY_CACHE, "{len} entries");
    }
}
