//! The v1 package: its JSON shape, a strict parse and its serialisation
//! (docs/PROTOCOL.md §3.3 and §3.5).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{echo, Error, Result};

/// `version` of every v1 package.
pub const VERSION: &str = "1.0";
/// `algorithm` of every v1 package.
pub const ALGORITHM: &str = "hybrid-aes256-rsa4096";
/// `key_algorithm`.
pub const KEY_ALGORITHM: &str = "RSA-OAEP-SHA256";
/// `payload_algorithm`.
pub const PAYLOAD_ALGORITHM: &str = "AES-256-GCM";
/// AES-GCM nonce length (96 bits).
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// A v1 package with its binary fields decoded.
///
/// `Debug` shows sizes only: ciphertext is not secret, but there is no reason
/// to fill logs with it.
#[derive(Clone, PartialEq, Eq)]
pub struct Package {
    /// AES-256-GCM ciphertext (without tag).
    pub ciphertext: Vec<u8>,
    /// 12-byte nonce.
    pub nonce: [u8; NONCE_LEN],
    /// 16-byte tag.
    pub tag: [u8; TAG_LEN],
    /// RSA-OAEP-SHA256 encryption of the 32-byte AES key.
    pub encrypted_key: Vec<u8>,
    /// Response only: echo of `X-Payload-ID`.
    pub payload_id: Option<String>,
    /// Response only: Unix seconds when the server processed the request.
    pub processed_at: Option<i64>,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("encrypted_key_len", &self.encrypted_key.len())
            .field("payload_id", &self.payload_id)
            .field("processed_at", &self.processed_at)
            .finish()
    }
}

/// The JSON form, field for field. Unknown fields are refused: a package is
/// exactly what docs/PROTOCOL.md §3.3 lists and nothing else.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    version: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    algorithm: std::borrow::Cow<'a, str>,
    encrypted_payload: WirePayload<'a>,
    #[serde(borrow)]
    encrypted_aes_key: std::borrow::Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    key_algorithm: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    payload_algorithm: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    processed_at: Option<serde_json::Number>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePayload<'a> {
    #[serde(borrow)]
    ciphertext: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    nonce: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    tag: std::borrow::Cow<'a, str>,
}

/// Describes a serde error without echoing input bytes.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "truncated JSON".to_owned(),
        Category::Syntax => format!("invalid JSON at line {} column {}", e.line(), e.column()),
        Category::Io => "I/O error".to_owned(),
        // Data errors name fields ("missing field `nonce`", "unknown field
        // `x`", "invalid type: ..."): they describe structure, and serde only
        // quotes field names and short type descriptions.
        Category::Data => {
            let s = e.to_string();
            // Drop serde's " at line N column M" suffix.
            match s.find(" at line ") {
                Some(i) => s[..i].to_owned(),
                None => s,
            }
        }
    }
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>> {
    B64.decode(s.as_bytes())
        .map_err(|_| Error::Malformed(format!("{field} is not valid base64")))
}

fn fixed<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N]> {
    let v = b64(field, s)?;
    v.as_slice()
        .try_into()
        .map_err(|_| Error::Malformed(format!("{field} must be {N} bytes, found {}", v.len())))
}

impl Package {
    /// Strict parse of a package's JSON bytes.
    ///
    /// Refuses: invalid UTF-8 or JSON, trailing bytes, missing or unknown
    /// fields, a `version` other than `1.0` or an `algorithm` other than
    /// `hybrid-aes256-rsa4096` (the downgrade guard), `key_algorithm` /
    /// `payload_algorithm` other than the v1 ones when present, bad base64,
    /// a nonce that is not 12 bytes or a tag that is not 16.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::Malformed("empty body".into()));
        }
        let w: Wire<'_> =
            serde_json::from_slice(bytes).map_err(|e| Error::Malformed(describe(&e)))?;
        if w.version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: echo(&w.version),
                expected: VERSION,
            });
        }
        if w.algorithm != ALGORITHM {
            return Err(Error::UnsupportedAlgorithm {
                field: "algorithm",
                found: echo(&w.algorithm),
                expected: ALGORITHM,
            });
        }
        if let Some(k) = &w.key_algorithm {
            if k != KEY_ALGORITHM {
                return Err(Error::UnsupportedAlgorithm {
                    field: "key_algorithm",
                    found: echo(k),
                    expected: KEY_ALGORITHM,
                });
            }
        }
        if let Some(p) = &w.payload_algorithm {
            if p != PAYLOAD_ALGORITHM {
                return Err(Error::UnsupportedAlgorithm {
                    field: "payload_algorithm",
                    found: echo(p),
                    expected: PAYLOAD_ALGORITHM,
                });
            }
        }
        let processed_at = match w.processed_at {
            None => None,
            Some(n) => Some(
                n.as_i64()
                    .or_else(|| n.as_f64().map(|f| f as i64))
                    .ok_or_else(|| Error::Malformed("processed_at must be a number".into()))?,
            ),
        };
        Ok(Package {
            ciphertext: b64(
                "encrypted_payload.ciphertext",
                &w.encrypted_payload.ciphertext,
            )?,
            nonce: fixed("encrypted_payload.nonce", &w.encrypted_payload.nonce)?,
            tag: fixed("encrypted_payload.tag", &w.encrypted_payload.tag)?,
            encrypted_key: b64("encrypted_aes_key", &w.encrypted_aes_key)?,
            payload_id: w.payload_id,
            processed_at,
        })
    }

    /// Serialises to the JSON docs/PROTOCOL.md §3.3 shows (standard base64 with padding).
    pub fn to_json(&self) -> Vec<u8> {
        let w = Wire {
            version: VERSION.into(),
            algorithm: ALGORITHM.into(),
            encrypted_payload: WirePayload {
                ciphertext: B64.encode(&self.ciphertext).into(),
                nonce: B64.encode(self.nonce).into(),
                tag: B64.encode(self.tag).into(),
            },
            encrypted_aes_key: B64.encode(&self.encrypted_key).into(),
            key_algorithm: Some(KEY_ALGORITHM.into()),
            payload_algorithm: Some(PAYLOAD_ALGORITHM.into()),
            payload_id: self.payload_id.clone(),
            processed_at: self.processed_at.map(serde_json::Number::from),
        };
        serde_json::to_vec(&w).expect("serialising a package cannot fail")
    }
}
