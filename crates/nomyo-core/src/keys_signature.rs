//! Signed v2 key lists: the server's long-lived RSA key (the v1 key, which
//! clients already pin or record) vouches for its short-lived HPKE key
//! configs, as a TLS certificate key vouches for ephemeral handshake keys.
//!
//! The server answers `GET /.well-known/hpke-keys` with the header
//!
//! ```text
//! Nomyo-Keys-Signature: rsa-pss-sha256;key=sha256:<v1 fingerprint>;sig=<base64>
//! ```
//!
//! where `sig` is RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) by the key
//! whose SPKI fingerprint is `key`, over [`signed_message`]: the ASCII
//! context `nomyo v2 hpke-keys`, one zero byte, then the response body
//! exactly as served (the `application/ohttp-keys` list). The context makes
//! the signature useless for anything else; the body carries no origin, so a
//! signature binds keys to a server *key*, and the client checks that the
//! key is the one it trusts for the origin it talks to.
//!
//! A client that verifies the signature with the server's trusted v1 key
//! can accept every rotation of the HPKE keys without recording them.
//!
//! ```
//! use nomyo_core::keys::{PrivateKey, RsaBits};
//! use nomyo_core::keys_signature::KeysSignature;
//! let server = PrivateKey::generate(RsaBits::B2048)?;
//! let body = b"\x00\x00\x20..."; // the application/ohttp-keys body
//! let header = KeysSignature::sign(&server, body)?.to_header_value();
//! let parsed = KeysSignature::parse(&header).unwrap();
//! assert!(parsed.verify(server.public_key(), body).is_ok());
//! assert!(parsed.verify(server.public_key(), b"other keys").is_err());
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

/// Domain separation: prefixed to the body before signing.
pub const CONTEXT: &[u8] = b"nomyo v2 hpke-keys\0";

/// Longest header value accepted (an RSA-8192 signature is 1,368 base64
/// characters).
pub const MAX_HEADER_LEN: usize = 2048;

/// Largest signature accepted (RSA-8192).
const MAX_SIGNATURE_LEN: usize = 1024;

/// The bytes that are signed: [`CONTEXT`] followed by the exact
/// `application/ohttp-keys` body served at `/.well-known/hpke-keys`.
pub fn signed_message(keys_body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + keys_body.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(keys_body);
    m
}

/// Why a key-list signature is refused. Every case is a security failure:
/// a client must not use the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeysSignatureError {
    /// The header is not `rsa-pss-sha256;key=sha256:...;sig=...`.
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
    /// (the key list or the signature was altered).
    BadSignature,
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
        }
    }
}

impl std::error::Error for KeysSignatureError {}

/// A signature over a key list, as carried in [`HEADER`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeysSignature {
    key: Fingerprint,
    signature: Vec<u8>,
}

impl fmt::Debug for KeysSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysSignature")
            .field("key", &self.key)
            .field("signature_bytes", &self.signature.len())
            .finish()
    }
}

impl KeysSignature {
    /// Signs `keys_body` (the exact `application/ohttp-keys` body) with the
    /// server's RSA key.
    pub fn sign(key: &PrivateKey, keys_body: &[u8]) -> Result<Self> {
        Ok(Self {
            key: key.public_key().fingerprint(),
            signature: key.sign_pss_sha256(&signed_message(keys_body))?,
        })
    }

    /// Fingerprint of the key that made the signature (as claimed).
    pub fn key_fingerprint(&self) -> Fingerprint {
        self.key
    }

    /// The raw signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// `rsa-pss-sha256;key=sha256:<hex>;sig=<base64, padded>`.
    pub fn to_header_value(&self) -> String {
        format!(
            "{ALGORITHM};key={};sig={}",
            self.key,
            base64::engine::general_purpose::STANDARD.encode(&self.signature)
        )
    }

    /// Parses a header value strictly: the algorithm first, then exactly
    /// one `key` and one `sig` parameter (either order, spaces around `;`
    /// allowed); anything else is refused.
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
        let (mut key, mut sig) = (None, None);
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
                "key" | "sig" => return Err(Malformed("a parameter is repeated")),
                _ => return Err(Malformed("unknown parameter")),
            }
        }
        match (key, sig) {
            (Some(key), Some(signature)) => Ok(Self { key, signature }),
            _ => Err(Malformed("key or sig is missing")),
        }
    }

    /// Checks that the signature is by `trusted` (the server key the client
    /// already trusts: pinned or recorded) and that it covers `keys_body`.
    pub fn verify(
        &self,
        trusted: &PublicKey,
        keys_body: &[u8],
    ) -> std::result::Result<(), KeysSignatureError> {
        let expected = trusted.fingerprint();
        if self.key != expected {
            return Err(KeysSignatureError::WrongKey {
                expected,
                found: self.key,
            });
        }
        trusted
            .verify_pss_sha256(&signed_message(keys_body), &self.signature)
            .map_err(|_| KeysSignatureError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RsaBits;
    use std::sync::OnceLock;

    fn key(i: usize) -> &'static PrivateKey {
        static KEYS: OnceLock<[PrivateKey; 2]> = OnceLock::new();
        &KEYS.get_or_init(|| {
            [
                PrivateKey::generate(RsaBits::B2048).unwrap(),
                PrivateKey::generate(RsaBits::B2048).unwrap(),
            ]
        })[i]
    }

    const BODY: &[u8] = b"\x00\x20\x00\x00\x00\x01\x00\x01keys";

    #[test]
    fn message_is_context_then_body() {
        assert_eq!(signed_message(b"ab"), b"nomyo v2 hpke-keys\0ab".to_vec());
        assert_eq!(signed_message(b""), CONTEXT.to_vec());
    }

    #[test]
    fn pss_is_randomised_and_verifies() {
        let k = key(0);
        let a = k.sign_pss_sha256(b"m").unwrap();
        let b = k.sign_pss_sha256(b"m").unwrap();
        assert_eq!(a.len(), 256);
        assert_ne!(a, b, "PSS uses a random salt");
        assert!(k.public_key().verify_pss_sha256(b"m", &a).is_ok());
        assert!(k.public_key().verify_pss_sha256(b"m", &b).is_ok());
        assert!(k.public_key().verify_pss_sha256(b"n", &a).is_err());
        assert!(key(1).public_key().verify_pss_sha256(b"m", &a).is_err());
        let mut flipped = a.clone();
        flipped[100] ^= 1;
        assert!(k.public_key().verify_pss_sha256(b"m", &flipped).is_err());
        assert!(k.public_key().verify_pss_sha256(b"m", &a[1..]).is_err());
        assert!(k.public_key().verify_pss_sha256(b"m", &[]).is_err());
    }

    #[test]
    fn header_round_trip_and_verification() {
        let s = KeysSignature::sign(key(0), BODY).unwrap();
        let h = s.to_header_value();
        assert!(
            h.starts_with(&format!(
                "rsa-pss-sha256;key={};sig=",
                key(0).public_key().fingerprint()
            )),
            "{h}"
        );
        let p = KeysSignature::parse(&h).unwrap();
        assert_eq!(p, s);
        assert_eq!(p.verify(key(0).public_key(), BODY), Ok(()));
        // Another body (tampered key list): refused.
        assert_eq!(
            p.verify(key(0).public_key(), b"other"),
            Err(KeysSignatureError::BadSignature)
        );
        // The signature is not over the body alone (domain separation).
        assert!(key(0)
            .public_key()
            .verify_pss_sha256(BODY, p.signature())
            .is_err());
        // Another trusted key: refused before any RSA work.
        assert!(matches!(
            p.verify(key(1).public_key(), BODY),
            Err(KeysSignatureError::WrongKey { .. })
        ));
        // A signature by key 1 that claims to be by key 0.
        let forged = KeysSignature {
            key: key(0).public_key().fingerprint(),
            signature: key(1).sign_pss_sha256(&signed_message(BODY)).unwrap(),
        };
        assert_eq!(
            forged.verify(key(0).public_key(), BODY),
            Err(KeysSignatureError::BadSignature)
        );
        // Spaces and parameter order are tolerated.
        let fp = key(0).public_key().fingerprint();
        let b64 = base64::engine::general_purpose::STANDARD.encode(s.signature());
        let loose = format!("RSA-PSS-SHA256 ; sig={b64} ; key={fp}");
        assert_eq!(KeysSignature::parse(&loose).unwrap(), s);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let fp = key(0).public_key().fingerprint();
        let sig = "AAAA";
        for bad in [
            String::new(),
            "rsa-pss-sha256".to_owned(),
            format!("key={fp};sig={sig}"),
            format!("rsa-pss-sha256;key={fp}"),
            format!("rsa-pss-sha256;sig={sig}"),
            format!("rsa-pss-sha256;key={fp};sig={sig};key={fp}"),
            format!("rsa-pss-sha256;key={fp};sig={sig};x=1"),
            format!("rsa-pss-sha256;key=sha256:12;sig={sig}"),
            format!("rsa-pss-sha256;key={fp};sig=not base64!"),
            format!("rsa-pss-sha256;key={fp};sig="),
            format!("rsa-pss-sha256;key={fp};sig"),
            format!("rsa-pss-sha256;key={fp};sig={}", "A".repeat(1500)),
            format!("rsa-pss-sha256;key={fp};sig={}", "A".repeat(3000)),
        ] {
            assert!(
                matches!(
                    KeysSignature::parse(&bad),
                    Err(KeysSignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            KeysSignature::parse(&format!("rsa-pkcs1-sha1;key={fp};sig={sig}")),
            Err(KeysSignatureError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn debug_shows_no_signature_bytes() {
        let s = KeysSignature::sign(key(0), BODY).unwrap();
        let d = format!("{s:?}");
        assert!(d.contains("signature_bytes: 256"), "{d}");
    }
}
