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
    const T0: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    fn v() -> Validity {
        Validity::new(T0, T0 + DAY).unwrap()
    }

    #[test]
    fn message_is_context_validity_then_body() {
        let m = signed_message(Validity::new(1, 0x0102).unwrap(), b"ab");
        let mut want = b"nomyo v2 hpke-keys validity\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend_from_slice(b"ab");
        assert_eq!(m, want);
    }

    #[test]
    fn validity_windows() {
        assert!(Validity::new(5, 5).is_none());
        assert!(Validity::new(6, 5).is_none());
        assert!(Validity::new(0, MAX_VALIDITY_SECS).is_some());
        assert!(Validity::new(0, MAX_VALIDITY_SECS + 1).is_none());
        let w = v();
        assert_eq!(w.check(T0), Ok(()));
        assert_eq!(w.check(T0 + DAY), Ok(()));
        assert_eq!(w.check(T0 - CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(w.check(T0 + DAY + CLOCK_SKEW_SECS), Ok(()));
        assert!(matches!(
            w.check(T0 - CLOCK_SKEW_SECS - 1),
            Err(KeysSignatureError::NotYetValid { .. })
        ));
        assert!(matches!(
            w.check(T0 + DAY + CLOCK_SKEW_SECS + 1),
            Err(KeysSignatureError::Expired { .. })
        ));
        assert!(w.check(u64::MAX).is_err());
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
        let s = KeysSignature::sign(key(0), BODY, v()).unwrap();
        let h = s.to_header_value();
        assert!(
            h.starts_with(&format!(
                "rsa-pss-sha256;key={};nbf={T0};exp={};sig=",
                key(0).public_key().fingerprint(),
                T0 + DAY
            )),
            "{h}"
        );
        let p = KeysSignature::parse(&h).unwrap();
        assert_eq!(p, s);
        assert_eq!(p.validity(), v());
        assert_eq!(p.verify(key(0).public_key(), BODY, T0 + 10), Ok(()));
        // Another body (tampered key list): refused.
        assert_eq!(
            p.verify(key(0).public_key(), b"other", T0 + 10),
            Err(KeysSignatureError::BadSignature)
        );
        // The signature is not over the body alone (domain separation).
        assert!(key(0)
            .public_key()
            .verify_pss_sha256(BODY, p.signature())
            .is_err());
        // Another trusted key: refused before any RSA work.
        assert!(matches!(
            p.verify(key(1).public_key(), BODY, T0 + 10),
            Err(KeysSignatureError::WrongKey { .. })
        ));
        // A signature by key 1 that claims to be by key 0.
        let forged = KeysSignature {
            key: key(0).public_key().fingerprint(),
            validity: v(),
            signature: key(1).sign_pss_sha256(&signed_message(v(), BODY)).unwrap(),
        };
        assert_eq!(
            forged.verify(key(0).public_key(), BODY, T0 + 10),
            Err(KeysSignatureError::BadSignature)
        );
        // Spaces and parameter order are tolerated.
        let fp = key(0).public_key().fingerprint();
        let b64 = base64::engine::general_purpose::STANDARD.encode(s.signature());
        let loose = format!(
            "RSA-PSS-SHA256 ; exp={} ; sig={b64} ; nbf={T0}; key={fp}",
            T0 + DAY
        );
        assert_eq!(KeysSignature::parse(&loose).unwrap(), s);
    }

    /// A list captured while valid and replayed after its window, and a
    /// window moved by the replayer: both refused.
    #[test]
    fn replayed_expired_list_is_refused() {
        let s = KeysSignature::sign(key(0), BODY, v()).unwrap();
        let p = KeysSignature::parse(&s.to_header_value()).unwrap();
        let later = T0 + DAY + CLOCK_SKEW_SECS + 1;
        assert_eq!(
            p.verify(key(0).public_key(), BODY, later),
            Err(KeysSignatureError::Expired {
                not_after: T0 + DAY,
                now: later
            })
        );
        assert!(matches!(
            p.verify(key(0).public_key(), BODY, T0 - 3600),
            Err(KeysSignatureError::NotYetValid { .. })
        ));
        // Stretching the window in the header breaks the signature.
        let b64 = base64::engine::general_purpose::STANDARD.encode(s.signature());
        let fp = key(0).public_key().fingerprint();
        let stretched = format!(
            "rsa-pss-sha256;key={fp};nbf={T0};exp={};sig={b64}",
            T0 + 2 * DAY
        );
        let p = KeysSignature::parse(&stretched).unwrap();
        assert_eq!(
            p.verify(key(0).public_key(), BODY, T0 + DAY + DAY / 2),
            Err(KeysSignatureError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let fp = key(0).public_key().fingerprint();
        let sig = "AAAA";
        let w = format!("nbf={T0};exp={}", T0 + DAY);
        for bad in [
            String::new(),
            "rsa-pss-sha256".to_owned(),
            format!("key={fp};{w};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};{w}"),
            format!("rsa-pss-sha256;{w};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};{w};sig={sig};key={fp}"),
            format!("rsa-pss-sha256;key={fp};{w};sig={sig};x=1"),
            format!("rsa-pss-sha256;key=sha256:12;{w};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};{w};sig=not base64!"),
            format!("rsa-pss-sha256;key={fp};{w};sig="),
            format!("rsa-pss-sha256;key={fp};{w};sig"),
            format!("rsa-pss-sha256;key={fp};{w};sig={}", "A".repeat(1500)),
            format!("rsa-pss-sha256;key={fp};{w};sig={}", "A".repeat(3000)),
            // The old syntax, without a validity window.
            format!("rsa-pss-sha256;key={fp};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};nbf={T0};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};exp={T0};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};{w};nbf={T0};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};nbf=-1;exp={T0};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};nbf=+1;exp={T0};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};nbf=1;exp=99999999999999999999999;sig={sig}"),
            format!("rsa-pss-sha256;key={fp};nbf={T0};exp={T0};sig={sig}"),
            format!("rsa-pss-sha256;key={fp};nbf={};exp={T0};sig={sig}", T0 + 1),
            format!("rsa-pss-sha256;key={fp};nbf=0;exp={};sig={sig}", 40 * DAY),
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
            KeysSignature::parse(&format!("rsa-pkcs1-sha1;key={fp};{w};sig={sig}")),
            Err(KeysSignatureError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn debug_shows_no_signature_bytes() {
        let s = KeysSignature::sign(key(0), BODY, v()).unwrap();
        let d = format!("{s:?}");
        assert!(d.contains("signature_bytes: 256"), "{d}");
    }
}
