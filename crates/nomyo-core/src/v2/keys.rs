//! HPKE key configurations (RFC 9458 §3 `key_config`) and server key pairs.
//!
//! Wire layout of one config: `key_id (1) | kem_id (2) | public_key (Npk) |
//! cipher_suites_len (2) | (kdf_id (2) | aead_id (2))...`. The key list served at
//! `/.well-known/hpke-keys` is the configs concatenated, X25519 first; Npk is
//! fixed by the KEM, so no length prefixes are needed (docs/PROTOCOL.md §4.2).

use std::fmt;

use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem as KemTrait, Serializable};

use super::V2Error;
use crate::keys::Fingerprint;
use crate::secure_memory::SecretBuf;

/// HKDF-SHA256 (RFC 9180 §7.2).
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// AES-256-GCM (RFC 9180 §7.3).
pub const AEAD_AES_256_GCM: u16 = 0x0002;

/// The KEMs we implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kem {
    /// DHKEM(X25519, HKDF-SHA256), `0x0020`: the EHBP reference suite.
    X25519,
    /// X-Wing (ML-KEM-768 + X25519), `0x647A`: post-quantum hybrid.
    XWing,
}

impl Kem {
    /// RFC 9180 / IANA KEM id.
    pub fn id(self) -> u16 {
        match self {
            Kem::X25519 => X25519HkdfSha256::KEM_ID,
            Kem::XWing => XWing::KEM_ID,
        }
    }
    /// From an id.
    pub fn from_id(id: u16) -> Option<Self> {
        [Kem::X25519, Kem::XWing].into_iter().find(|k| k.id() == id)
    }
    /// Public key length (Npk).
    pub fn public_key_len(self) -> usize {
        match self {
            Kem::X25519 => 32,
            Kem::XWing => 1216,
        }
    }
    /// Encapsulated key length (Nenc).
    pub fn enc_len(self) -> usize {
        match self {
            Kem::X25519 => 32,
            Kem::XWing => 1120,
        }
    }
    /// The KEM whose `enc` has this length (server-side selection without `Nomyo-Key-Id`).
    pub fn from_enc_len(len: usize) -> Option<Self> {
        [Kem::X25519, Kem::XWing]
            .into_iter()
            .find(|k| k.enc_len() == len)
    }
    /// Whether this KEM resists quantum attackers (harvest-now-decrypt-later).
    pub fn is_post_quantum(self) -> bool {
        matches!(self, Kem::XWing)
    }
    /// A short name: `x25519` or `x-wing`.
    pub fn name(self) -> &'static str {
        match self {
            Kem::X25519 => "x25519",
            Kem::XWing => "x-wing",
        }
    }

    /// `_metadata.encryption_algorithm` of a v2 answer sealed with this
    /// KEM: `ehbp-x25519` or `ehbp-x-wing` (docs/PROTOCOL.md §1.7).
    pub fn encryption_algorithm(self) -> String {
        format!("ehbp-{}", self.name())
    }
}

impl fmt::Display for Kem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `key_config`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// Identifies the key (rotation gives a new id).
    pub key_id: u8,
    /// The KEM.
    pub kem: Kem,
    /// The KEM public key (Npk bytes).
    pub public_key: Vec<u8>,
    /// `(kdf_id, aead_id)` pairs the server accepts.
    pub suites: Vec<(u16, u16)>,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyConfig(id {}, {}, {})",
            self.key_id,
            self.kem,
            self.fingerprint()
        )
    }
}

impl KeyConfig {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.public_key.len() + 4 * self.suites.len());
        out.push(self.key_id);
        out.extend_from_slice(&self.kem.id().to_be_bytes());
        out.extend_from_slice(&self.public_key);
        let suites_len = u16::try_from(4 * self.suites.len()).expect("too many suites");
        out.extend_from_slice(&suites_len.to_be_bytes());
        for (kdf, aead) in &self.suites {
            out.extend_from_slice(&kdf.to_be_bytes());
            out.extend_from_slice(&aead.to_be_bytes());
        }
        out
    }

    /// SHA-256 over the encoded config (docs/PROTOCOL.md §1.2).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_bytes(&self.encode())
    }

    /// Whether it offers HKDF-SHA256 + AES-256-GCM, the only suite we speak.
    pub fn supports_our_suite(&self) -> bool {
        self.suites.contains(&(KDF_HKDF_SHA256, AEAD_AES_256_GCM))
    }

    /// Encodes several configs back to back (the `/.well-known/hpke-keys` body).
    pub fn encode_list(configs: &[KeyConfig]) -> Vec<u8> {
        configs.iter().flat_map(KeyConfig::encode).collect()
    }

    /// Parses a concatenated list. An unknown KEM ends the list with an error,
    /// since its key length is unknown.
    pub fn parse_list(mut bytes: &[u8]) -> Result<Vec<KeyConfig>, V2Error> {
        let mut out = Vec::new();
        if bytes.is_empty() {
            return Err(V2Error::InvalidKeyConfig("empty key list".into()));
        }
        while !bytes.is_empty() {
            let (cfg, rest) = Self::parse_one(bytes)?;
            out.push(cfg);
            bytes = rest;
        }
        Ok(out)
    }

    fn parse_one(b: &[u8]) -> Result<(KeyConfig, &[u8]), V2Error> {
        let trunc = || V2Error::InvalidKeyConfig("truncated key_config".into());
        if b.len() < 3 {
            return Err(trunc());
        }
        let key_id = b[0];
        let kem_id = u16::from_be_bytes([b[1], b[2]]);
        let kem = Kem::from_id(kem_id)
            .ok_or_else(|| V2Error::UnsupportedSuite(format!("KEM 0x{kem_id:04x}")))?;
        let b = &b[3..];
        let npk = kem.public_key_len();
        if b.len() < npk + 2 {
            return Err(trunc());
        }
        let public_key = b[..npk].to_vec();
        let slen = u16::from_be_bytes([b[npk], b[npk + 1]]) as usize;
        let b = &b[npk + 2..];
        if slen == 0 || !slen.is_multiple_of(4) {
            return Err(V2Error::InvalidKeyConfig("bad cipher_suites length".into()));
        }
        if b.len() < slen {
            return Err(trunc());
        }
        let suites = b[..slen]
            .chunks_exact(4)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u16::from_be_bytes([c[2], c[3]]),
                )
            })
            .collect();
        // The public key must parse for its KEM.
        let cfg = KeyConfig {
            key_id,
            kem,
            public_key,
            suites,
        };
        cfg.check_public_key()?;
        Ok((cfg, &b[slen..]))
    }

    fn check_public_key(&self) -> Result<(), V2Error> {
        let ok = match self.kem {
            Kem::X25519 => {
                <X25519HkdfSha256 as KemTrait>::PublicKey::from_bytes(&self.public_key).is_ok()
            }
            Kem::XWing => <XWing as KemTrait>::PublicKey::from_bytes(&self.public_key).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(V2Error::InvalidKeyConfig("bad public key".into()))
        }
    }
}

pub(crate) enum ServerSecret {
    X25519(<X25519HkdfSha256 as KemTrait>::PrivateKey),
    // Boxed: an X-Wing decapsulation key is ~1.7 KB, an X25519 one 32 bytes.
    XWing(Box<<XWing as KemTrait>::PrivateKey>),
}

/// A server's HPKE key pair and its published config. `Debug` shows only the
/// config; the private key never leaves except through [`Self::secret_bytes`].
pub struct ServerKeyPair {
    config: KeyConfig,
    pub(crate) secret: ServerSecret,
}

impl fmt::Debug for ServerKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKeyPair({:?}, [redacted])", self.config)
    }
}

fn config_for(key_id: u8, kem: Kem, public_key: Vec<u8>) -> KeyConfig {
    KeyConfig {
        key_id,
        kem,
        public_key,
        suites: vec![(KDF_HKDF_SHA256, AEAD_AES_256_GCM)],
    }
}

impl ServerKeyPair {
    /// Generates a fresh key pair with the OS CSPRNG.
    pub fn generate(key_id: u8, kem: Kem) -> Self {
        match kem {
            Kem::X25519 => {
                let (sk, pk) = X25519HkdfSha256::gen_keypair();
                Self {
                    config: config_for(key_id, kem, pk.to_bytes().to_vec()),
                    secret: ServerSecret::X25519(sk),
                }
            }
            Kem::XWing => {
                let (sk, pk) = XWing::gen_keypair();
                Self {
                    config: config_for(key_id, kem, pk.to_bytes().to_vec()),
                    secret: ServerSecret::XWing(Box::new(sk)),
                }
            }
        }
    }

    /// Restores a key pair from its private key bytes (32 bytes for both KEMs:
    /// the X25519 scalar, the X-Wing seed).
    pub fn from_secret_bytes(key_id: u8, kem: Kem, bytes: &[u8]) -> Result<Self, V2Error> {
        let bad = || V2Error::InvalidKeyConfig(format!("invalid {kem} private key"));
        Ok(match kem {
            Kem::X25519 => {
                let sk = <X25519HkdfSha256 as KemTrait>::PrivateKey::from_bytes(bytes)
                    .map_err(|_| bad())?;
                let pk = X25519HkdfSha256::sk_to_pk(&sk);
                Self {
                    config: config_for(key_id, kem, pk.to_bytes().to_vec()),
                    secret: ServerSecret::X25519(sk),
                }
            }
            Kem::XWing => {
                let sk = <XWing as KemTrait>::PrivateKey::from_bytes(bytes).map_err(|_| bad())?;
                let pk = XWing::sk_to_pk(&sk);
                Self {
                    config: config_for(key_id, kem, pk.to_bytes().to_vec()),
                    secret: ServerSecret::XWing(Box::new(sk)),
                }
            }
        })
    }

    /// The private key bytes, for saving to a 0600 key file.
    pub fn secret_bytes(&self) -> SecretBuf {
        match &self.secret {
            ServerSecret::X25519(sk) => SecretBuf::from_slice(&sk.to_bytes()),
            ServerSecret::XWing(sk) => SecretBuf::from_slice(&sk.to_bytes()),
        }
    }

    /// The published config.
    pub fn config(&self) -> &KeyConfig {
        &self.config
    }

    /// The KEM.
    pub fn kem(&self) -> Kem {
        self.config.kem
    }

    /// The key id.
    pub fn key_id(&self) -> u8 {
        self.config.key_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_list_round_trip_and_sizes() {
        let a = ServerKeyPair::generate(0, Kem::X25519);
        let b = ServerKeyPair::generate(1, Kem::XWing);
        assert_eq!(a.config().public_key.len(), 32);
        assert_eq!(b.config().public_key.len(), 1216);
        let list = KeyConfig::encode_list(&[a.config().clone(), b.config().clone()]);
        assert_eq!(list.len(), (1 + 2 + 32 + 2 + 4) + (1 + 2 + 1216 + 2 + 4));
        let parsed = KeyConfig::parse_list(&list).unwrap();
        assert_eq!(parsed, vec![a.config().clone(), b.config().clone()]);
        for cut in 0..list.len() {
            // Every truncation fails, except a cut exactly after the first config.
            let r = KeyConfig::parse_list(&list[..cut]);
            if cut == a.config().encode().len() {
                assert_eq!(r.unwrap().len(), 1);
            } else {
                assert!(r.is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn secret_bytes_restore_same_public_key() {
        for kem in [Kem::X25519, Kem::XWing] {
            let k = ServerKeyPair::generate(7, kem);
            let r =
                ServerKeyPair::from_secret_bytes(7, kem, k.secret_bytes().expose_secret()).unwrap();
            assert_eq!(r.config(), k.config());
            assert!(!format!("{k:?}").contains(&hex::encode(k.secret_bytes().expose_secret())));
        }
    }

    #[test]
    fn unknown_kem_refused() {
        let mut enc = ServerKeyPair::generate(0, Kem::X25519).config().encode();
        enc[1] = 0x00;
        enc[2] = 0x10; // P-256
        assert!(matches!(
            KeyConfig::parse_list(&enc),
            Err(V2Error::UnsupportedSuite(_))
        ));
    }
}
