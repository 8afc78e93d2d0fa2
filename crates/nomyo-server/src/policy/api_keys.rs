//! API keys: who the caller is, checked against SHA-256 hashes in constant time.

use nomyo_core::Fingerprint;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Who the caller is after authentication: the index of the matching key, or
/// anonymous when the server accepts requests without keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No API keys are configured.
    Anonymous,
    /// The n-th accepted key.
    Key(u32),
}

/// Accepted API keys, kept only as SHA-256 hashes.
///
/// API keys are long random tokens, so an unsalted SHA-256 is enough to make a
/// memory or config leak useless (as with GitHub's token scanning); the
/// presented key is hashed and compared against every stored hash in constant
/// time, without an early exit.
#[derive(Clone, Default)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.hashes.len())
            .finish()
    }
}

impl ApiKeys {
    /// No keys: every caller is anonymous and accepted.
    pub fn open() -> Self {
        Self::default()
    }

    /// Adds a key given in clear (hashed at once).
    pub fn add_key(&mut self, key: &str) {
        self.hashes.push(hash_key(key));
    }

    /// Adds a key given as its SHA-256 (`sha256:HEX` or bare 64 hex digits).
    pub fn add_hash(&mut self, hash: &str) -> Result<(), String> {
        let hex_part = hash.strip_prefix("sha256:").unwrap_or(hash);
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part.trim(), &mut out)
            .map_err(|_| "an API key hash must be sha256: followed by 64 hex digits".to_owned())?;
        self.hashes.push(out);
        Ok(())
    }

    /// Reads keys from text: one per line; blank lines and `#` comments are skipped.
    pub fn add_keys_from_text(&mut self, text: &str) -> usize {
        let mut n = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_key(line);
            n += 1;
        }
        n
    }

    /// Number of accepted keys.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no key is configured (the server is open).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks an `Authorization` header value. Every failure is the same 401.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, ApiError> {
        if self.hashes.is_empty() {
            return Ok(Caller::Anonymous);
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized)?;
        let presented = Fingerprint::of_bytes(token).0;
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u32;
        for (i, h) in self.hashes.iter().enumerate() {
            let eq = h.ct_eq(&presented);
            // Record the first match without branching on secret data.
            let take = eq & !found;
            index = u32::conditional_select(&index, &(i as u32), take);
            found |= eq;
        }
        if bool::from(found) {
            Ok(Caller::Key(index))
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

use subtle::ConditionallySelectable;

/// Whether an `Authorization: Bearer TOKEN` value carries the token whose
/// SHA-256 is `hash` (compared in constant time).
pub fn bearer_matches(authorization: Option<&[u8]>, hash: &[u8; 32]) -> bool {
    authorization
        .and_then(bearer_token)
        .is_some_and(|t| bool::from(Fingerprint::of_bytes(t).0.ct_eq(hash)))
}

/// SHA-256 of an API key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Fingerprint::of_bytes(key.as_bytes()).0
}

/// `Bearer <token>` (scheme case-insensitive, RFC 7235) → token bytes.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_and_bearer() {
        let mut k = ApiKeys::open();
        assert_eq!(k.authenticate(None).unwrap(), Caller::Anonymous);
        k.add_key("alpha");
        k.add_hash(&format!("sha256:{}", hex::encode(hash_key("beta"))))
            .unwrap();
        assert!(k.add_hash("sha256:zz").is_err());
        assert_eq!(
            k.authenticate(Some(b"Bearer alpha")).unwrap(),
            Caller::Key(0)
        );
        assert_eq!(
            k.authenticate(Some(b"bearer beta")).unwrap(),
            Caller::Key(1)
        );
        for bad in [
            &b"Bearer gamma"[..],
            b"Bearer ",
            b"Basic alpha",
            b"alpha",
            b"",
        ] {
            assert!(matches!(
                k.authenticate(Some(bad)),
                Err(ApiError::Unauthorized)
            ));
        }
        assert!(matches!(k.authenticate(None), Err(ApiError::Unauthorized)));
        assert!(!format!("{k:?}").contains("alpha"));
    }
}
