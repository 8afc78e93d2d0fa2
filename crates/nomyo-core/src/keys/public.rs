//! RSA public keys: reading SPKI (DER or PEM), their fingerprint, and
//! verifying RSA-PSS signatures.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PublicEncryptingKey;
use aws_lc_rs::signature::{self as lc_signature, UnparsedPublicKey};
use der::pem::LineEnding;

use super::{check_spki_bits, Fingerprint, MIN_RSA_BITS};
use crate::error::{Error, Result};

/// An RSA public key (SPKI) used to seal v1 packages.
#[derive(Clone)]
pub struct PublicKey {
    key: PublicEncryptingKey,
    der: Vec<u8>,
}

impl PublicKey {
    /// Parses DER `SubjectPublicKeyInfo`; refuses keys under 2048 bits.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        // aws-lc refuses small keys with the same error as garbage; read the
        // modulus size first so that a 1024-bit key gets a clear error.
        check_spki_bits(der)?;
        let key = PublicEncryptingKey::from_der(der)
            .map_err(|_| Error::Key("not an RSA public key (SubjectPublicKeyInfo)".into()))?;
        let bits = key.key_size_bits();
        if bits < MIN_RSA_BITS {
            return Err(Error::KeyTooSmall {
                bits,
                min: MIN_RSA_BITS,
            });
        }
        // Re-encode: the canonical DER is what the fingerprint covers.
        let der = key
            .as_der()
            .map_err(|_| Error::Key("cannot encode public key".into()))?
            .as_ref()
            .to_vec();
        Ok(Self { key, der })
    }

    /// Parses a PEM `PUBLIC KEY` (SPKI) block.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let (label, der) = der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|_| Error::Key("not a PEM public key".into()))?;
        if label != "PUBLIC KEY" {
            return Err(Error::Key(format!(
                "expected a PEM 'PUBLIC KEY' (SubjectPublicKeyInfo), found '{}'",
                crate::error::echo(label)
            )));
        }
        Self::from_spki_der(&der)
    }

    /// The PEM `PUBLIC KEY` encoding (64-column lines, LF), byte-identical to
    /// Python `cryptography`'s `public_bytes(PEM, SubjectPublicKeyInfo)`.
    pub fn to_pem(&self) -> String {
        der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &self.der)
            .expect("PEM encoding of a DER key cannot fail")
    }

    /// DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.der
    }

    /// `sha256:` fingerprint of the DER SPKI.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_bytes(&self.der)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    pub(crate) fn inner(&self) -> &PublicEncryptingKey {
        &self.key
    }

    /// Verifies an RSA-PSS signature over `message` (SHA-256, MGF1-SHA-256,
    /// salt length 32: what
    /// [`PrivateKey::sign_pss_sha256`](super::PrivateKey::sign_pss_sha256)
    /// makes), with aws-lc. Any failure (wrong key, altered message, malformed or
    /// truncated signature) is the same [`BadSignature`].
    pub fn verify_pss_sha256(
        &self,
        message: &[u8],
        signature: &[u8],
    ) -> std::result::Result<(), BadSignature> {
        UnparsedPublicKey::new(&lc_signature::RSA_PSS_2048_8192_SHA256, &self.der)
            .verify(message, signature)
            .map_err(|_| BadSignature)
    }
}

/// An RSA signature did not verify (deliberately without detail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadSignature;

impl fmt::Display for BadSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the signature does not verify")
    }
}

impl std::error::Error for BadSignature {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(RSA-{}, {})", self.bits(), self.fingerprint())
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for PublicKey {}
