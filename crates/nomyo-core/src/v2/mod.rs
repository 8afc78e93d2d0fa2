//! Protocol v2: the Encrypted HTTP Body Protocol (EHBP, Tinfoil SPEC v0.3.1)
//! with an extra post-quantum suite (docs/PROTOCOL.md §4).
//!
//! - [`keys`]: HPKE key configurations (RFC 9458 §3 `key_config`) and server key pairs
//!   for DHKEM(X25519, HKDF-SHA256) and X-Wing (ML-KEM-768 + X25519).
//! - [`key_file`]: the server's HPKE key file (`hpke_keys.key`), parsed and encoded.
//! - [`framing`]: the length-prefixed chunk framing of both bodies (EHBP §4.3).
//! - [`request`]: sealing a request body (client) and opening it (server), EHBP §4.1.
//! - [`response`]: the response keys bound to the request (EHBP §4.4) and the
//!   response chunk sealer/opener.
//!
//! HPKE (RFC 9180) comes from the `hpke` crate; HKDF and AES-256-GCM for the
//! response direction from aws-lc-rs. No primitive is written here.
//!
//! ```
//! use nomyo_core::v2::{keys::{Kem, ServerKeyPair}, request, framing::FrameDecoder};
//! let server = ServerKeyPair::generate(1, Kem::XWing);
//! // Client
//! let (enc, mut sealer) = request::RequestSealer::new(server.config())?;
//! let body = sealer.seal_chunk(br#"{"model":"m"}"#)?;
//! // Server
//! let mut opener = request::RequestOpener::new(&server, &enc)?;
//! let mut frames = FrameDecoder::new(1 << 20);
//! frames.push(&body);
//! let frame = frames.next_frame()?.expect("one frame");
//! assert_eq!(opener.open_chunk(&frame)?.expose_secret(), br#"{"model":"m"}"#);
//! let nonce = nomyo_core::v2::response::random_response_nonce()?;
//! let mut rs = opener.response_sealer(&nonce)?;
//! let answer = rs.seal_chunk(b"hello")?;
//! // Client again
//! let mut ro = sealer.response_opener(&nonce)?;
//! let mut frames = FrameDecoder::new(1 << 20);
//! frames.push(&answer);
//! assert_eq!(ro.open_chunk(&frames.next_frame()?.unwrap())?.expose_secret(), b"hello");
//! # Ok::<(), nomyo_core::v2::V2Error>(())
//! ```

pub mod framing;
pub mod key_file;
pub mod keys;
pub mod request;
pub mod response;

/// HPKE `info` for the request context (EHBP §4.4.1).
pub const REQUEST_INFO: &[u8] = b"ehbp request";
/// HPKE export label for the response secret (EHBP §4.4.1).
pub const RESPONSE_EXPORT_LABEL: &[u8] = b"ehbp response";
/// `GET`: the key list, `application/ohttp-keys` (docs/PROTOCOL.md §4).
pub const HPKE_KEYS_PATH: &str = "/.well-known/hpke-keys";
/// `POST`: an EHBP-encrypted chat completion (the OpenAI path).
pub const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";
/// Request header carrying the hex `enc`.
pub const HEADER_ENCAPSULATED_KEY: &str = "ehbp-encapsulated-key";
/// Response header carrying the hex response nonce.
pub const HEADER_RESPONSE_NONCE: &str = "ehbp-response-nonce";
/// Our addition: the `key_id` of the config the client used.
pub const HEADER_KEY_ID: &str = "nomyo-key-id";
/// Media type of the key list.
pub const KEYS_CONTENT_TYPE: &str = "application/ohttp-keys";
/// Problem type of a 422 key-configuration mismatch (EHBP §5.4.2).
pub const KEY_CONFIG_PROBLEM_TYPE: &str = "urn:ietf:params:ehbp:error:key-config";

/// Domain separator of the request's replay key and payload id.
pub const ENC_REPLAY_DOMAIN: &[u8] = b"nomyo-v2-enc\0";

/// The replay key of a request's `enc` (docs/PROTOCOL.md §7):
/// SHA-256(`"nomyo-v2-enc\0"` || `enc`).
pub fn enc_replay_key(enc: &[u8]) -> [u8; 32] {
    crate::keys::Fingerprint::of_parts(&[ENC_REPLAY_DOMAIN, enc]).0
}

/// A v2 request's public payload id (docs/PROTOCOL.md §1.7): the first 8
/// bytes of [`enc_replay_key`], in hex. The client computes it from its
/// own `enc`; the server states it in the sealed `_metadata` and derives a
/// per-answer TPM quote from it.
pub fn payload_id(enc: &[u8]) -> String {
    hex::encode(&enc_replay_key(enc)[..8])
}

/// The error classes of EHBP §5.5, as one typed value. Messages follow the
/// spec's `<CODE>: <detail>` form and never contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum V2Error {
    /// Key config unparseable, or an unsupported suite.
    #[error("INVALID_KEY_CONFIG: {0}")]
    InvalidKeyConfig(String),
    /// The key config advertises a KEM/KDF/AEAD we do not implement.
    #[error("UNSUPPORTED_SUITE: {0}")]
    UnsupportedSuite(String),
    /// `Ehbp-Encapsulated-Key` not hex, or of the wrong length.
    #[error("INVALID_ENCAPSULATED_KEY: {0}")]
    InvalidEncapsulatedKey(String),
    /// HPKE setup, seal, export or response key derivation failed.
    #[error("HPKE_SETUP_FAILED")]
    HpkeSetupFailed,
    /// `Ehbp-Response-Nonce` missing on a 2xx answer to an encrypted request.
    #[error("MISSING_RESPONSE_NONCE: the response is not encrypted")]
    MissingResponseNonce,
    /// `Ehbp-Response-Nonce` not hex or not 32 bytes.
    #[error("INVALID_RESPONSE_NONCE")]
    InvalidResponseNonce,
    /// Body ended inside a length prefix or a frame.
    #[error("FRAMING_TRUNCATED: the body ended inside a frame")]
    FramingTruncated,
    /// A frame's length exceeds the receiver's maximum.
    #[error("CHUNK_TOO_LARGE: frame of {len} bytes exceeds the limit of {max}")]
    ChunkTooLarge {
        /// Announced length.
        len: usize,
        /// Receiver limit.
        max: usize,
    },
    /// A frame failed authentication (one opaque error for every cause).
    #[error("AEAD_DECRYPT_FAILED: decryption failed")]
    AeadDecryptFailed,
    /// The frame sequence number is exhausted.
    #[error("SEQUENCE_OVERFLOW")]
    SequenceOverflow,
    /// Session recovery token malformed.
    #[error("INVALID_TOKEN: {0}")]
    InvalidToken(String),
}

#[cfg(test)]
mod payload_id_tests {
    #[test]
    fn the_payload_id_is_the_first_8_bytes_of_the_enc_replay_key() {
        let enc = [7u8; 32];
        let mut msg = super::ENC_REPLAY_DOMAIN.to_vec();
        msg.extend(enc);
        let digest = crate::keys::Fingerprint::of_bytes(&msg).0;
        assert_eq!(super::enc_replay_key(&enc), digest);
        assert_eq!(super::payload_id(&enc), hex::encode(&digest[..8]));
        assert_ne!(super::payload_id(&enc), super::payload_id(&[8u8; 32]));
    }
}
