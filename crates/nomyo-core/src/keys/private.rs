//! RSA private keys: generation, reading PKCS#8, PKCS#1 and encrypted
//! PEM (with a bound on the password derivation's cost), writing PKCS#8,
//! and RSA-PSS signing.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use aws_lc_rs::signature as lc_signature;
use der::pem::LineEnding;
use der::{Decode, Encode, SecretDocument};
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{check_pkcs1_bits, PublicKey, RsaBits, PBKDF2_ITERATIONS, RSA_ENCRYPTION_OID};
use crate::error::{Error, Result};

/// An RSA private key. Its `Debug` never shows key material; the key lives in
/// aws-lc's memory, which aws-lc cleanses on free.
pub struct PrivateKey {
    key: PrivateDecryptingKey,
    public: PublicKey,
}

impl PrivateKey {
    /// Generates a fresh key with the OS CSPRNG.
    pub fn generate(bits: RsaBits) -> Result<Self> {
        let size = match bits {
            RsaBits::B2048 => KeySize::Rsa2048,
            RsaBits::B3072 => KeySize::Rsa3072,
            RsaBits::B4096 => KeySize::Rsa4096,
        };
        let key = PrivateDecryptingKey::generate(size)
            .map_err(|_| Error::Key("RSA key generation failed".into()))?;
        Self::from_inner(key)
    }

    fn from_inner(key: PrivateDecryptingKey) -> Result<Self> {
        let public = key
            .public_key()
            .as_der()
            .map_err(|_| Error::Key("cannot encode public key".into()))
            .and_then(|d| PublicKey::from_spki_der(d.as_ref()))?;
        Ok(Self { key, public })
    }

    /// Parses unencrypted PKCS#8 DER (`PrivateKeyInfo`).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let info = PrivateKeyInfo::from_der(der)
            .map_err(|_| Error::Key("not a PKCS#8 private key".into()))?;
        if info.algorithm.oid != RSA_ENCRYPTION_OID {
            return Err(Error::Key("not an RSA private key".into()));
        }
        check_pkcs1_bits(info.private_key)?;
        let key = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|_| Error::Key("invalid RSA private key".into()))?;
        Self::from_inner(key)
    }

    /// Parses PKCS#1 `RSAPrivateKey` DER.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
        check_pkcs1_bits(der)?;
        // Wrap it as PKCS#8 (RFC 5208) for aws-lc: rsaEncryption with NULL parameters.
        let info = PrivateKeyInfo {
            algorithm: spki::AlgorithmIdentifierRef {
                oid: RSA_ENCRYPTION_OID,
                parameters: Some(der::asn1::AnyRef::NULL),
            },
            private_key: der,
            public_key: None,
        };
        let p8 = Zeroizing::new(
            info.to_der()
                .map_err(|_| Error::Key("invalid RSA private key".into()))?,
        );
        Self::from_pkcs8_der(&p8)
    }

    /// Parses a PEM private key: `PRIVATE KEY` (PKCS#8), `ENCRYPTED PRIVATE KEY`
    /// (PKCS#8 + PBES2, needs `password`) or `RSA PRIVATE KEY` (PKCS#1).
    /// `name` identifies the key in error messages (a path, say).
    pub fn from_pem(pem: &str, password: Option<&SecretString>, name: &str) -> Result<Self> {
        let trimmed = pem.trim();
        if trimmed.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(Error::Key(format!(
                "{name}: legacy OpenSSL-encrypted PEM is not supported; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
            )));
        }
        let (label, doc) = SecretDocument::from_pem(trimmed)
            .map_err(|_| Error::Key(format!("{name}: not a PEM private key")))?;
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(doc.as_bytes()),
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(doc.as_bytes()),
            "ENCRYPTED PRIVATE KEY" => {
                let Some(password) = password else {
                    return Err(Error::PasswordRequired(name.to_owned()));
                };
                let enc = EncryptedPrivateKeyInfo::from_der(doc.as_bytes())
                    .map_err(|_| Error::Key(format!("{name}: malformed encrypted private key")))?;
                check_kdf_cost(&enc, name)?;
                let plain = enc
                    .decrypt(password.expose_secret().as_bytes())
                    .map_err(|_| Error::WrongPassword(name.to_owned()))?;
                Self::from_pkcs8_der(plain.as_bytes())
            }
            "PUBLIC KEY" => Err(Error::Key(format!(
                "{name} is a public key; a private key is needed here"
            ))),
            other => Err(Error::Key(format!(
                "{name}: unsupported PEM type '{}'",
                crate::error::echo(other)
            ))),
        }
    }

    /// PKCS#8 PEM; `ENCRYPTED PRIVATE KEY` with PBES2 (PBKDF2-HMAC-SHA256,
    /// [`PBKDF2_ITERATIONS`], AES-256-CBC) when a password is given.
    pub fn to_pkcs8_pem(&self, password: Option<&SecretString>) -> Result<Zeroizing<String>> {
        let der = self
            .key
            .as_der()
            .map_err(|_| Error::Key("cannot encode private key".into()))?;
        let der = Zeroizing::new(der.as_ref().to_vec());
        match password {
            None => {
                let doc = SecretDocument::try_from(der.as_slice())
                    .map_err(|_| Error::Key("cannot encode private key".into()))?;
                doc.to_pem("PRIVATE KEY", LineEnding::LF)
                    .map_err(|_| Error::Key("cannot encode private key".into()))
            }
            Some(pw) => {
                let mut salt = [0u8; 16];
                let mut iv = [0u8; 16];
                aws_lc_rs::rand::fill(&mut salt).map_err(|_| Error::EncryptionFailed)?;
                aws_lc_rs::rand::fill(&mut iv).map_err(|_| Error::EncryptionFailed)?;
                let params = pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(
                    PBKDF2_ITERATIONS,
                    &salt,
                    &iv,
                )
                .map_err(|_| Error::EncryptionFailed)?;
                let info = PrivateKeyInfo::try_from(der.as_slice())
                    .map_err(|_| Error::Key("cannot encode private key".into()))?;
                let doc = info
                    .encrypt_with_params(params, pw.expose_secret().as_bytes())
                    .map_err(|_| Error::EncryptionFailed)?;
                doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
                    .map_err(|_| Error::Key("cannot encode private key".into()))
            }
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    pub(crate) fn inner(&self) -> &PrivateDecryptingKey {
        &self.key
    }

    /// Signs `message` with RSA-PSS (SHA-256, MGF1-SHA-256, salt length 32
    /// bytes, the digest length), with aws-lc. The signature is as long as
    /// the modulus (512 bytes for RSA-4096). Callers must domain-separate
    /// `message` (see [`crate::keys_signature`]) and sign only data they
    /// chose: the same key opens v1 packages (OAEP), and the combination is
    /// safe only while neither use becomes an oracle for the other (the
    /// server never signs attacker-chosen bytes, and decryption never
    /// reveals a raw RSA result).
    pub fn sign_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>> {
        let failed = || Error::Key("RSA-PSS signing failed".into());
        // aws-lc's signing key type is separate from its decrypting one:
        // load the same key (PKCS#8, held in zeroized memory) into one.
        let der = self.key.as_der().map_err(|_| failed())?;
        let pkcs8 = Zeroizing::new(der.as_ref().to_vec());
        let pair = lc_signature::RsaKeyPair::from_pkcs8(&pkcs8).map_err(|_| failed())?;
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &lc_signature::RSA_PSS_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            message,
            &mut sig,
        )
        .map_err(|_| failed())?;
        Ok(sig)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey(RSA-{}, [redacted], public {})",
            self.bits(),
            self.public.fingerprint()
        )
    }
}

/// Most PBKDF2 iterations accepted when opening a key file: ours use 600,000,
/// Python's `BestAvailableEncryption` 2,048, OpenSSL's default 2,048. A hostile
/// file could otherwise ask for 4 billion and hang the process.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Refuses key-derivation parameters that would take unbounded time or memory.
fn check_kdf_cost(enc: &EncryptedPrivateKeyInfo<'_>, name: &str) -> Result<()> {
    use pkcs5::pbes2::Kdf;
    let too_costly = || {
        Error::Key(format!(
            "{name}: the key file's password derivation parameters are too costly (refused as a denial-of-service guard)"
        ))
    };
    match &enc.encryption_algorithm {
        pkcs5::EncryptionScheme::Pbes2(params) => match &params.kdf {
            Kdf::Pbkdf2(p) if p.iteration_count > MAX_PBKDF2_ITERATIONS => Err(too_costly()),
            // scrypt: at most N = 2^20 with r = 8, p = 1 (1 GiB); OpenSSL defaults to 2^14.
            Kdf::Scrypt(p)
                if p.cost_parameter > (1 << 20)
                    || u64::from(p.block_size) * u64::from(p.parallelization) > 16 =>
            {
                Err(too_costly())
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod kdf_cost_tests {
    use super::*;
    use der::EncodePem;

    #[test]
    fn hostile_iteration_count_refused_before_derivation() {
        let key = PrivateKey::generate(RsaBits::B2048).unwrap();
        let der = key.key.as_der().unwrap();
        let info = PrivateKeyInfo::try_from(der.as_ref()).unwrap();
        let salt = [1u8; 16];
        let iv = [2u8; 16];
        // Encrypt cheaply, then claim 4 billion iterations in the parameters:
        // the check must refuse it at once instead of deriving for hours.
        let params = pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(1, &salt, &iv).unwrap();
        let doc = info.encrypt_with_params(params, b"pw").unwrap();
        let mut enc = EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).unwrap();
        let mut hostile = pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(1, &salt, &iv).unwrap();
        if let pkcs5::pbes2::Kdf::Pbkdf2(p) = &mut hostile.kdf {
            p.iteration_count = u32::MAX;
        }
        enc.encryption_algorithm = pkcs5::EncryptionScheme::Pbes2(hostile);
        let pem = enc.to_pem(LineEnding::LF).unwrap();
        let start = std::time::Instant::now();
        let err = PrivateKey::from_pem(&pem, Some(&SecretString::from("pw")), "k.pem").unwrap_err();
        assert!(err.to_string().contains("too costly"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
