//! Which key a v2 request was sealed to (by `Nomyo-Key-Id`, else by the
//! length of `enc`), and opening its body's frames with it.

use std::sync::Arc;

use axum::http::HeaderMap;
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::request::RequestOpener;
use nomyo_core::v2::{V2Error, HEADER_KEY_ID};
use nomyo_core::SecretBuf;

use crate::error::ApiError;
use crate::hpke_keys::HpkeSnapshot;

/// The keys the request may have been sealed to, in the order to try them.
pub(super) struct Candidates {
    pub(super) keys: Vec<Arc<ServerKeyPair>>,
    /// Named by `Nomyo-Key-Id` (exactly one key).
    by_id: bool,
}

/// By `Nomyo-Key-Id` (a current key, or a retired one in grace), else by
/// `enc` length (the current key of that KEM, then those in grace).
pub(super) fn select_keys(
    snap: &HpkeSnapshot,
    headers: &HeaderMap,
    enc: &[u8],
) -> Result<Candidates, ApiError> {
    let now = crate::key_ring::now();
    if let Some(v) = headers.get(HEADER_KEY_ID) {
        let id: u8 = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(ApiError::InvalidKeyId)?;
        let key = snap.by_id(id, now).ok_or(ApiError::UnknownKeyConfig)?;
        return Ok(Candidates {
            keys: vec![key],
            by_id: true,
        });
    }
    let kem = Kem::from_enc_len(enc.len()).ok_or(ApiError::InvalidEncapsulatedKey)?;
    let keys = snap.by_kem(kem, now);
    if keys.is_empty() {
        return Err(ApiError::UnknownKeyConfig);
    }
    Ok(Candidates { keys, by_id: false })
}

/// Sets up HPKE with the first candidate key that opens the first frame,
/// then opens every further frame in order. One opaque error for every
/// cryptographic or framing failure (an `enc` of the wrong length for the
/// chosen key is a header error), except a first frame that no candidate
/// chosen by `enc` length opens: 422, the client's config is stale.
pub(super) fn open_body(
    candidates: &Candidates,
    enc: &[u8],
    body: &[u8],
    max_frame: usize,
) -> Result<(RequestOpener, SecretBuf), ApiError> {
    let mut frames = FrameDecoder::new(max_frame);
    frames.push(body);
    let first = frames
        .next_frame()
        .map_err(|_| ApiError::DecryptionFailed)?
        .ok_or(ApiError::DecryptionFailed)?;
    let mut opened = None;
    for key in &candidates.keys {
        let mut opener = RequestOpener::new(key, enc).map_err(|e| match e {
            V2Error::InvalidEncapsulatedKey(_) => ApiError::InvalidEncapsulatedKey,
            _ => ApiError::DecryptionFailed,
        })?;
        if let Ok(chunk) = opener.open_chunk(&first) {
            opened = Some((opener, chunk));
            break;
        }
    }
    let Some((mut opener, chunk)) = opened else {
        return Err(if candidates.by_id {
            ApiError::DecryptionFailed
        } else {
            ApiError::UnknownKeyConfig
        });
    };
    // The first chunk's buffer grows into the whole plaintext (no copy of
    // a single-frame body).
    let mut plaintext = chunk;
    while let Some(frame) = frames
        .next_frame()
        .map_err(|_| ApiError::DecryptionFailed)?
    {
        let chunk = opener
            .open_chunk(&frame)
            .map_err(|_| ApiError::DecryptionFailed)?;
        plaintext.extend_from_slice(chunk.expose_secret());
    }
    frames.finish().map_err(|_| ApiError::DecryptionFailed)?;
    Ok((opener, plaintext))
}
