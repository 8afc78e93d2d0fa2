//! Protocol v2 (docs/PROTOCOL.md §4; EHBP v0.3.1): `GET /.well-known/hpke-keys`
//! and EHBP on `POST /v1/chat/completions`.
//!
//! The key list carries `Nomyo-Keys-Signature`: RSA-PSS by the server's v1
//! key over the exact body ([`nomyo_core::keys_signature`]), so that clients
//! that trust the v1 key trust every rotation of the HPKE keys.
//!
//! An encrypted request goes through the server's one order of checks (the
//! crate's README, "Order of checks"; v1 follows the same), cheap checks
//! first, so that an unauthenticated or malformed request never costs an HPKE
//! operation and a slow client never holds a processing slot:
//!
//! 1. API key (401); the caller's rate limit (429);
//! 2. headers: `Ehbp-Encapsulated-Key` (absent: 400, plaintext chat is never
//!    accepted; not hex or of no suite's length: 400); the key by
//!    `Nomyo-Key-Id` (not a number: 400; unknown, or retired and past its
//!    grace period: 422 `application/problem+json`, type
//!    `urn:ietf:params:ehbp:error:key-config`) or else by the length of `enc`
//!    (32 → X25519, 1120 → X-Wing: the current key of that KEM, then the
//!    retired ones still in their grace period);
//!    `X-Security-Tier` (400); header-only policy: a tier that requires
//!    post-quantum encryption with X25519 (403); a used `enc` (409);
//! 3. the body, bounded in size (413) and time (408);
//! 4. the replay window claims the `enc` and the body (409; the caller's
//!    share of the window used up: 429);
//! 5. a processing slot (503);
//! 6. frames decoded with the body limit as the frame limit, every chunk
//!    opened in order on the blocking pool. Every cryptographic or framing
//!    failure is one opaque 400 `decryption failed`, with one exception that
//!    EHBP §5.4.2 asks for: a request without `Nomyo-Key-Id` whose first
//!    chunk opens under none of the live keys of its KEM was most likely
//!    sealed to a key rotated out and erased (EHBP clients name no key id),
//!    so it gets the 422 that makes the client refetch the keys and send
//!    again. With an explicit key id that we hold, the same failure is
//!    tampering: 400;
//! 7. the response context: a random 32-byte `Ehbp-Response-Nonce`. From here
//!    on every answer, errors included, is sealed to the request (EHBP §5.2):
//!    status and `Retry-After` stay plain, the `{"detail": ...}` body is
//!    encrypted, so nothing about the request's content travels in clear.
//!    (A request timeout still answers a plain 504: the nonce-less non-2xx
//!    that EHBP clients pass through.) The plaintext request: JSON object,
//!    `model`, non-empty `messages`, `stream` a boolean (400); tier and
//!    model policy (403/404), the post-quantum requirement of a tier chosen
//!    by the model (`require_post_quantum`, 403);
//! 8. the backend (502/503/504), `_metadata` (with `protocol` and `hpke`:
//!    the suite actually used), sealed in chunks of at most 16 KiB.
//!
//! The replay claim of step 4 is given back when the request is refused
//! before the backend was given it, and kept from the moment the backend is
//! called (see `routes::v1`).
//!
//! With `"stream": true` the answer is `text/event-stream`: each
//! `chat.completion.chunk` is one SSE event `data: {json}\n\n`, sealed as its
//! own chunk as soon as the backend produces it, then `data: [DONE]\n\n`
//! sealed. A backend error mid-stream ends the body without `[DONE]`, so the
//! client sees a cut stream. A backend that cannot stream answers through
//! `chat()` and its complete answer goes out as one chunk event plus `[DONE]`.
//! The first chunk event carries `_metadata`. A task feeds the events to the
//! response through a small buffer and holds the processing slot until the
//! stream ends; it cuts the stream when the backend produces nothing for
//! `stream_idle_timeout_secs` or the client reads nothing for
//! `stream_write_timeout_secs`, so a client that stops reading (an HTTP/2
//! flow-control window left at zero) gives its slot back.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use nomyo_core::keys_signature;
use nomyo_core::v2::request;
use nomyo_core::v2::response::{random_response_nonce, ResponseSealer};
use nomyo_core::v2::{
    CHAT_COMPLETIONS_PATH, HEADER_ENCAPSULATED_KEY, HEADER_RESPONSE_NONCE, HPKE_KEYS_PATH,
    KEYS_CONTENT_TYPE,
};
use nomyo_core::SecurityTier;

use super::pipeline::{self, ReplayGuard};
use crate::error::ApiError;
use crate::state::AppState;

mod answer;
mod keys;
mod stream;

use answer::{answer, Reply};
use keys::{open_body, select_keys};
use stream::{stream_body, StreamState};

/// The tier that requires the post-quantum suite unless configured otherwise
/// (`[tiers.maximum] require_post_quantum`).
pub const POST_QUANTUM_TIER: SecurityTier = SecurityTier::Maximum;
/// Plaintext bytes per sealed response chunk of a non-streamed answer.
const RESPONSE_CHUNK: usize = 16 * 1024;

/// The v2 routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(HPKE_KEYS_PATH, get(hpke_keys))
        .route(CHAT_COMPLETIONS_PATH, post(chat_completions))
}

/// The key configs, X25519 first, then X-Wing, with their signature by the
/// server's RSA key in `Nomyo-Keys-Signature` (the body is exactly the
/// signed bytes).
async fn hpke_keys(State(st): State<AppState>) -> Response {
    let signed = match st.signed_hpke_keys().await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, KEYS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        signed.body().clone(),
    )
        .into_response();
    resp.headers_mut().insert(
        HeaderName::from_static(keys_signature::HEADER),
        signed.header().clone(),
    );
    resp
}

async fn chat_completions(
    State(st): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The timeout covers the request up to the response head; a stream then
    // runs as long as the backend produces.
    pipeline::serve(
        &st,
        "v2 request",
        peer,
        version,
        body,
        async |peer, body| handle(&st, peer, &headers, body).await,
    )
    .await
}

async fn handle(
    st: &AppState,
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response, ApiError> {
    // 1. Who, and how often.
    let who = pipeline::admit(st, peer, headers)?;

    // 2. Headers, and the policy they alone decide.
    let enc_header = headers.get(HEADER_ENCAPSULATED_KEY).ok_or_else(|| {
        st.metrics().refused("plaintext");
        ApiError::EncryptionRequired
    })?;
    let enc = enc_header
        .to_str()
        .ok()
        .and_then(|s| request::parse_encapsulated_key(s).ok())
        .ok_or(ApiError::InvalidEncapsulatedKey)?;
    let candidates = select_keys(&st.hpke_store().snapshot(), headers, &enc)
        .inspect_err(|_| st.metrics().refused("key_config"))?;
    let kem = candidates.keys[0].kem();
    let tier_header = pipeline::requested_tier(headers)?;
    pipeline::refuse_post_quantum(st, tier_header, kem.is_post_quantum())?;
    pipeline::refuse_unattested(st, tier_header)?;
    let enc_key = nomyo_core::v2::enc_replay_key(&enc);
    pipeline::refuse_seen(st, enc_key)?;
    // A public, per-request id for logs and `_metadata`: not the enc itself.
    let id = nomyo_core::v2::payload_id(&enc);
    let span = tracing::debug_span!(
        "ehbp_completion",
        request_id = %id,
        suite = kem.name(),
        key_id = candidates.keys[0].key_id(),
        caller = who.caller_field(),
    );

    // 3. The body, read under its deadline without holding a slot.
    let (bytes, _budget) = pipeline::read_body(st, headers, pipeline::take_body(body)?)
        .await
        .map_err(|e| match e {
            ApiError::EmptyBody => ApiError::InvalidChatRequest("the encrypted body is empty"),
            other => other,
        })?;
    let body_key = pipeline::replay_key(b"nomyo-v2-body\0", &[&enc, &bytes]);

    // 4. A request is valid once.
    let mut guard = ReplayGuard::claim(st, [enc_key, body_key], who.principal).await?;

    // 5. A processing slot (a stream holds it until it ends).
    let slot = pipeline::acquire_slot(st, &span).await?;

    // 6. The body opened on the blocking pool.
    let body_len = bytes.len();
    let max_frame = st.limits().max_body_bytes;
    let t_open = Instant::now();
    let (opener, plaintext) = st
        .blocking(move || open_body(&candidates, &enc, &bytes, max_frame))
        .await?
        .inspect_err(|e| {
            st.metrics().refused(match e {
                ApiError::UnknownKeyConfig => "key_config",
                _ => "decryption",
            })
        })?;
    tracing::debug!(
        parent: &span,
        body_bytes = body_len,
        plaintext_bytes = plaintext.len(),
        open_ms = t_open.elapsed().as_secs_f64() * 1e3,
        "request opened"
    );

    // 7. The response context: from here every answer is sealed.
    let nonce = random_response_nonce()
        .map_err(|_| ApiError::Internal("no randomness for the response nonce".into()))?;
    let mut sealer = opener
        .response_sealer(&nonce)
        .map_err(|_| ApiError::Internal("response key derivation failed".into()))?;
    drop(opener);
    let nonce_hex = hex::encode(nonce);

    // 7. The plaintext request and where it goes, then 8. the backend; a
    //    refusal from here on is sealed.
    let result = match pipeline::route(st, plaintext, true, tier_header, kem.is_post_quantum()) {
        Ok(routed) => answer(st, &span, &mut guard, &id, kem, routed).await,
        Err(e) => Err(e),
    };
    drop(guard);
    match result {
        Ok(Reply::Json(out)) => {
            let mut sealed = Vec::with_capacity(out.len() + 64);
            for part in out.expose_secret().chunks(RESPONSE_CHUNK) {
                sealer
                    .seal_chunk_into(part, &mut sealed)
                    .map_err(|_| ApiError::Internal("sealing the response failed".into()))?;
            }
            tracing::debug!(parent: &span, response_bytes = sealed.len(), "response sealed");
            Ok(sealed_response(
                StatusCode::OK,
                "application/json",
                &nonce_hex,
                Body::from(sealed),
            ))
        }
        Ok(Reply::Stream {
            chunks,
            metadata,
            backend,
        }) => {
            let state = StreamState {
                chunks,
                sealer,
                metadata: Some(metadata),
                st: st.clone(),
                backend,
                _slot: slot,
                span: span.clone(),
            };
            Ok(sealed_response(
                StatusCode::OK,
                "text/event-stream",
                &nonce_hex,
                stream_body(state),
            ))
        }
        Err(e) => {
            tracing::debug!(parent: &span, status = e.status().as_u16(), detail = %e.detail(), "v2 request refused (sealed)");
            Ok(sealed_error(e, &mut sealer, &nonce_hex))
        }
    }
}

fn sealed_response(
    status: StatusCode,
    content_type: &str,
    nonce_hex: &str,
    body: Body,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(nonce_hex) {
        h.insert(HeaderName::from_static(HEADER_RESPONSE_NONCE), v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An error after the response context exists: plain status and
/// `Retry-After`, sealed `{"detail": ...}` (EHBP §5.2). A refusal's whole
/// reason goes only here, also as OpenAI's `error` object.
fn sealed_error(e: ApiError, sealer: &mut ResponseSealer, nonce_hex: &str) -> Response {
    if let ApiError::Internal(detail) = &e {
        tracing::error!(detail = %detail, "internal error");
    }
    let body = e.sealed_body().to_string();
    match sealer.seal_chunk(body.as_bytes()) {
        Ok(sealed) => {
            let mut resp = sealed_response(
                e.status(),
                "application/json",
                nonce_hex,
                Body::from(sealed),
            );
            if let Some(retry) = e.into_response().headers().get(header::RETRY_AFTER) {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, retry.clone());
            }
            resp
        }
        Err(_) => ApiError::Internal("sealing an error failed".into()).into_response(),
    }
}
