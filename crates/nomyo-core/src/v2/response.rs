//! Response keys bound to the request (EHBP §4.4, following RFC 9458 §4.4) and
//! the response chunk sealer/opener.
//!
//! ```text
//! secret = context.Export("ehbp response", 32)
//! prk    = HKDF-Extract(salt = enc || response_nonce, secret)
//! key    = HKDF-Expand(prk, "key", 32)
//! nonce  = HKDF-Expand(prk, "nonce", 12)
//! chunk i is sealed with AES-256-GCM under key, nonce XOR i, empty AAD
//! ```

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf::{KeyType, Salt, HKDF_SHA256};

use super::framing::encode_frame;
use super::V2Error;
use crate::secure_memory::SecretBuf;

/// Length of `Ehbp-Response-Nonce`: max(Nn, Nk) = 32 for AES-256-GCM.
pub const RESPONSE_NONCE_LEN: usize = 32;
/// Exported secret length (Nk).
pub const EXPORT_LEN: usize = 32;
const NN: usize = 12;
const NK: usize = 32;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// A fresh random response nonce.
pub fn random_response_nonce() -> Result<[u8; RESPONSE_NONCE_LEN], V2Error> {
    let mut n = [0u8; RESPONSE_NONCE_LEN];
    aws_lc_rs::rand::fill(&mut n).map_err(|_| V2Error::HpkeSetupFailed)?;
    Ok(n)
}

/// Parses the `Ehbp-Response-Nonce` header value (64 lowercase or uppercase hex digits).
pub fn parse_response_nonce(value: &str) -> Result<[u8; RESPONSE_NONCE_LEN], V2Error> {
    let mut out = [0u8; RESPONSE_NONCE_LEN];
    hex::decode_to_slice(value.trim(), &mut out).map_err(|_| V2Error::InvalidResponseNonce)?;
    Ok(out)
}

/// Derives the response AEAD key and base nonce (EHBP §4.4.1 steps 3–4).
pub fn derive_response_keys(
    exported_secret: &[u8],
    enc: &[u8],
    response_nonce: &[u8],
) -> Result<(SecretBuf, [u8; NN]), V2Error> {
    if response_nonce.len() != RESPONSE_NONCE_LEN {
        return Err(V2Error::InvalidResponseNonce);
    }
    let mut salt = Vec::with_capacity(enc.len() + response_nonce.len());
    salt.extend_from_slice(enc);
    salt.extend_from_slice(response_nonce);
    let prk = Salt::new(HKDF_SHA256, &salt).extract(exported_secret);
    let mut key = SecretBuf::zeroed(NK);
    prk.expand(&[b"key"], Len(NK))
        .and_then(|okm| okm.fill(key.expose_secret_mut()))
        .map_err(|_| V2Error::HpkeSetupFailed)?;
    let mut nonce = [0u8; NN];
    prk.expand(&[b"nonce"], Len(NN))
        .and_then(|okm| okm.fill(&mut nonce))
        .map_err(|_| V2Error::HpkeSetupFailed)?;
    Ok((key, nonce))
}

/// AES-256-GCM with the EHBP nonce schedule: nonce for chunk `i` is the base
/// nonce XOR `i` (big-endian, right-aligned, as RFC 9180 §5.2 `ComputeNonce`).
struct ChunkAead {
    key: LessSafeKey,
    base: [u8; NN],
    seq: u64,
}

impl ChunkAead {
    fn new(exported_secret: &[u8], enc: &[u8], response_nonce: &[u8]) -> Result<Self, V2Error> {
        let (key, base) = derive_response_keys(exported_secret, enc, response_nonce)?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key.expose_secret())
                .map_err(|_| V2Error::HpkeSetupFailed)?,
        );
        Ok(Self { key, base, seq: 0 })
    }

    fn nonce(&self) -> Nonce {
        let mut n = self.base;
        for (b, s) in n[NN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }

    fn advance(&mut self) -> Result<(), V2Error> {
        self.seq = self.seq.checked_add(1).ok_or(V2Error::SequenceOverflow)?;
        Ok(())
    }
}

/// Server side: seals response chunks.
pub struct ResponseSealer(ChunkAead);

impl ResponseSealer {
    pub(crate) fn new(exported_secret: &[u8], enc: &[u8], nonce: &[u8]) -> Result<Self, V2Error> {
        ChunkAead::new(exported_secret, enc, nonce).map(Self)
    }

    /// Seals one chunk and returns it framed (`len || ciphertext || tag`).
    /// An empty plaintext gives no frame (receivers would ignore it anyway).
    pub fn seal_chunk(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, V2Error> {
        let mut out = Vec::new();
        self.seal_chunk_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// Like [`Self::seal_chunk`], appending to `out`.
    pub fn seal_chunk_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), V2Error> {
        if plaintext.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.0
            .key
            .seal_in_place_append_tag(self.0.nonce(), Aad::empty(), &mut buf)
            .map_err(|_| V2Error::HpkeSetupFailed)?;
        self.0.advance()?;
        encode_frame(&buf, out);
        Ok(())
    }
}

impl std::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResponseSealer(seq {}, [redacted])", self.0.seq)
    }
}

/// Client side: opens response chunks in order.
pub struct ResponseOpener(ChunkAead);

impl ResponseOpener {
    /// From a session recovery token's parts (EHBP §6.2) or an exported secret.
    pub fn new(exported_secret: &[u8], enc: &[u8], nonce: &[u8]) -> Result<Self, V2Error> {
        ChunkAead::new(exported_secret, enc, nonce).map(Self)
    }

    /// Opens one frame's ciphertext (without its length prefix). The plaintext
    /// is returned only after the frame authenticated.
    pub fn open_chunk(&mut self, ciphertext: &[u8]) -> Result<SecretBuf, V2Error> {
        if ciphertext.len() < TAG_LEN {
            return Err(V2Error::AeadDecryptFailed);
        }
        let (ct, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
        let mut out = SecretBuf::zeroed(ct.len());
        self.0
            .key
            .open_separate_gather(
                self.0.nonce(),
                Aad::empty(),
                ct,
                tag,
                out.expose_secret_mut(),
            )
            .map_err(|_| V2Error::AeadDecryptFailed)?;
        self.0.advance()?;
        Ok(out)
    }
}

impl std::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResponseOpener(seq {}, [redacted])", self.0.seq)
    }
}
