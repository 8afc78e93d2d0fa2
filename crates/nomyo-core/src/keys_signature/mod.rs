//! Signed v2 key lists: the server's long-lived RSA key (the v1 key, which
//! clients already pin or record) vouches for its short-lived HPKE key
//! configs, as a TLS certificate key vouches for ephemeral handshake keys.
//!
//! The server answers `GET /.well-known/hpke-keys` with the header
//!
//! ```text
//! Nomyo-Keys-Signature: rsa-pss-sha256;key=sha256:<v1 fingerprint>;nbf=<unix s>;exp=<unix s>;sig=<base64>
//! ```
//!
//! where `sig` is RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) by the key
//! whose SPKI fingerprint is `key`, over [`signed_message`]: the ASCII
//! context `nomyo v2 hpke-keys validity`, one zero byte, the not-before and
//! not-after times (`nbf`, `exp`: seconds since the Unix epoch, each as 8
//! big-endian bytes), then the response body exactly as served (the
//! `application/ohttp-keys` list). The context makes the signature useless
//! for anything else; the body carries no origin, so a signature binds keys
//! to a server *key*, and the client checks that the key is the one it
//! trusts for the origin it talks to.
//!
//! The validity window makes a captured list worthless once it expires: a
//! list whose private keys leak after a rotation cannot be replayed to
//! clients for longer than the window the server signed (its rotation
//! period plus the grace period). Clients allow [`CLOCK_SKEW_SECS`] of clock
//! skew on both ends.
//!
//! A client that verifies the signature with the server's trusted v1 key
//! can accept every rotation of the HPKE keys without recording them.
//!
//! ```
//! use nomyo_core::keys::{PrivateKey, RsaBits};
//! use nomyo_core::keys_signature::{KeysSignature, Validity};
//! let server = PrivateKey::generate(RsaBits::B2048)?;
//! let body = b"\x00\x00\x20..."; // the application/ohttp-keys body
//! let validity = Validity::new(1_700_000_000, 1_700_000_000 + 86_400).unwrap();
//! let header = KeysSignature::sign(&server, body, validity)?.to_header_value();
//! let parsed = KeysSignature::parse(&header).unwrap();
//! assert!(parsed.verify(server.public_key(), body, 1_700_000_100).is_ok());
//! assert!(parsed.verify(server.public_key(), b"other keys", 1_700_000_100).is_err());
//! assert!(parsed.verify(server.public_key(), body, 1_800_000_000).is_err()); // expired
//! # Ok::<(), nomyo_core::Error>(())
//! ```

use std::fmt;

use base64::Engine as _;

use crate::error::Result;
use crate::keys::{Fingerprint, PrivateKey, PublicKey};

/// The response header that carries the signature (lowercase, as HTTP/2
/// sends it; header names are case-insensitive).
pub const HEADER: &str = "nomyo-keys-signature";

/// The only algorithm: RSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
pub const ALGORITHM: &str = "rsa-pss-sha256";

/// Domain separation: prefixed to the validity and the body before
/// signing. (Lists signed without a validity window used the context
/// `nomyo v2 hpke-keys`; they are no longer accepted.)
pub const CONTEXT: &[u8] = b"nomyo v2 hpke-keys validity\0";

/// Clock skew a verifier allows on each end of the validity window.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// Longest validity window a verifier accepts (and a signer produces):
/// 31 days. A list signed for longer would outlive any sane rotation.
pub const MAX_VALIDITY_SECS: u64 = 31 * 24 * 3600;

/// When a signed key list may be used: `[not_before, not_after]`, seconds
/// since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    not_before: u64,
    not_after: u64,
}

impl Validity {
    /// A window; `None` unless `not_before < not_after` and the window is at
    /// most [`MAX_VALIDITY_SECS`] long.
    pub fn new(not_before: u64, not_after: u64) -> Option<Self> {
        (not_before < not_after && not_after - not_before <= MAX_VALIDITY_SECS).then_some(Self {
            not_before,
            not_after,
        })
    }

    /// Start of the window (seconds since the Unix epoch).
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// End of the window (seconds since the Unix epoch).
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// Whether `now` falls inside the window, with [`CLOCK_SKEW_SECS`] of
    /// tolerance on each end.
    pub fn check(&self, now: u64) -> std::result::Result<(), KeysSignatureError> {
        if now.saturating_add(CLOCK_SKEW_SECS) < self.not_before {
            return Err(KeysSignatureError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after.saturating_add(CLOCK_SKEW_SECS) {
            return Err(KeysSignatureError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }
}

/// Longest header value accepted (an RSA-8192 signature is 1,368 base64
/// characters).
pub const MAX_HEADER_LEN: usize = 2048;

/// Largest signature accepted (RSA-8192).
const MAX_SIGNATURE_LEN: usize = 1024;

/// The bytes that are signed: [`CONTEXT`], the not-before and not-after
/// times as 8 big-endian bytes each, then the exact `application/ohttp-keys`
/// body served at `/.well-known/hpke-keys`.
pub fn signed_message(validity: Validity, keys_body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 16 + keys_body.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&validity.not_before.to_be_bytes());
    m.extend_from_slice(&validity.not_after.to_be_bytes());
    m.extend_from_slice(keys_body);
    m
}

/// Why a key-list signature is refused. Every case is a security failure:
/// a client must not use the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeysSignatureError {
    /// The header is not `rsa-pss-sha256;key=sha256:...;nbf=...;exp=...;sig=...`.
    Malformed(&'static str),
    /// An algorithm other than `rsa-pss-sha256`.
    UnsupportedAlgorithm,
    /// Signed by another key than the one trusted for the server.
    WrongKey {
        /// The trusted server key.
        expected: Fingerprint,
        /// The key the header names.
        found: Fingerprint,
    },
    /// The signature does not verify over this body with the trusted key
    /// (the key list, its validity or the signature was altered).
    BadSignature,
    /// The list's validity window ended (a list captured earlier and
    /// replayed, or a server that stopped re-signing its keys).
    Expired {
        /// End of the window (seconds since the Unix epoch).
        not_after: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The list's validity window has not started (a clock far behind, or
    /// a list signed for the future).
    NotYetValid {
        /// Start of the window (seconds since the Unix epoch).
        not_before: u64,
        /// The verifier's clock.
        now: u64,
    },
}

impl fmt::Display for KeysSignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed {HEADER} header: {what}"),
            Self::UnsupportedAlgorithm => {
                write!(f, "{HEADER} names an algorithm other than {ALGORITHM}")
            }
            Self::WrongKey { expected, found } => write!(
                f,
                "the key list is signed by {found}, not by the trusted server key {expected}"
            ),
            Self::BadSignature => f.write_str(
                "the key list's signature does not verify with the trusted server key (altered keys or signature)",
            ),
            Self::Expired { not_after, now } => write!(
                f,
                "the key list's signature expired at {not_after} (now {now}, Unix seconds): a replayed old list, or a server that no longer re-signs its keys"
            ),
            Self::NotYetValid { not_before, now } => write!(
                f,
                "the key list's signature is valid only from {not_before} (now {now}, Unix seconds): check this machine's clock"
            ),
        }
    }
}

impl std::error::Error for KeysSignatureError {}

/// A signature over a key list, as carried in [`HEADER`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeysSignature {
    key: Fingerprint,
    validity: Validity,
    signature: Vec<u8>,
}

impl fmt::Debug for KeysSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysSignature")
            .field("key", &self.key)
            .field("validity", &self.validity)
            .field("signature_bytes", &self.signature.len())
            .finish()
    }
}

impl KeysSignature {
    /// Signs `keys_body` (the exact `application/ohttp-keys` body) with the
    /// server's RSA key, for use within `validity`.
    pub fn sign(key: &PrivateKey, keys_body: &[u8], validity: Validity) -> Result<Self> {
        Ok(Self {
            key: key.public_key().fingerprint(),
            validity,
            signature: key.sign_pss_sha256(&signed_message(validity, keys_body))?,
        })
    }

    /// The validity window the signature claims (verified only by
    /// [`Self::verify`]).
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// Fingerprint of the key that made the signature (as claimed).
    pub fn key_fingerprint(&self) -> Fingerprint {
        self.key
    }

    /// The raw signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// `rsa-pss-sha256;key=sha256:<hex>;nbf=<unix s>;exp=<unix s>;sig=<base64, padded>`.
    pub fn to_header_value(&self) -> String {
        format!(
            "{ALGORITHM};key={};nbf={};exp={};sig={}",
            self.key,
            self.validity.not_before,
            self.validity.not_after,
            base64::engine::general_purpose::STANDARD.encode(&self.signature)
        )
    }

    /// Parses a header value strictly: the algorithm first, then exactly
    /// one `key`, `nbf`, `exp` and `sig` parameter (any order, spaces around
    /// `;` allowed; `nbf` and `exp` decimal seconds, at most 20 digits);
    /// anything else is refused.
    pub fn parse(value: &str) -> std::result::Result<Self, KeysSignatureError> {
        use KeysSignatureError::Malformed;
        if value.len() > MAX_HEADER_LEN {
            return Err(Malformed("too long"));
        }
        let mut parts = value.split(';').map(str::trim);
        let alg = parts.next().unwrap_or("");
        if !alg.eq_ignore_ascii_case(ALGORITHM) {
            return Err(if alg.is_empty() || alg.contains('=') {
                Malformed("no algorithm")
            } else {
                KeysSignatureError::UnsupportedAlgorithm
            });
        }
        let (mut key, mut sig, mut nbf, mut exp) = (None, None, None, None);
        let seconds = |v: &str| -> std::result::Result<u64, KeysSignatureError> {
            let v = v.trim();
            if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Malformed("nbf and exp are decimal Unix seconds"));
            }
            v.parse::<u64>()
                .map_err(|_| Malformed("nbf and exp are decimal Unix seconds"))
        };
        for p in parts {
            let (name, v) = p
                .split_once('=')
                .ok_or(Malformed("a parameter has no value"))?;
            match name.trim().to_ascii_lowercase().as_str() {
                "key" if key.is_none() => {
                    key = Some(
                        v.trim()
                            .parse::<Fingerprint>()
                            .map_err(|_| Malformed("key is not sha256:<64 hex digits>"))?,
                    );
                }
                "sig" if sig.is_none() => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .map_err(|_| Malformed("sig is not base64"))?;
                    if bytes.is_empty() || bytes.len() > MAX_SIGNATURE_LEN {
                        return Err(Malformed("sig has an impossible length"));
                    }
                    sig = Some(bytes);
                }
                "nbf" if nbf.is_none() => nbf = Some(seconds(v)?),
                "exp" if exp.is_none() => exp = Some(seconds(v)?),
                "key" | "sig" | "nbf" | "exp" => return Err(Malformed("a parameter is repeated")),
                _ => return Err(Malformed("unknown parameter")),
            }
        }
        match (key, nbf, exp, sig) {
            (Some(key), Some(nbf), Some(exp), Some(signature)) => Ok(Self {
                key,
                validity: Validity::new(nbf, exp)
                    .ok_or(Malformed("nbf must precede exp, by at most 31 days"))?,
                signature,
            }),
            (_, None, _, _) | (_, _, None, _) => Err(Malformed(
                "nbf or exp is missing (a list signed without a validity window)",
            )),
            _ => Err(Malformed("key or sig is missing")),
        }
    }

    /// Checks that the signature is by `trusted` (the server key the client
    /// already trusts: pinned or recorded), that it covers `keys_body` and
    /// its validity window, and that `now` (the verifier's clock, Unix
    /// seconds) falls in that window, give or take [`CLOCK_SKEW_SECS`].
    /// The signature is checked before the time, so a forged window is
    /// reported as a bad signature, never as expired.
    pub fn verify(
        &self,
        trusted: &PublicKey,
        keys_body: &[u8],
        now: u64,
    ) -> std::result::Result<(), KeysSignatureError> {
        let expected = trusted.fingerprint();
        if self.key != expected {
            return Err(KeysSignatureError::WrongKey {
                expected,
                found: self.key,
            });
        }
        trusted
            .verify_pss_sha256(&signed_message(self.validity, keys_body), &self.signature)
            .map_err(|_| KeysSignatureError::BadSignature)?;
        self.validity.check(now)
    }
}

#[cfg(test)]
mod tests;
