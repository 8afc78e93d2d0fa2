//! Protocol v1 on the client side (docs/PROTOCOL.md §3): the request sealed
//! to the server's RSA key with a fresh AES-256 key, the answer opened with
//! the client's key.

use std::time::Instant;

use bytes::Bytes;
use nomyo_core::keys::PrivateKey;
use nomyo_core::{v1, SecretBuf};
use reqwest::header::{HeaderName, HeaderValue};

use crate::client::{check_served_tier, parse_completion, Client, RequestOptions, X_SECURITY_TIER};
use crate::error::{Error, Result};
use crate::types::{ChatCompletion, ChatRequest};

const X_PAYLOAD_ID: HeaderName = HeaderName::from_static(nomyo_core::v1::HEADER_PAYLOAD_ID);
const X_PUBLIC_KEY: HeaderName = HeaderName::from_static(nomyo_core::v1::HEADER_PUBLIC_KEY);

/// Largest success body read: a 10 MiB plaintext (the protocol limit) is
/// about 13.4 MiB as base64 in a package.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl Client {
    /// One v1 chat completion (called by [`Client::create_with`] when the
    /// client speaks v1).
    pub(crate) async fn create_v1(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<ChatCompletion> {
        self.check_v1_allowed(options)?;
        if request.extra.get("stream").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::InvalidInput(
                "streaming (\"stream\": true) is not supported by protocol v1".into(),
            ));
        }
        let mut plaintext = SecretBuf::with_capacity(4096);
        serde_json::to_writer(&mut plaintext, request)
            .map_err(|_| Error::InvalidInput("the request cannot be serialised as JSON".into()))?;

        let (client_key, mut server_key) = tokio::try_join!(self.client_key(), self.server_key())?;

        let mut headers = self.inner.headers.clone();
        headers.insert(X_PUBLIC_KEY, client_key.header.clone());
        if let Some(tier) = options.security_tier {
            headers.insert(X_SECURITY_TIER, HeaderValue::from_static(tier.as_str()));
        }
        if let Some(id) = options.request_id_header() {
            headers.insert(HeaderName::from_static("x-request-id"), id);
        }

        let mut resealed = false;
        loop {
            let payload_id = uuid::Uuid::new_v4().to_string();
            let started = Instant::now();
            let package =
                v1::seal(plaintext.expose_secret(), &server_key.key).map_err(|e| match e {
                    nomyo_core::Error::PayloadTooLarge { .. } => Error::InvalidInput(e.to_string()),
                    other => Error::Security(other),
                })?;
            let body = Bytes::from(package.to_json());
            tracing::debug!(%payload_id, plaintext_bytes = plaintext.len(), body_bytes = body.len(), "request sealed");
            let mut h = headers.clone();
            h.insert(
                X_PAYLOAD_ID,
                HeaderValue::from_str(&payload_id)
                    .map_err(|_| Error::Config("bad payload id".into()))?,
            );
            let sent = self
                .retrier()
                .send(
                    || {
                        self.inner
                            .http
                            .post(self.inner.chat_url.clone())
                            .headers(h.clone())
                            .body(body.clone())
                    },
                    MAX_RESPONSE_BYTES,
                )
                .await;
            match sent {
                Ok(answer) => {
                    let key = client_key.key.clone();
                    let id = payload_id.clone();
                    let answer_len = answer.len();
                    let completion =
                        tokio::task::spawn_blocking(move || open_response(&answer, &id, &key))
                            .await
                            .map_err(|_| {
                                Error::InvalidResponse("decryption was interrupted".into())
                            })??;
                    tracing::debug!(%payload_id, answer_bytes = answer_len, ms = started.elapsed().as_millis() as u64, "completion received");
                    check_served_tier(
                        self.requested_tier(options),
                        completion.metadata.security_tier.as_deref(),
                    )?;
                    return Ok(completion);
                }
                Err(Error::InvalidRequest(api)) if !resealed => {
                    match self.refresh_server_key(&server_key).await {
                        Ok(Some(new_key)) => {
                            server_key = new_key;
                            resealed = true;
                        }
                        Ok(None) => return Err(Error::InvalidRequest(api)),
                        Err(e) if e.is_security() => return Err(e),
                        // The refetch itself failed: report the original answer.
                        Err(_) => return Err(Error::InvalidRequest(api)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Opens a 200 answer: strict package parse (the downgrade guard), payload-id
/// check, decryption, chat-completion parse, client-side `_metadata`.
fn open_response(body: &[u8], payload_id: &str, key: &PrivateKey) -> Result<ChatCompletion> {
    let package = v1::Package::from_json(body).map_err(Error::Security)?;
    if package
        .payload_id
        .as_deref()
        .is_some_and(|id| id != payload_id)
    {
        return Err(Error::ResponseMismatch(
            "the answer's payload_id is not the one this request sent",
        ));
    }
    let plaintext = v1::open(&package, key).map_err(Error::Security)?;
    let mut completion = parse_completion(plaintext.expose_secret())?;
    drop(plaintext);
    let meta = &mut completion.metadata;
    // The encrypted (authenticated) _metadata is the one to trust; the outer
    // package fields are not authenticated.
    if meta
        .payload_id
        .as_deref()
        .is_some_and(|id| id != payload_id)
    {
        return Err(Error::ResponseMismatch(
            "the decrypted answer belongs to another request (payload_id mismatch)",
        ));
    }
    meta.payload_id = Some(payload_id.to_owned());
    if meta.processed_at.is_none() {
        meta.processed_at = package.processed_at;
    }
    meta.is_encrypted = Some(true);
    meta.encryption_algorithm = Some(v1::ALGORITHM.to_owned());
    Ok(completion)
}
