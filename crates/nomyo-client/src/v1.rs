//! Protocol v1 on the client side (docs/PROTOCOL.md §3): the request sealed
//! to the server's RSA key with a fresh AES-256 key, the answer opened with
//! the client's key.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nomyo_core::keys::PrivateKey;
use nomyo_core::{v1, SecurityTier};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;

use crate::error::{Error, Result};
use crate::keys::ClientKeyCell;
use crate::request::{
    check_served_tier, parse_completion, serialise, wants_stream, RequestOptions,
};
use crate::server_keys::ServerKeys;
use crate::transport::Transport;
use crate::types::{ChatCompletion, ChatRequest};

const X_PAYLOAD_ID: HeaderName = HeaderName::from_static(nomyo_core::v1::HEADER_PAYLOAD_ID);
const X_PUBLIC_KEY: HeaderName = HeaderName::from_static(nomyo_core::v1::HEADER_PUBLIC_KEY);

/// Largest success body read: a 10 MiB plaintext (the protocol limit) is
/// about 13.4 MiB as base64 in a package.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Protocol v1's session: where its requests go. The layers under it (the
/// transport, the server's keys, the client key) come as arguments.
pub(crate) struct V1 {
    /// `POST /v1/chat/secure_completion`.
    pub(crate) chat_url: Url,
}

impl V1 {
    /// Sends one v1 request and returns its answer received but not yet
    /// decrypted: read whole, strictly parsed as a v1 package (version and
    /// algorithms checked) whose `payload_id`, when it has one, is the
    /// request's.
    ///
    /// The request is serialised into locked memory, sealed with a fresh
    /// AES-256 key and nonce to the cached server key, and sent; retries
    /// resend the same sealed bytes. If the server answers 400 and now
    /// publishes a different key (it rotated), the new key is verified like
    /// a first one and the request is sealed again to it, once.
    pub(crate) async fn send(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        client_key: &ClientKeyCell,
        request: &ChatRequest,
        options: &RequestOptions,
        requested_tier: Option<SecurityTier>,
    ) -> Result<UnopenedAnswer> {
        if wants_stream(request) {
            return Err(Error::InvalidInput(
                "streaming (\"stream\": true) is not supported by protocol v1".into(),
            ));
        }
        let plaintext = serialise(request)?;

        let (client_key, mut server_key) = tokio::try_join!(client_key.get(), keys.server_key(t))?;

        let mut headers = t.headers.clone();
        headers.insert(X_PUBLIC_KEY, client_key.header.clone());
        options.add_headers(&mut headers);

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
            let sent = t
                .retrier()
                .send(
                    || {
                        t.http
                            .post(self.chat_url.clone())
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
                        requested_tier,
                    });
                }
                Err(Error::InvalidRequest(api)) if !resealed => {
                    match keys.refresh_server_key(t, &server_key).await {
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
/// ([`Client::create_unopened`](crate::Client::create_unopened)).
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
    /// checks it as [`Client::create`](crate::Client::create) does: the payload id inside the
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
