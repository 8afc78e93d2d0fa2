//! Protocol v2 (EHBP with an X-Wing suite, docs/PROTOCOL.md §4): key discovery,
//! sealed requests, request-bound responses and encrypted streaming.
//!
//! - The key configs come from `GET /.well-known/hpke-keys`
//!   (`application/ohttp-keys`), are cached, and the X-Wing config is
//!   preferred over X25519.
//! - **How the keys are trusted.** A NOMYO server rotates its HPKE keys
//!   (daily by default, for forward secrecy), so they cannot be pinned or
//!   recorded. Instead its long-lived v1 RSA key signs every list it
//!   publishes (`Nomyo-Keys-Signature`, RSA-PSS-SHA256 over a
//!   domain-separated copy of the exact body,
//!   [`nomyo_core::keys_signature`]), as a TLS certificate key vouches for
//!   ephemeral keys. When the header is present the client fetches the v1
//!   key (`GET /pki/public_key`, the same cached key v1 uses), verifies it
//!   exactly as for v1 (pins, or the known-servers file under `ORIGIN`),
//!   checks the signature with it, and then accepts the list, recording
//!   nothing for the HPKE keys: every rotation just works, and a pin of the
//!   v1 fingerprint covers v2 too. A malformed signature, one by another
//!   key, or one that does not cover the body is
//!   [`Error::KeysSignature`] (a security error: nothing is sent). If the
//!   list names a key other than the cached v1 key (the server rotated it),
//!   the v1 key is refetched once and verified like a first one (a changed
//!   key is [`Error::ServerKeyChanged`]).
//! - A server that does not sign its list (a third-party EHBP server) has
//!   the chosen config's fingerprint ([`KeyConfig::fingerprint`]) verified
//!   instead: against the pins, or the `v2-key` fields of its known-servers
//!   line (trust on first use). A pin of a config fingerprint is also
//!   honoured for a signed list (it is then accepted without the signature).
//! - **No signature stripping.** Once a server is known to sign its lists
//!   (its v1 key pinned or recorded, `v2=signed` recorded, or a signed list
//!   verified by this client), an unsigned list is refused
//!   ([`Error::Downgrade`]), never trusted on first use; a refetch after a
//!   400 or 422 answer is verified exactly as the first fetch. A signed list
//!   from a server recorded only with unsigned keys is refused too (its
//!   signing key would be trusted on first use). A verified signed list
//!   records `v2=signed` for the origin.
//! - `POST /v1/chat/completions` carries `Ehbp-Encapsulated-Key`,
//!   `Nomyo-Key-Id` and the body sealed in frames of 64 KiB of plaintext.
//! - Every 2xx answer must carry `Ehbp-Response-Nonce`; without it the
//!   answer is refused ([`Error::V2Security`]): fail closed. A non-2xx
//!   with a nonce has its error body decrypted.
//! - A 422 `urn:ietf:params:ehbp:error:key-config` refetches the keys and
//!   retries once; 429/5xx and network errors are retried like v1.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::Kem;
use nomyo_core::v2::request::RequestSealer;
use nomyo_core::v2::response::{parse_response_nonce, ResponseOpener, TAG_LEN};
use nomyo_core::v2::{
    V2Error, HEADER_ENCAPSULATED_KEY, HEADER_KEY_ID, HEADER_RESPONSE_NONCE, KEY_CONFIG_PROBLEM_TYPE,
};
use nomyo_core::{SecretBuf, SecurityTier};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use tokio::sync::{Mutex, OnceCell};
use zeroize::Zeroizing;

use crate::client::{Client, RequestOptions, X_SECURITY_TIER};
use crate::error::{ApiError, Error, Result};
use crate::retry;
use crate::server_keys::HpkeKeys;
use crate::transport::{
    describe_network_error, read_limited, status_error, Outcome, MAX_ERROR_BYTES,
};
use crate::types::{ChatCompletion, ChatRequest};

// The wire paths live in nomyo-core; re-exported as this crate's API.
pub use nomyo_core::v2::{CHAT_COMPLETIONS_PATH as COMPLETIONS_PATH, HPKE_KEYS_PATH};
// The chunk shapes too: one streamed `chat.completion.chunk`.
pub use nomyo_core::chat::{ChatCompletionChunk, ChunkChoice, Delta};

/// Plaintext bytes per sealed request frame.
const FRAME_PLAINTEXT: usize = 64 * 1024;
/// Largest response frame accepted (the server seals at most 16 KiB per
/// chunk; one streamed event is one chunk).
const MAX_FRAME: usize = 1024 * 1024 + TAG_LEN;
/// Largest non-streamed answer read (framed ciphertext).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest SSE event accepted while waiting for its end.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Which protocol a [`Client`] speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// The default: v2 when the server publishes `/.well-known/hpke-keys`
    /// (decided once per client and cached), otherwise v1, with two
    /// guards against a downgrade by someone in the middle: a server
    /// recorded as speaking v2 (known-servers file) that answers 404 there
    /// is refused ([`Error::Downgrade`]), and a request for the `high` or
    /// `maximum` tier never goes over v1 ([`Error::TierNeedsV2`]).
    #[default]
    Auto,
    /// Protocol v1 (RSA-OAEP + AES-GCM packages), chosen explicitly: for
    /// servers that speak only v1. Its answers are only as safe as the TLS
    /// path (SECURITY.md).
    V1,
    /// Protocol v2 (EHBP, X-Wing preferred, else X25519).
    V2,
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Protocol::Auto),
            "v1" => Ok(Protocol::V1),
            "v2" => Ok(Protocol::V2),
            _ => Err(Error::Config(
                "unknown protocol: use auto, v1 or v2".to_owned(),
            )),
        }
    }
}

/// Per-client v2 state.
pub(crate) struct V2State {
    pub(crate) keys_url: Url,
    pub(crate) completions_url: Url,
    pub(crate) protocol: Protocol,
    /// Only this KEM's config (else X-Wing preferred over X25519).
    pub(crate) kem: Option<Kem>,
    pub(crate) keys: RwLock<Option<Arc<HpkeKeys>>>,
    pub(crate) fetch: Mutex<()>,
    pub(crate) auto: OnceCell<bool>,
    /// A signed key list was verified: from now on an unsigned one is
    /// refused, whatever the known-servers file says.
    pub(crate) signed_seen: AtomicBool,
}

impl V2State {
    pub(crate) fn new(
        keys_url: Url,
        completions_url: Url,
        protocol: Protocol,
        kem: Option<Kem>,
    ) -> Self {
        Self {
            keys_url,
            completions_url,
            protocol,
            kem,
            keys: RwLock::new(None),
            fetch: Mutex::new(()),
            auto: OnceCell::new(),
            signed_seen: AtomicBool::new(false),
        }
    }
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }
    pub(crate) fn cached(&self) -> Option<Arc<HpkeKeys>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(crate) fn store(&self, k: Arc<HpkeKeys>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(k);
    }
}

fn v2_err(e: V2Error) -> Error {
    Error::V2Security(e)
}

/// An async stream of decrypted chunks. It ends normally only after
/// `data: [DONE]` was decrypted; a cut or tampered stream yields an error
/// as its last item.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk>> + Send>>;

impl Client {
    /// Whether requests use protocol v2 (for [`Protocol::Auto`]: probes
    /// `/.well-known/hpke-keys` once and caches the answer).
    pub async fn uses_v2(&self) -> Result<bool> {
        let v2 = &self.inner.v2;
        match v2.protocol {
            Protocol::V1 => Ok(false),
            Protocol::V2 => Ok(true),
            Protocol::Auto => v2
                .auto
                .get_or_try_init(|| async {
                    let _guard = v2.fetch.lock().await;
                    match self.fetch_hpke_keys().await? {
                        Some(keys) => {
                            v2.store(keys);
                            tracing::debug!(origin = %self.inner.origin, "auto: protocol v2");
                            Ok(true)
                        }
                        None => {
                            tracing::debug!(origin = %self.inner.origin, "auto: protocol v1");
                            Ok(false)
                        }
                    }
                })
                .await
                .copied(),
        }
    }

    /// Seals and sends `plaintext`; returns the 2xx response and its opener.
    ///
    /// Retries (429/5xx, network errors) seal the body again with a fresh
    /// HPKE context: each context is single-use, and its response keys are
    /// bound to its `enc`, so resending the old bytes would be refused as a
    /// replay and could not be answered to us anyway.
    async fn exchange_v2(
        &self,
        plaintext: &SecretBuf,
        options: &RequestOptions,
    ) -> Result<(reqwest::Response, ResponseOpener, Kem, String)> {
        let mut keys = self.hpke_keys().await?;
        let mut refetched = false;
        let mut attempts = self.retrier().attempts();
        loop {
            let outcome = self
                .attempt_v2(
                    plaintext,
                    options,
                    &mut keys,
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

    /// One attempt of [`Client::exchange_v2`]: sealed with a fresh context
    /// to the current key config. A 400 the server could not seal, or a
    /// 422 key-config problem, refetches the key list once (verified like a
    /// first one) and asks for another attempt.
    async fn attempt_v2(
        &self,
        plaintext: &SecretBuf,
        options: &RequestOptions,
        keys: &mut Arc<HpkeKeys>,
        refetched: &mut bool,
        attempt: u32,
    ) -> Result<Outcome<(reqwest::Response, ResponseOpener, Kem, String)>> {
        let config = keys.config();
        let (enc, mut sealer) = RequestSealer::new(config).map_err(v2_err)?;
        let mut body = Vec::with_capacity(plaintext.len() + 64);
        for c in plaintext.expose_secret().chunks(FRAME_PLAINTEXT) {
            body.extend_from_slice(&sealer.seal_chunk(c).map_err(v2_err)?);
        }
        let mut h = self.inner.headers.clone();
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
        if let Some(tier) = options.security_tier {
            h.insert(X_SECURITY_TIER, HeaderValue::from_static(tier.as_str()));
        }
        if let Some(id) = options.request_id_header() {
            h.insert(HeaderName::from_static(nomyo_core::HEADER_REQUEST_ID), id);
        }
        tracing::debug!(attempt, kem = %config.kem, key_id = config.key_id, body_bytes = body.len(), "v2 request sealed");
        let kem = config.kem;
        let resp = match self
            .inner
            .http
            .post(self.inner.v2.completions_url.clone())
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
            return match self.refresh_hpke_keys(keys).await {
                Ok(fresh) if fresh.fingerprint != keys.fingerprint => {
                    *keys = fresh;
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
            *keys = self.refresh_hpke_keys(keys).await?;
            *refetched = true;
            return Ok(Outcome::Again);
        }
        Ok(Outcome::Status(api, retry_after))
    }

    /// One v2 chat completion (called by [`Client::create`] when the client
    /// speaks v2). Returns the same typed [`ChatCompletion`] as v1.
    pub(crate) async fn create_v2(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<ChatCompletion> {
        if request.extra.get("stream").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::InvalidInput(
                "\"stream\": true needs Client::create_stream".into(),
            ));
        }
        let started = Instant::now();
        let plaintext = serialise(request)?;
        let (resp, mut opener, kem, payload_id) = self.exchange_v2(&plaintext, options).await?;
        let (body, too_long) = read_limited(resp, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| self.retrier().network_error(e, 1))?;
        if too_long {
            return Err(Error::InvalidResponse(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        let plain = open_all(&mut opener, &body)?;
        let mut completion = crate::client::parse_completion(plain.expose_secret())?;
        drop(plain);
        crate::client::check_served_tier(
            self.requested_tier(options),
            completion.metadata.security_tier.as_deref(),
        )?;
        self.check_answer_quote(
            &payload_id,
            completion.metadata.tpm_attestation.as_ref(),
            completion.metadata.attestation.as_ref(),
        )
        .await?;
        completion.metadata.is_encrypted = Some(true);
        completion.metadata.encryption_algorithm = Some(kem.encryption_algorithm());
        tracing::debug!(
            answer_bytes = body.len(),
            ms = started.elapsed().as_millis() as u64,
            "v2 completion received"
        );
        Ok(completion)
    }

    /// A streamed v2 chat completion: `"stream": true` is set, the request
    /// sealed and sent, and each sealed response frame decrypted as it
    /// arrives. The stream is complete only when `data: [DONE]` was
    /// decrypted; a body that ends before it, or any frame that fails,
    /// yields an error (and then nothing more).
    ///
    /// Needs protocol v2 (or [`Protocol::Auto`] against a v2 server): v1
    /// cannot stream.
    pub async fn create_stream(&self, request: &ChatRequest) -> Result<ChunkStream> {
        self.create_stream_with(request, &RequestOptions::default())
            .await
    }

    /// [`Client::create_stream`] with per-request options.
    pub async fn create_stream_with(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<ChunkStream> {
        if !self.uses_v2().await? {
            return Err(Error::InvalidInput(
                "streaming needs protocol v2; protocol v1 cannot stream".into(),
            ));
        }
        self.ensure_attested().await?;
        let mut r = request.clone();
        r.extra
            .insert("stream".to_owned(), serde_json::Value::Bool(true));
        let plaintext = serialise(&r)?;
        zeroize::Zeroize::zeroize(&mut r);
        let (resp, opener, _kem, payload_id) = self.exchange_v2(&plaintext, options).await?;
        let quote_unchecked = self.answer_check(&payload_id)?;
        drop(plaintext);
        let state = StreamState {
            body: resp.bytes_stream().boxed(),
            frames: FrameDecoder::new(MAX_FRAME),
            opener,
            text: Zeroizing::new(Vec::new()),
            ready: VecDeque::new(),
            done: false,
            finished: false,
            tier_unchecked: self
                .requested_tier(options)
                .filter(|t| *t > SecurityTier::Standard),
            quote_unchecked,
        };
        Ok(futures::stream::unfold(state, next_chunk).boxed())
    }
}

fn serialise(request: &ChatRequest) -> Result<SecretBuf> {
    let mut plaintext = SecretBuf::with_capacity(4096);
    serde_json::to_writer(&mut plaintext, request)
        .map_err(|_| Error::InvalidInput("the request cannot be serialised as JSON".into()))?;
    Ok(plaintext)
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

struct StreamState {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    frames: FrameDecoder,
    opener: ResponseOpener,
    /// Decrypted bytes not yet parsed into events.
    text: Zeroizing<Vec<u8>>,
    ready: VecDeque<Result<ChatCompletionChunk>>,
    /// `data: [DONE]` was decrypted.
    done: bool,
    /// Nothing more is yielded.
    finished: bool,
    /// A tier above `standard` was requested and the first chunk's sealed
    /// `_metadata` has not been checked against it yet.
    tier_unchecked: Option<SecurityTier>,
    /// Attestation is required and the first chunk's quote has not been
    /// checked yet.
    quote_unchecked: Option<crate::attest::AnswerCheck>,
}

impl StreamState {
    fn fail(&mut self, e: Error) {
        self.ready.push_back(Err(e));
    }

    /// Decrypts the frames buffered so far and parses complete events.
    fn drain_frames(&mut self) -> Result<()> {
        while let Some(frame) = self.frames.next_frame().map_err(v2_err)? {
            let p = self.opener.open_chunk(&frame).map_err(v2_err)?;
            if self.done {
                return Err(Error::InvalidResponse(
                    "the stream continued after data: [DONE]".into(),
                ));
            }
            self.text.extend_from_slice(p.expose_secret());
            self.parse_events()?;
        }
        if self.text.len() > MAX_EVENT_BYTES {
            return Err(Error::InvalidResponse(
                "a stream event is larger than the limit".into(),
            ));
        }
        Ok(())
    }

    fn parse_events(&mut self) -> Result<()> {
        while let Some(end) = self.text.windows(2).position(|w| w == b"\n\n") {
            let event: Zeroizing<Vec<u8>> = Zeroizing::new(self.text[..end].to_vec());
            self.text.drain(..end + 2);
            let event = std::str::from_utf8(&event)
                .map_err(|_| Error::InvalidResponse("a stream event is not UTF-8".into()))?;
            for line in event.lines() {
                let line = line.trim_end_matches('\r');
                let Some(data) = line.strip_prefix("data:") else {
                    continue; // comments, event names, ids
                };
                let data = data.trim_start();
                if self.done {
                    return Err(Error::InvalidResponse(
                        "the stream continued after data: [DONE]".into(),
                    ));
                }
                if data == "[DONE]" {
                    self.done = true;
                    continue;
                }
                let chunk: ChatCompletionChunk = serde_json::from_str(data).map_err(|e| {
                    Error::InvalidResponse(format!(
                        "a decrypted stream event is not a chat.completion.chunk (JSON error at column {})",
                        e.column()
                    ))
                })?;
                if chunk.object != "chat.completion.chunk" {
                    return Err(Error::InvalidResponse(
                        "a decrypted stream event is not a chat.completion.chunk".into(),
                    ));
                }
                if let Some(requested) = self.tier_unchecked.take() {
                    let served = chunk
                        .metadata
                        .as_ref()
                        .and_then(|m| m.get("security_tier"))
                        .and_then(|t| t.as_str());
                    crate::client::check_served_tier(Some(requested), served)?;
                }
                if let Some(check) = self.quote_unchecked.take() {
                    let block =
                        |name: &str| chunk.metadata.as_ref().and_then(|m| m.get(name)).cloned();
                    let tpm: Option<nomyo_core::chat::TpmAttestation> =
                        block("tpm_attestation").and_then(|b| serde_json::from_value(b).ok());
                    let cvm: Option<nomyo_core::chat::CvmAttestation> =
                        block("attestation").and_then(|b| serde_json::from_value(b).ok());
                    check.check_stream(tpm.as_ref(), cvm.as_ref())?;
                }
                self.ready.push_back(Ok(chunk));
            }
        }
        Ok(())
    }
}

async fn next_chunk(mut s: StreamState) -> Option<(Result<ChatCompletionChunk>, StreamState)> {
    loop {
        if let Some(item) = s.ready.pop_front() {
            if item.is_err() {
                s.ready.clear();
                s.finished = true;
            }
            return Some((item, s));
        }
        if s.finished {
            return None;
        }
        match s.body.next().await {
            Some(Ok(bytes)) => {
                s.frames.push(&bytes);
                if let Err(e) = s.drain_frames() {
                    s.fail(e);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %describe_network_error(&e), "v2 stream interrupted");
                s.fail(Error::InvalidResponse(
                    "the encrypted stream was interrupted before data: [DONE]".into(),
                ));
            }
            None => {
                if let Err(e) = s.frames.finish() {
                    s.fail(v2_err(e));
                } else if !s.done {
                    s.fail(Error::InvalidResponse(
                        "the encrypted stream ended before data: [DONE]: the answer is incomplete"
                            .into(),
                    ));
                } else if !s.text.iter().all(u8::is_ascii_whitespace) {
                    s.fail(Error::InvalidResponse(
                        "the stream ended inside an event".into(),
                    ));
                }
                if s.ready.is_empty() {
                    s.finished = true;
                }
            }
        }
    }
}
