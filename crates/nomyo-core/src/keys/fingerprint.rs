//! Key fingerprints: SHA-256 of a public key's encoding, written
//! `sha256:` + hex.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A SHA-256 fingerprint of a public key's DER encoding, printed as
/// `sha256:` + 64 lowercase hex digits (docs/CLI.md §1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 over arbitrary public bytes (SPKI DER for v1, a key_config for v2).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::of_parts(&[bytes])
    }

    /// SHA-256 over the concatenation of `parts`, without copying them
    /// into one buffer first (a request body can be megabytes).
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let hexpart = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .ok_or_else(|| Error::BadFingerprint(crate::error::echo(t)))?;
        let mut out = [0u8; 32];
        if hexpart.len() != 64 || hex::decode_to_slice(hexpart, &mut out).is_err() {
            return Err(Error::BadFingerprint(crate::error::echo(t)));
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_of_parts_is_the_fingerprint_of_their_concatenation() {
        let parts: [&[u8]; 4] = [b"nomyo-v2-body\0", b"", b"enc", &[7u8; 5000]];
        assert_eq!(
            Fingerprint::of_parts(&parts),
            Fingerprint::of_bytes(&parts.concat())
        );
        assert_eq!(Fingerprint::of_parts(&[]), Fingerprint::of_bytes(b""));
    }
}
