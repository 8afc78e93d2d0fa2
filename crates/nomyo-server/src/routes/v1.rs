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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use nomyo_core::keys::PublicKey;
use nomyo_core::v1::{
    self, Package, HEADER_PAYLOAD_ID, HEADER_PUBLIC_KEY, PUBLIC_KEY_PATH, SECURE_COMPLETION_PATH,
};
use nomyo_core::SecretBuf;

use super::pipeline::{self, ReplayGuard, Routed};
use crate::backend::ChatRequest;
use crate::error::ApiError;
use crate::keystore::KeySet;
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
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::serve(
        &st,
        "secure request",
        peer,
        version,
        body,
        async |peer, body| handle(&st, peer, &headers, body).await,
    )
    .await
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

/// Opens with the current key, then with retired keys still in their grace
/// period. One opaque error whatever failed.
fn open_with(set: &KeySet, package: &Package) -> Result<SecretBuf, ApiError> {
    let mut first_err = None;
    for key in set.openers(crate::key_ring::now()) {
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

async fn handle(
    st: &AppState,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response, ApiError> {
    // 1. Who, and how often.
    let who = pipeline::admit(st, peer, headers)?;
    // 2. Headers, and the policy they alone decide (RSA is never
    //    post-quantum).
    let id = payload_id(headers)?;
    let tier_header = pipeline::requested_tier(headers)?;
    let client_key = client_key(headers)?;
    pipeline::refuse_post_quantum(st, tier_header, false)?;
    pipeline::refuse_unattested(st, tier_header)?;
    let id_key = pipeline::replay_key(b"nomyo-v1-payload-id\0", &[id.as_bytes()]);
    pipeline::refuse_seen(st, id_key)?;
    let span = tracing::debug_span!(
        "secure_completion",
        payload_id = %id,
        caller = who.caller_field(),
    );

    // 3. The package, read under its deadline without holding a slot.
    let (bytes, _budget) = pipeline::read_body(st, headers, pipeline::take_body(body)?).await?;
    let package = Package::from_json(&bytes).map_err(|e| match e {
        nomyo_core::Error::PayloadTooLarge { .. } => ApiError::PayloadTooLarge {
            limit: st.limits().max_body_bytes,
        },
        other => ApiError::MalformedPackage(other.to_string()),
    })?;
    let body_len = bytes.len();
    drop(bytes);
    let pkg_key = pipeline::replay_key(
        b"nomyo-v1-package\0",
        &[&package.nonce, &package.tag, &package.encrypted_key],
    );

    // 4. A package is valid once.
    let mut guard = ReplayGuard::claim(st, [id_key, pkg_key], who.principal).await?;

    // 5. A processing slot.
    let _slot = pipeline::acquire_slot(st, &span).await?;

    // 6. Open (RSA private-key operation) on the blocking pool.
    let t_open = Instant::now();
    let set = st.keys().snapshot();
    let plaintext = st
        .blocking(move || open_with(&set, &package))
        .await?
        .inspect_err(|_| st.metrics().refused("decryption"))?;
    tracing::debug!(
        parent: &span,
        body_bytes = body_len,
        plaintext_bytes = plaintext.len(),
        open_ms = t_open.elapsed().as_secs_f64() * 1e3,
        "package opened"
    );

    // 7. The plaintext request and where it goes.
    let routed = pipeline::route(st, plaintext, false, tier_header, false)?;
    answer(st, &span, &mut guard, id, client_key, routed).await
}

/// Step 8: backend, `_metadata`, seal.
async fn answer(
    st: &AppState,
    span: &tracing::Span,
    guard: &mut ReplayGuard<'_>,
    id: &str,
    client_key: Arc<PublicKey>,
    mut routed: Routed,
) -> Result<Response, ApiError> {
    let tier = routed.route.tier;
    let request = ChatRequest {
        body: std::mem::take(&mut routed.body),
        tier,
        request_id: id.to_owned(),
    };
    // docs/PROTOCOL.md §14.2: the quote first, then the backend.
    let mut tpm = Some(pipeline::per_answer_quote(st, span, id, tier).await?);
    // docs/PROTOCOL.md §1.7: `_metadata` with true values, made when the
    // backend has answered.
    let mut processed_at = 0;
    let out = pipeline::completion(st, span, guard, &routed, request, || {
        let (metadata, at) = pipeline::metadata(
            id,
            tier,
            routed.memory_locked,
            &*routed.route.backend.backend,
            tpm.take().unwrap_or_default(),
        );
        processed_at = at;
        metadata
    })
    .await?;

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
