//! The server's HPKE key file, `hpke_keys.key` (docs/PROTOCOL.md §6.4): the
//! private keys of one X25519 and one X-Wing key with their key ids, so that
//! a restarted server (or every replica given one key directory) publishes
//! the same configs.
//!
//! Layout: `NHPK` `0x01`, then per key
//! `key_id (1) | kem_id (2, big-endian) | private key (32)` (the X25519
//! scalar, the X-Wing seed), X25519 first. A file is valid when it holds
//! exactly one X25519 key followed by one X-Wing key, with distinct key ids.
//! X25519 scalars are written clamped (RFC 7748 §5); a file with an
//! unclamped one loads the same key and is written back clamped.
//!
//! This module is the codec only: bytes in, keys out and back, pure
//! functions. Reading and writing the file (permission checks, atomic
//! replacement, erasing the old copy) is the server's. The file is secret:
//! [`parse`] reads the private keys in place from the caller's buffer (keep
//! it in a [`SecretBuf`]) and [`encode`] writes into a [`SecretBuf`]; no
//! private key byte is copied into ordinary memory, and no [`KeyFileError`]
//! message carries one.
//!
//! ```
//! use nomyo_core::v2::{key_file, keys::{Kem, ServerKeyPair}};
//! let x = ServerKeyPair::generate(6, Kem::X25519);
//! let w = ServerKeyPair::generate(7, Kem::XWing);
//! let file = key_file::encode([&x, &w])?;
//! let [x2, w2] = key_file::parse(file.expose_secret())?;
//! assert_eq!((x2.config(), w2.config()), (x.config(), w.config()));
//! # Ok::<(), key_file::KeyFileError>(())
//! ```

use super::keys::{Kem, ServerKeyPair};
use crate::secure_memory::SecretBuf;

/// Magic and format version at the start of the file.
pub const MAGIC: &[u8; 5] = b"NHPK\x01";
/// Length of one private key in the file (both KEMs).
pub const SECRET_LEN: usize = 32;
/// Length of one key record: key id, KEM id, private key.
pub const RECORD_LEN: usize = 1 + 2 + SECRET_LEN;
/// The largest file accepted. A valid file is 75 bytes; the bound is for
/// readers, which should read at most one byte more than this and pass
/// what they read to [`parse`], which refuses a longer input.
pub const MAX_LEN: usize = 64 * 1024;
/// The KEMs of a valid file, in order.
pub const KEMS: [Kem; 2] = [Kem::X25519, Kem::XWing];

/// Why bytes are not a valid key file. Messages say what is wrong and where
/// (lengths, key ids, KEM ids), never a key byte; the server adds the path
/// and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Longer than [`MAX_LEN`].
    #[error("larger than {max} bytes, so not an HPKE key file (a valid one is {valid} bytes)", valid = MAGIC.len() + 2 * RECORD_LEN)]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Does not start with [`MAGIC`].
    #[error("not an HPKE key file: it does not start with `NHPK` and format version 1")]
    BadHeader,
    /// The header and nothing else.
    #[error("the HPKE key file holds no keys (only its header)")]
    NoKeys,
    /// The records do not add up to whole records.
    #[error("truncated HPKE key file: {len} bytes after the header, not a multiple of the {RECORD_LEN}-byte key record")]
    Truncated {
        /// Bytes after the header.
        len: usize,
    },
    /// A record names a KEM this build does not know.
    #[error(
        "unknown KEM id 0x{kem_id:04x} for key id {key_id} (known: 0x0020 x25519, 0x647a x-wing)"
    )]
    UnknownKem {
        /// The record's key id.
        key_id: u8,
        /// The KEM id found.
        kem_id: u16,
    },
    /// The private key bytes are not a valid key of their KEM.
    #[error("invalid {kem} private key (key id {key_id})")]
    InvalidKey {
        /// The record's key id.
        key_id: u8,
        /// Its KEM.
        kem: Kem,
    },
    /// Valid records, but not one X25519 key then one X-Wing key with
    /// distinct ids.
    #[error("expected one X25519 key then one X-Wing key with distinct key ids, found [{found}]")]
    WrongKeySet {
        /// The keys found, as `KEM#key_id`.
        found: String,
    },
}

/// Parses a key file: the X25519 key, then the X-Wing key. The private keys
/// are read in place from `bytes`. Never panics.
pub fn parse(bytes: &[u8]) -> Result<[ServerKeyPair; 2], KeyFileError> {
    if bytes.len() > MAX_LEN {
        return Err(KeyFileError::TooLarge { max: MAX_LEN });
    }
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(KeyFileError::BadHeader)?;
    if body.is_empty() {
        return Err(KeyFileError::NoKeys);
    }
    if body.len() % RECORD_LEN != 0 {
        return Err(KeyFileError::Truncated { len: body.len() });
    }
    // Headers first: a file of the wrong shape is reported as such before
    // any key is restored.
    let mut heads = Vec::with_capacity(body.len() / RECORD_LEN);
    for rec in body.chunks_exact(RECORD_LEN) {
        let key_id = rec[0];
        let kem_id = u16::from_be_bytes([rec[1], rec[2]]);
        let kem = Kem::from_id(kem_id).ok_or(KeyFileError::UnknownKem { key_id, kem_id })?;
        heads.push((key_id, kem));
    }
    check_set(&heads)?;
    let mut pairs = body
        .chunks_exact(RECORD_LEN)
        .zip(&heads)
        .map(|(rec, &(key_id, kem))| {
            ServerKeyPair::from_secret_bytes(key_id, kem, &rec[3..])
                .map_err(|_| KeyFileError::InvalidKey { key_id, kem })
        });
    match (pairs.next(), pairs.next()) {
        (Some(x), Some(w)) => Ok([x?, w?]),
        // check_set admits exactly two records.
        _ => Err(KeyFileError::WrongKeySet {
            found: describe(&heads),
        }),
    }
}

/// Encodes `keys` as a key file, refusing what [`parse`] would refuse (so
/// that a file that could not be loaded again is never written).
pub fn encode<'a>(
    keys: impl IntoIterator<Item = &'a ServerKeyPair>,
) -> Result<SecretBuf, KeyFileError> {
    let keys: Vec<&ServerKeyPair> = keys.into_iter().collect();
    let heads: Vec<(u8, Kem)> = keys.iter().map(|k| (k.key_id(), k.kem())).collect();
    check_set(&heads)?;
    let mut out = SecretBuf::with_capacity(MAGIC.len() + keys.len() * RECORD_LEN);
    out.extend_from_slice(MAGIC);
    for k in keys {
        out.extend_from_slice(&[k.key_id()]);
        out.extend_from_slice(&k.kem().id().to_be_bytes());
        let secret = k.secret_bytes();
        if secret.len() != SECRET_LEN {
            return Err(KeyFileError::InvalidKey {
                key_id: k.key_id(),
                kem: k.kem(),
            });
        }
        out.extend_from_slice(secret.expose_secret());
    }
    Ok(out)
}

/// One X25519 key then one X-Wing key, with distinct ids.
fn check_set(heads: &[(u8, Kem)]) -> Result<(), KeyFileError> {
    let kems: Vec<Kem> = heads.iter().map(|&(_, kem)| kem).collect();
    if kems == KEMS && heads[0].0 != heads[1].0 {
        Ok(())
    } else {
        Err(KeyFileError::WrongKeySet {
            found: describe(heads),
        })
    }
}

/// `kem#id, ...`: the first few keys (a message stays one line however
/// many records a file holds).
fn describe(heads: &[(u8, Kem)]) -> String {
    const SHOWN: usize = 4;
    let mut out = heads
        .iter()
        .take(SHOWN)
        .map(|(id, kem)| format!("{kem}#{id}"))
        .collect::<Vec<_>>()
        .join(", ");
    if heads.len() > SHOWN {
        out.push_str(&format!(" and {} more", heads.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key_id: u8, kem_id: u16, secret: [u8; SECRET_LEN]) -> Vec<u8> {
        let mut r = vec![key_id];
        r.extend_from_slice(&kem_id.to_be_bytes());
        r.extend_from_slice(&secret);
        r
    }

    fn file(records: &[Vec<u8>]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        for r in records {
            f.extend_from_slice(r);
        }
        f
    }

    fn valid() -> Vec<u8> {
        file(&[
            record(4, Kem::X25519.id(), [0x42; 32]),
            record(5, Kem::XWing.id(), [0x43; 32]),
        ])
    }

    #[test]
    fn round_trips_to_the_same_keys() {
        let bytes = valid();
        assert_eq!(bytes.len(), MAGIC.len() + 2 * RECORD_LEN);
        let [x, w] = parse(&bytes).unwrap();
        assert_eq!((x.key_id(), x.kem()), (4, Kem::X25519));
        assert_eq!((w.key_id(), w.kem()), (5, Kem::XWing));
        // X25519 scalars come back clamped (RFC 7748 §5): the same key,
        // written back in its canonical form.
        let mut clamped = [0x42; 32];
        clamped[0] &= 0xF8;
        assert_eq!(x.secret_bytes().expose_secret(), &clamped);
        assert_eq!(w.secret_bytes().expose_secret(), &[0x43; 32]);
        let again = encode([&x, &w]).unwrap();
        let mut canonical = bytes.clone();
        canonical[MAGIC.len() + 3] &= 0xF8;
        assert_eq!(again.expose_secret(), canonical.as_slice());
        let [x2, w2] = parse(again.expose_secret()).unwrap();
        assert_eq!((x2.config(), w2.config()), (x.config(), w.config()));
        // Generated keys too.
        let g = [
            ServerKeyPair::generate(200, Kem::X25519),
            ServerKeyPair::generate(17, Kem::XWing),
        ];
        let enc = encode(&g).unwrap();
        let back = parse(enc.expose_secret()).unwrap();
        for (a, b) in g.iter().zip(&back) {
            assert_eq!(a.config(), b.config());
        }
    }

    #[test]
    fn every_malformed_file_is_named_for_what_is_wrong() {
        let good = valid();
        let x = record(4, Kem::X25519.id(), [1; 32]);
        let w = record(5, Kem::XWing.id(), [2; 32]);
        let cases: Vec<(Vec<u8>, KeyFileError)> = vec![
            (b"short".to_vec(), KeyFileError::BadHeader),
            (vec![0u8; 75], KeyFileError::BadHeader),
            (b"NHPK\x02".to_vec(), KeyFileError::BadHeader),
            (MAGIC.to_vec(), KeyFileError::NoKeys),
            (
                good[..good.len() - 1].to_vec(),
                KeyFileError::Truncated {
                    len: 2 * RECORD_LEN - 1,
                },
            ),
            (
                file(&[x.clone(), record(9, 0x0010, [3; 32])]),
                KeyFileError::UnknownKem {
                    key_id: 9,
                    kem_id: 0x0010,
                },
            ),
            (
                file(&[w.clone(), x.clone()]),
                KeyFileError::WrongKeySet {
                    found: "x-wing#5, x25519#4".into(),
                },
            ),
            (
                file(std::slice::from_ref(&x)),
                KeyFileError::WrongKeySet {
                    found: "x25519#4".into(),
                },
            ),
            (
                file(&[x.clone(), w.clone(), w.clone()]),
                KeyFileError::WrongKeySet {
                    found: "x25519#4, x-wing#5, x-wing#5".into(),
                },
            ),
            (
                file(&[x.clone(), record(4, Kem::XWing.id(), [2; 32])]),
                KeyFileError::WrongKeySet {
                    found: "x25519#4, x-wing#4".into(),
                },
            ),
            (
                file(&vec![x.clone(); 7]),
                KeyFileError::WrongKeySet {
                    found: "x25519#4, x25519#4, x25519#4, x25519#4 and 3 more".into(),
                },
            ),
            (
                vec![0u8; MAX_LEN + 1],
                KeyFileError::TooLarge { max: MAX_LEN },
            ),
        ];
        for (bytes, want) in cases {
            let got = parse(&bytes).err();
            assert_eq!(got.as_ref(), Some(&want), "{} bytes", bytes.len());
        }
    }

    #[test]
    fn messages_carry_no_key_bytes() {
        // A secret whose hex or decimal form would stand out in a message.
        let secret = [0xAB; 32];
        let bad = file(&[
            record(4, Kem::X25519.id(), secret),
            record(4, Kem::XWing.id(), secret),
        ]);
        let msg = parse(&bad).err().unwrap().to_string();
        assert!(msg.contains("x25519#4, x-wing#4"), "{msg}");
        for needle in ["ab", "AB", "171"] {
            assert!(!msg.contains(needle), "{msg}");
        }
        let e = KeyFileError::InvalidKey {
            key_id: 1,
            kem: Kem::XWing,
        };
        assert_eq!(e.to_string(), "invalid x-wing private key (key id 1)");
    }

    #[test]
    fn encode_refuses_what_parse_would_refuse() {
        let x = ServerKeyPair::generate(1, Kem::X25519);
        let x2 = ServerKeyPair::generate(2, Kem::X25519);
        assert!(matches!(
            encode([&x, &x2]),
            Err(KeyFileError::WrongKeySet { .. })
        ));
        assert!(matches!(
            encode([&x]),
            Err(KeyFileError::WrongKeySet { .. })
        ));
    }
}
