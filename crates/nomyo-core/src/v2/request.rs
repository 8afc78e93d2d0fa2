//! The request body: sealed by the client under `SetupBaseS(pk, "ehbp request")`,
//! opened by the server under `SetupBaseR` (EHBP §4.1, §4.4.1). Each chunk is
//! one HPKE `Seal`/`Open` with empty AAD; the context's sequence number gives
//! every chunk its own nonce, so reordering or dropping chunks fails to open.

use hpke::aead::{AeadCtxR, AeadCtxS, AeadTag, AesGcm256};
use hpke::inout::InOutBuf;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem as KemTrait, OpModeR, OpModeS, Serializable};

use super::framing::encode_frame;
use super::keys::{Kem, KeyConfig, ServerKeyPair, ServerSecret};
use super::response::{ResponseOpener, ResponseSealer, EXPORT_LEN, TAG_LEN};
use super::{V2Error, REQUEST_INFO, RESPONSE_EXPORT_LABEL};
use crate::secure_memory::SecretBuf;

enum SenderCtx {
    X25519(AeadCtxS<AesGcm256, HkdfSha256, X25519HkdfSha256>),
    XWing(AeadCtxS<AesGcm256, HkdfSha256, XWing>),
}

enum ReceiverCtx {
    X25519(AeadCtxR<AesGcm256, HkdfSha256, X25519HkdfSha256>),
    XWing(AeadCtxR<AesGcm256, HkdfSha256, XWing>),
}

/// The sender context of our only suite (HKDF-SHA256, AES-256-GCM) over KEM `K`.
type SenderOf<K> = AeadCtxS<AesGcm256, HkdfSha256, K>;

fn setup_sender<K: KemTrait>(public_key: &[u8]) -> Result<(Vec<u8>, SenderOf<K>), V2Error> {
    let pk = K::PublicKey::from_bytes(public_key)
        .map_err(|_| V2Error::InvalidKeyConfig("bad public key".into()))?;
    let (enc, ctx) =
        hpke::setup_sender::<AesGcm256, HkdfSha256, K>(&OpModeS::Base, &pk, REQUEST_INFO)
            .map_err(|_| V2Error::HpkeSetupFailed)?;
    Ok((enc.to_bytes().to_vec(), ctx))
}

fn setup_receiver<K: KemTrait>(
    sk: &K::PrivateKey,
    enc: &[u8],
) -> Result<AeadCtxR<AesGcm256, HkdfSha256, K>, V2Error> {
    let enc = K::EncappedKey::from_bytes(enc)
        .map_err(|_| V2Error::InvalidEncapsulatedKey("not a valid encapsulated key".into()))?;
    // Decapsulation failure is reported like an authentication failure (no oracle).
    hpke::setup_receiver::<AesGcm256, HkdfSha256, K>(&OpModeR::Base, sk, &enc, REQUEST_INFO)
        .map_err(|_| V2Error::AeadDecryptFailed)
}

fn seal_with<K: KemTrait>(
    ctx: &mut AeadCtxS<AesGcm256, HkdfSha256, K>,
    plaintext: &[u8],
) -> Result<Vec<u8>, V2Error> {
    ctx.seal(plaintext, b"").map_err(|e| match e {
        hpke::HpkeError::MessageLimitReached => V2Error::SequenceOverflow,
        _ => V2Error::HpkeSetupFailed,
    })
}

fn open_with<K: KemTrait>(
    ctx: &mut AeadCtxR<AesGcm256, HkdfSha256, K>,
    ciphertext: &[u8],
) -> Result<SecretBuf, V2Error> {
    if ciphertext.len() < TAG_LEN {
        return Err(V2Error::AeadDecryptFailed);
    }
    let (ct, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
    let tag = AeadTag::<AesGcm256>::from_bytes(tag).map_err(|_| V2Error::AeadDecryptFailed)?;
    // Decrypt in place inside secure memory.
    let mut buf = SecretBuf::from_slice(ct);
    ctx.open_inout_detached(InOutBuf::from(buf.expose_secret_mut()), b"", &tag)
        .map_err(|e| match e {
            hpke::HpkeError::MessageLimitReached => V2Error::SequenceOverflow,
            _ => V2Error::AeadDecryptFailed,
        })?;
    Ok(buf)
}

/// Client side: seals the request body and later opens the response.
pub struct RequestSealer {
    ctx: SenderCtx,
    enc: Vec<u8>,
    kem: Kem,
    key_id: u8,
}

impl std::fmt::Debug for RequestSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RequestSealer({}, key id {}, [redacted])",
            self.kem, self.key_id
        )
    }
}

impl RequestSealer {
    /// Sets up HPKE to the server's config with a fresh ephemeral key.
    /// Returns `enc` (for `Ehbp-Encapsulated-Key`, lowercase hex) and the sealer.
    pub fn new(config: &KeyConfig) -> Result<(Vec<u8>, Self), V2Error> {
        if !config.supports_our_suite() {
            return Err(V2Error::UnsupportedSuite(
                "the server offers no HKDF-SHA256 + AES-256-GCM suite".into(),
            ));
        }
        let (enc, ctx) = match config.kem {
            Kem::X25519 => {
                let (e, c) = setup_sender::<X25519HkdfSha256>(&config.public_key)?;
                (e, SenderCtx::X25519(c))
            }
            Kem::XWing => {
                let (e, c) = setup_sender::<XWing>(&config.public_key)?;
                (e, SenderCtx::XWing(c))
            }
        };
        Ok((
            enc.clone(),
            Self {
                ctx,
                enc,
                kem: config.kem,
                key_id: config.key_id,
            },
        ))
    }

    /// Seals one chunk; returns it framed.
    pub fn seal_chunk(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, V2Error> {
        let ct = match &mut self.ctx {
            SenderCtx::X25519(c) => seal_with(c, plaintext)?,
            SenderCtx::XWing(c) => seal_with(c, plaintext)?,
        };
        let mut out = Vec::with_capacity(ct.len() + 4);
        encode_frame(&ct, &mut out);
        Ok(out)
    }

    /// The exported response secret (EHBP §4.4.1 step 1), e.g. for a session
    /// recovery token. Treat it as key material.
    pub fn exported_secret(&self) -> Result<SecretBuf, V2Error> {
        let mut s = SecretBuf::zeroed(EXPORT_LEN);
        match &self.ctx {
            SenderCtx::X25519(c) => c.export(RESPONSE_EXPORT_LABEL, s.expose_secret_mut()),
            SenderCtx::XWing(c) => c.export(RESPONSE_EXPORT_LABEL, s.expose_secret_mut()),
        }
        .map_err(|_| V2Error::HpkeSetupFailed)?;
        Ok(s)
    }

    /// The opener for the response that carries `response_nonce`.
    pub fn response_opener(&self, response_nonce: &[u8]) -> Result<ResponseOpener, V2Error> {
        ResponseOpener::new(
            self.exported_secret()?.expose_secret(),
            &self.enc,
            response_nonce,
        )
    }

    /// The encapsulated key.
    pub fn enc(&self) -> &[u8] {
        &self.enc
    }

    /// The KEM in use.
    pub fn kem(&self) -> Kem {
        self.kem
    }

    /// The key id of the config sealed to.
    pub fn key_id(&self) -> u8 {
        self.key_id
    }
}

/// Server side: opens the request body and later seals the response.
pub struct RequestOpener {
    ctx: ReceiverCtx,
    enc: Vec<u8>,
    kem: Kem,
}

impl std::fmt::Debug for RequestOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestOpener({}, [redacted])", self.kem)
    }
}

impl RequestOpener {
    /// Sets up the HPKE receiver for `enc` with `key`. A wrong-length `enc` is
    /// `INVALID_ENCAPSULATED_KEY`; a decapsulation failure is `AEAD_DECRYPT_FAILED`.
    pub fn new(key: &ServerKeyPair, enc: &[u8]) -> Result<Self, V2Error> {
        let kem = key.kem();
        if enc.len() != kem.enc_len() {
            return Err(V2Error::InvalidEncapsulatedKey(format!(
                "{} bytes; {} needs {}",
                enc.len(),
                kem,
                kem.enc_len()
            )));
        }
        let ctx = match &key.secret {
            ServerSecret::X25519(sk) => {
                ReceiverCtx::X25519(setup_receiver::<X25519HkdfSha256>(sk, enc)?)
            }
            ServerSecret::XWing(sk) => ReceiverCtx::XWing(setup_receiver::<XWing>(sk, enc)?),
        };
        Ok(Self {
            ctx,
            enc: enc.to_vec(),
            kem,
        })
    }

    /// Opens one frame's ciphertext (without its prefix), in order.
    pub fn open_chunk(&mut self, ciphertext: &[u8]) -> Result<SecretBuf, V2Error> {
        match &mut self.ctx {
            ReceiverCtx::X25519(c) => open_with(c, ciphertext),
            ReceiverCtx::XWing(c) => open_with(c, ciphertext),
        }
    }

    /// The sealer for the response, bound to this request.
    pub fn response_sealer(&self, response_nonce: &[u8]) -> Result<ResponseSealer, V2Error> {
        let mut s = SecretBuf::zeroed(EXPORT_LEN);
        match &self.ctx {
            ReceiverCtx::X25519(c) => c.export(RESPONSE_EXPORT_LABEL, s.expose_secret_mut()),
            ReceiverCtx::XWing(c) => c.export(RESPONSE_EXPORT_LABEL, s.expose_secret_mut()),
        }
        .map_err(|_| V2Error::HpkeSetupFailed)?;
        ResponseSealer::new(s.expose_secret(), &self.enc, response_nonce)
    }

    /// The KEM the request used.
    pub fn kem(&self) -> Kem {
        self.kem
    }
}

/// Decodes the `Ehbp-Encapsulated-Key` header (lowercase hex per the spec;
/// upper case accepted).
pub fn parse_encapsulated_key(value: &str) -> Result<Vec<u8>, V2Error> {
    let v = value.trim();
    if v.is_empty() || v.len() > 2 * 4096 {
        return Err(V2Error::InvalidEncapsulatedKey("empty or too long".into()));
    }
    hex::decode(v).map_err(|_| V2Error::InvalidEncapsulatedKey("not hex".into()))
}
