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

use std::pin::Pin;

use futures::Stream;
use nomyo_core::v2::response::TAG_LEN;
use nomyo_core::v2::V2Error;
use reqwest::Url;

use crate::error::{Error, Result};

mod exchange;
mod stream;

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

/// Which protocol a [`Client`](crate::Client) speaks.
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

/// Protocol v2's session: where its requests go. The layers under it (the
/// transport, the server's keys, the attestation requirement) come as
/// arguments.
pub(crate) struct V2 {
    /// `POST /v1/chat/completions`.
    pub(crate) completions_url: Url,
}

fn v2_err(e: V2Error) -> Error {
    Error::V2Security(e)
}

/// An async stream of decrypted chunks. It ends normally only after
/// `data: [DONE]` was decrypted; a cut or tampered stream yields an error
/// as its last item.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk>> + Send>>;
