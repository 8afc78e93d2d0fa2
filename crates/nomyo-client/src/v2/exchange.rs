//! One sealed v2 exchange: the request sealed to the server's key config
//! and sent (retried, and the keys refetched once when the server no longer
//! knows them), the answer's nonce checked, and a non-streamed completion
//! opened.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::Kem;
use nomyo_core::v2::request::RequestSealer;
use nomyo_core::v2::response::{parse_response_nonce, ResponseOpener};
use nomyo_core::v2::{
    V2Error, HEADER_ENCAPSULATED_KEY, HEADER_KEY_ID, HEADER_RESPONSE_NONCE, KEY_CONFIG_PROBLEM_TYPE,
};
use nomyo_core::{SecretBuf, SecurityTier};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use zeroize::Zeroizing;

use crate::attest::Required;
use crate::error::{ApiError, Error, Result};
use crate::request::{
    check_served_tier, parse_completion, serialise, wants_stream, RequestOptions,
};
use crate::retry;
use crate::server_keys::{HpkeKeys, ServerKeys};
use crate::transport::{read_limited, status_error, Outcome, Transport, MAX_ERROR_BYTES};
use crate::types::{ChatCompletion, ChatRequest};

use super::{v2_err, FRAME_PLAINTEXT, MAX_FRAME, MAX_RESPONSE_BYTES, V2};

impl V2 {
    /// Seals and sends `plaintext`; returns the 2xx response and its opener.
    ///
    /// Retries (429/5xx, network errors) seal the body again with a fresh
    /// HPKE context: each context is single-use, and its response keys are
    /// bound to its `enc`, so resending the old bytes would be refused as a
    /// replay and could not be answered to us anyway.
    pub(super) async fn exchange(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        plaintext: &SecretBuf,
        options: &RequestOptions,
    ) -> Result<(reqwest::Response, ResponseOpener, Kem, String)> {
        let mut hpke = keys.hpke_keys(t).await?;
        let mut refetched = false;
        let mut attempts = t.retrier().attempts();
        loop {
            let outcome = self
                .attempt(
                    t,
                    keys,
                    plaintext,
                    options,
                    &mut hpke,
                    &mut refetched,
                    attempts.number(),
                )
                .await
                .unwrap_or_else(Outcome::Fail);
            if let ControlFlow::Break(result) = attempts.after(outcome).await {
                return result;
            }
        }
    }

    /// One attempt of [`V2::exchange`]: sealed with a fresh context
    /// to the current key config. A 400 the server could not seal, or a
    /// 422 key-config problem, refetches the key list once (verified like a
    /// first one) and asks for another attempt.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        plaintext: &SecretBuf,
        options: &RequestOptions,
        hpke: &mut Arc<HpkeKeys>,
        refetched: &mut bool,
        attempt: u32,
    ) -> Result<Outcome<(reqwest::Response, ResponseOpener, Kem, String)>> {
        let config = hpke.config();
        let (enc, mut sealer) = RequestSealer::new(config).map_err(v2_err)?;
        let mut body = Vec::with_capacity(plaintext.len() + 64);
        for c in plaintext.expose_secret().chunks(FRAME_PLAINTEXT) {
            body.extend_from_slice(&sealer.seal_chunk(c).map_err(v2_err)?);
        }
        let mut h = t.headers.clone();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            HeaderName::from_static(HEADER_ENCAPSULATED_KEY),
            HeaderValue::from_str(&hex::encode(&enc))
                .map_err(|_| Error::Config("bad encapsulated key".into()))?,
        );
        h.insert(
            HeaderName::from_static(HEADER_KEY_ID),
            HeaderValue::from(u16::from(config.key_id)),
        );
        options.add_headers(&mut h);
        tracing::debug!(attempt, kem = %config.kem, key_id = config.key_id, body_bytes = body.len(), "v2 request sealed");
        let kem = config.kem;
        let resp = match t
            .http
            .post(self.completions_url.clone())
            .headers(h)
            .body(body)
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(e) => return Ok(Outcome::Network(e)),
        };
        let status = resp.status().as_u16();
        tracing::debug!(status, attempt, "v2 answer");
        let nonce = resp
            .headers()
            .get(HEADER_RESPONSE_NONCE)
            .map(|v| v.to_str().map(str::to_owned));
        if resp.status().is_success() {
            let Some(nonce) = nonce else {
                return Err(v2_err(V2Error::MissingResponseNonce));
            };
            let nonce = nonce.map_err(|_| v2_err(V2Error::InvalidResponseNonce))?;
            let nonce = parse_response_nonce(&nonce).map_err(v2_err)?;
            let opener = sealer.response_opener(&nonce).map_err(v2_err)?;
            // The request's public id, computed from our own `enc`: what
            // the server states in `_metadata` and quotes for this answer.
            let payload_id = nomyo_core::v2::payload_id(&enc);
            return Ok(Outcome::Done((resp, opener, kem, payload_id)));
        }
        let retry_after = retry::retry_after(resp.headers());
        let raw = read_limited(resp, MAX_ERROR_BYTES)
            .await
            .map(|(b, _)| b)
            .unwrap_or_default();
        let sealed = nonce.is_some();
        let plain: Zeroizing<Vec<u8>> = match nonce {
            Some(n) => {
                let n = n.map_err(|_| v2_err(V2Error::InvalidResponseNonce))?;
                let n = parse_response_nonce(&n).map_err(v2_err)?;
                let mut opener = sealer.response_opener(&n).map_err(v2_err)?;
                let body = open_all(&mut opener, &raw)?;
                Zeroizing::new(body.expose_secret().to_vec())
            }
            None => Zeroizing::new(raw.to_vec()),
        };
        let api = ApiError::new(status, &plain, attempt);
        // A 400 the server could not seal (no response nonce) means it
        // could not open the request: it may have new keys under the ids we
        // cached (a restart without saved keys). Refetch once; the new list
        // is verified like a first one (a changed server key is refused).
        if status == 400 && !sealed && !*refetched {
            return match keys.refresh_hpke_keys(t, hpke).await {
                Ok(fresh) if fresh.fingerprint != hpke.fingerprint => {
                    *hpke = fresh;
                    *refetched = true;
                    Ok(Outcome::Again)
                }
                Ok(_) => Err(status_error(api, retry_after)),
                Err(e) if e.is_security() => Err(e),
                // The refetch itself failed: report the original answer.
                Err(_) => Err(status_error(api, retry_after)),
            };
        }
        if status == 422 && is_key_config_problem(&plain) {
            if *refetched {
                return Err(status_error(api, retry_after));
            }
            *hpke = keys.refresh_hpke_keys(t, hpke).await?;
            *refetched = true;
            return Ok(Outcome::Again);
        }
        Ok(Outcome::Status(api, retry_after))
    }

    /// One v2 chat completion. Returns the same typed [`ChatCompletion`]
    /// as v1. With an attestation requirement, the answer's quote or report
    /// is checked before it is returned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        attestation: Option<&Required>,
        request: &ChatRequest,
        options: &RequestOptions,
        requested_tier: Option<SecurityTier>,
    ) -> Result<ChatCompletion> {
        if wants_stream(request) {
            return Err(Error::InvalidInput(
                "\"stream\": true needs Client::create_stream".into(),
            ));
        }
        let started = Instant::now();
        let plaintext = serialise(request)?;
        let (resp, mut opener, kem, payload_id) =
            self.exchange(t, keys, &plaintext, options).await?;
        let (body, too_long) = read_limited(resp, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| t.retrier().network_error(e, 1))?;
        if too_long {
            return Err(Error::InvalidResponse(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        let plain = open_all(&mut opener, &body)?;
        let mut completion = parse_completion(plain.expose_secret())?;
        drop(plain);
        check_served_tier(requested_tier, completion.metadata.security_tier.as_deref())?;
        if let Some(required) = attestation {
            required
                .check_answer_quote(
                    t,
                    keys,
                    &payload_id,
                    completion.metadata.tpm_attestation.as_ref(),
                    completion.metadata.attestation.as_ref(),
                )
                .await?;
        }
        completion.metadata.is_encrypted = Some(true);
        completion.metadata.encryption_algorithm = Some(kem.encryption_algorithm());
        tracing::debug!(
            answer_bytes = body.len(),
            ms = started.elapsed().as_millis() as u64,
            "v2 completion received"
        );
        Ok(completion)
    }
}

/// Opens every frame of a complete body, in order.
fn open_all(opener: &mut ResponseOpener, body: &[u8]) -> Result<SecretBuf> {
    let mut frames = FrameDecoder::new(MAX_FRAME);
    frames.push(body);
    let mut out = SecretBuf::with_capacity(body.len());
    let mut n = 0usize;
    while let Some(frame) = frames.next_frame().map_err(v2_err)? {
        let p = opener.open_chunk(&frame).map_err(v2_err)?;
        out.extend_from_slice(p.expose_secret());
        n += 1;
    }
    frames.finish().map_err(v2_err)?;
    if n == 0 {
        return Err(v2_err(V2Error::FramingTruncated));
    }
    Ok(out)
}

fn is_key_config_problem(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .is_some_and(|t| t == KEY_CONFIG_PROBLEM_TYPE)
}
