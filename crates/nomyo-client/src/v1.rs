//! Protocol v1 on the client side (docs/PROTOCOL.md §3): the request sealed
//! to the server's RSA key with a fresh AES-256 key, the answer opened with
//! the client's key.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nomyo_core::keys::PrivateKey;
use nomyo_core::{v1, SecretBuf, SecurityTier};
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
        self.send_v1(request, options).await?.open().await
    }

    /// Sends one v1 request like [`Client::create_with`] and returns its
    /// answer received but not yet decrypted: read whole, strictly parsed as
    /// a v1 package (version and algorithms checked) whose `payload_id`, when
    /// it has one, is the request's. [`UnopenedAnswer::open`] decrypts and
    /// checks it as `create` does.
    ///
    /// For load generators: a v1 client pays one RSA-4096 private-key
    /// operation per answer, as much as the server per request, so opening
    /// one answer in N lets one client core drive a server to its limit.
    /// An answer not opened has not been authenticated: use it for timing
    /// only. Protocol v1 only (a client that speaks v2 gets
    /// [`Error::InvalidInput`]).
    pub async fn create_unopened(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<UnopenedAnswer> {
        if self.uses_v2().await? {
            return Err(Error::InvalidInput(
                "an unopened answer is a protocol v1 feature; this client speaks v2".into(),
            ));
        }
        self.refuse_v1_if_attestation_required()?;
        self.send_v1(request, options).await
    }

    async fn send_v1(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<UnopenedAnswer> {
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
            headers.insert(HeaderName::from_static(nomyo_core::HEADER_REQUEST_ID), id);
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
                    let package = receive(&answer, &payload_id)?;
                    tracing::debug!(%payload_id, answer_bytes = answer.len(), ms = started.elapsed().as_millis() as u64, "answer received");
                    return Ok(UnopenedAnswer {
                        package,
                        payload_id,
                        key: Arc::clone(&client_key.key),
                        requested_tier: self.requested_tier(options),
                    });
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

/// A protocol v1 answer as received: a well-formed package for this
/// request, not yet decrypted or authenticated
/// ([`Client::create_unopened`]).
pub struct UnopenedAnswer {
    package: v1::Package,
    payload_id: String,
    key: Arc<PrivateKey>,
    requested_tier: Option<SecurityTier>,
}

impl fmt::Debug for UnopenedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnopenedAnswer")
            .field("payload_id", &self.payload_id)
            .finish_non_exhaustive()
    }
}

impl UnopenedAnswer {
    /// The request's payload id.
    pub fn payload_id(&self) -> &str {
        &self.payload_id
    }

    /// Decrypts the answer with the client key (off the async threads) and
    /// checks it as [`Client::create`] does: the payload id inside the
    /// authenticated answer, and the tier served when more than `standard`
    /// was asked for.
    pub async fn open(self) -> Result<ChatCompletion> {
        let Self {
            package,
            payload_id,
            key,
            requested_tier,
        } = self;
        let started = Instant::now();
        let id = payload_id.clone();
        let completion = tokio::task::spawn_blocking(move || open_package(&package, &id, &key))
            .await
            .map_err(|_| Error::InvalidResponse("decryption was interrupted".into()))??;
        tracing::debug!(%payload_id, ms = started.elapsed().as_millis() as u64, "answer opened");
        check_served_tier(requested_tier, completion.metadata.security_tier.as_deref())?;
        Ok(completion)
    }
}

/// A 200 answer's body as a package for this request: strict parse (the
/// downgrade guard) and the outer payload-id check.
fn receive(body: &[u8], payload_id: &str) -> Result<v1::Package> {
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
    Ok(package)
}

/// Opens a received package: decryption, chat-completion parse, the
/// payload id inside the authenticated answer, client-side `_metadata`.
fn open_package(
    package: &v1::Package,
    payload_id: &str,
    key: &PrivateKey,
) -> Result<ChatCompletion> {
    let plaintext = v1::open(package, key).map_err(Error::Security)?;
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
