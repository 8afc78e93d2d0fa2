//! RSA keys for protocol v1: generation, PEM/PKCS#8 encoding, password
//! protection, fingerprints and safe key files.
//!
//! All RSA arithmetic is aws-lc-rs (constant-time, maintained); the RustCrypto
//! `rsa` crate is deliberately not used (RUSTSEC-2023-0071). PKCS#8 structure
//! and PBES2 come from the RustCrypto `pkcs8`/`pkcs5` crates.

use der::Decode;

use crate::error::{Error, Result};

mod files;
mod fingerprint;
mod private;
mod public;

pub use files::{
    check_secret_file_permissions, load_private_key_file, load_public_key_file,
    public_key_of_pem_file, save_key_pair, write_atomic, write_new, LoadOptions, SavedKeys,
    PRIVATE_KEY_FILE, PUBLIC_KEY_FILE,
};
pub use fingerprint::Fingerprint;
pub use private::{PrivateKey, MAX_PBKDF2_ITERATIONS};
pub use public::{BadSignature, PublicKey};

/// The smallest RSA key this implementation accepts (docs/PROTOCOL.md §3.1).
pub const MIN_RSA_BITS: usize = 2048;

/// PBKDF2-HMAC-SHA256 iterations for keys we save (OWASP 2023 guidance).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// `rsaEncryption` (PKCS#1), the algorithm OID of RSA keys in PKCS#8 and SPKI.
const RSA_ENCRYPTION_OID: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Sizes of RSA key we can generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaBits {
    /// 2048 bits (tests only; fast to generate).
    B2048,
    /// 3072 bits.
    B3072,
    /// 4096 bits, the NOMYO default.
    B4096,
}

/// Refuses a modulus (big-endian bytes) of fewer than [`MIN_RSA_BITS`] bits.
fn check_modulus_bits(m: &[u8]) -> Result<()> {
    let bits = match m.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (m.len() - i) * 8 - m[i].leading_zeros() as usize,
    };
    if bits < MIN_RSA_BITS {
        return Err(Error::KeyTooSmall {
            bits,
            min: MIN_RSA_BITS,
        });
    }
    Ok(())
}

/// Reads the modulus size from PKCS#1 DER so that small keys get a clear error
/// (aws-lc only says "rejected").
fn check_pkcs1_bits(pkcs1_der: &[u8]) -> Result<()> {
    let k = pkcs1::RsaPrivateKey::from_der(pkcs1_der)
        .map_err(|_| Error::Key("malformed RSA private key".into()))?;
    check_modulus_bits(k.modulus.as_bytes())
}

/// Like [`check_pkcs1_bits`], for an RSA `SubjectPublicKeyInfo`; anything
/// that is not one is left to aws-lc to refuse.
fn check_spki_bits(spki_der: &[u8]) -> Result<()> {
    let Ok(info) = spki::SubjectPublicKeyInfoRef::from_der(spki_der) else {
        return Ok(());
    };
    if info.algorithm.oid != RSA_ENCRYPTION_OID {
        return Ok(());
    }
    let Some(Ok(k)) = info
        .subject_public_key
        .as_bytes()
        .map(pkcs1::RsaPublicKey::from_der)
    else {
        return Ok(());
    };
    check_modulus_bits(k.modulus.as_bytes())
}
