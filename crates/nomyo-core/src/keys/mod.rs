//! RSA keys for protocol v1: generation, PEM/PKCS#8 encoding, password
//! protection, fingerprints and safe key files.
//!
//! All RSA arithmetic is aws-lc-rs (constant-time, maintained); the RustCrypto
//! `rsa` crate is deliberately not used (RUSTSEC-2023-0071). PKCS#8 structure
//! and PBES2 come from the RustCrypto `pkcs8`/`pkcs5` crates.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey, PublicEncryptingKey};
use aws_lc_rs::signature::{self as lc_signature, UnparsedPublicKey};
use der::pem::LineEnding;
use der::{Decode, Encode, SecretDocument};
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

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
    /// salt length 32: what [`PrivateKey::sign_pss_sha256`] makes), with
    /// aws-lc. Any failure (wrong key, altered message, malformed or
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

/// Reads the modulus size from PKCS#1 DER so that small keys get a clear error
/// (aws-lc only says "rejected").
fn check_pkcs1_bits(pkcs1_der: &[u8]) -> Result<()> {
    let k = pkcs1::RsaPrivateKey::from_der(pkcs1_der)
        .map_err(|_| Error::Key("malformed RSA private key".into()))?;
    let m = k.modulus.as_bytes();
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
    let m = k.modulus.as_bytes();
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

/// Options for loading a private key file.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Accept a private key file that group or others can read. Off by default:
    /// such a file is refused with a message that names `chmod 600`.
    pub allow_insecure_permissions: bool,
}

/// Loads a private key file, refusing one that group or others can read or
/// that another user owns.
pub fn load_private_key_file(
    path: &Path,
    password: Option<&SecretString>,
    opts: LoadOptions,
) -> Result<PrivateKey> {
    check_private_permissions(path, opts)?;
    let pem = Zeroizing::new(fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
    PrivateKey::from_pem(&pem, password, &path.display().to_string())
}

/// Loads a PEM public key file.
pub fn load_public_key_file(path: &Path) -> Result<PublicKey> {
    let pem = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    PublicKey::from_pem(&pem)
}

/// Refuses a secret key file (of any format) that group or others can read
/// or that another user owns, with the message [`load_private_key_file`]
/// gives ([`Error::InsecurePermissions`]: the file, its mode and `chmod 600`;
/// [`Error::ForeignOwner`]: the owner and `chown`). For key files this module does not
/// parse itself, such as the server's HPKE key file.
pub fn check_secret_file_permissions(path: &Path) -> Result<()> {
    check_private_permissions(path, LoadOptions::default())
}

#[cfg(unix)]
fn check_private_permissions(path: &Path, opts: LoadOptions) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 && !opts.allow_insecure_permissions {
        return Err(Error::InsecurePermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    // Another user who owns the file can read it and put a key of their
    // own in its place, whatever its mode.
    let uid = crate::secure_memory::effective_uid();
    if meta.uid() != uid && !opts.allow_insecure_permissions {
        return Err(Error::ForeignOwner {
            path: path.display().to_string(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_permissions(_path: &Path, _opts: LoadOptions) -> Result<()> {
    Ok(())
}

/// File names inside a key directory (the Python client's layout).
pub const PRIVATE_KEY_FILE: &str = "private_key.pem";
/// See [`PRIVATE_KEY_FILE`].
pub const PUBLIC_KEY_FILE: &str = "public_key.pem";

/// Where a saved key pair went.
#[derive(Clone, Debug)]
pub struct SavedKeys {
    /// `DIR/private_key.pem` (mode 0600).
    pub private_key: PathBuf,
    /// `DIR/public_key.pem` (mode 0644).
    pub public_key: PathBuf,
}

/// Saves a key pair as `DIR/private_key.pem` (PKCS#8, PBES2-encrypted when a
/// password is given, mode 0600) and `DIR/public_key.pem` (SPKI, 0644).
///
/// Each file is written to a temporary file created with its final mode, synced
/// and renamed into place, so the private key is never readable by others, and
/// a crash or full disk never leaves a half-written key. Existing keys are never
/// replaced unless `overwrite` is set: then each file is put in place only if
/// its name is still free at that moment ([`write_new`]), so of two processes
/// saving into one empty directory at once exactly one wins and the other gets
/// [`Error::AlreadyExists`] (and can load the winner's key).
pub fn save_key_pair(
    dir: &Path,
    key: &PrivateKey,
    password: Option<&SecretString>,
    overwrite: bool,
) -> Result<SavedKeys> {
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    if !overwrite {
        for p in [&private_path, &public_path] {
            if p.exists() {
                return Err(Error::AlreadyExists(p.display().to_string()));
            }
        }
    }
    create_dir_private(dir)?;
    let private_pem = key.to_pkcs8_pem(password)?;
    let write = if overwrite { write_atomic } else { write_new };
    write(&private_path, private_pem.as_bytes(), 0o600)?;
    write(&public_path, key.public_key().to_pem().as_bytes(), 0o644)?;
    sync_dir(dir);
    Ok(SavedKeys {
        private_key: private_path,
        public_key: public_path,
    })
}

fn create_dir_private(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` through a temporary file with mode `mode` from its
/// creation, fsync and rename. The temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_via_temp(path, bytes, mode, |tmp, path| fs::rename(tmp, path))
}

/// Like [`write_atomic`], but never replaces an existing file: the complete,
/// synced temporary file is hard-linked to `path`, which fails if the name is
/// taken (create-new semantics, atomic even against another process doing
/// the same), then the temporary name is removed. `path` thus either does
/// not exist or holds all of `bytes`. A taken name gives
/// [`Error::AlreadyExists`]. On a file system without hard links the name is
/// checked, then the file renamed into place (not atomic against a
/// concurrent writer there).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut taken = false;
    let result = write_via_temp(path, bytes, mode, |tmp, path| {
        let linked = match fs::hard_link(tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                taken = true;
                Err(e)
            }
            Err(_) if !path.exists() => fs::rename(tmp, path),
            Err(_) => {
                taken = true;
                Err(std::io::ErrorKind::AlreadyExists.into())
            }
            Ok(()) => Ok(()),
        };
        // Linked, renamed or refused: the temporary name goes either way.
        let _ = fs::remove_file(tmp);
        linked
    });
    match result {
        Err(_) if taken => Err(Error::AlreadyExists(path.display().to_string())),
        r => r,
    }
}

/// Creates a temporary file next to `path` with mode `mode`, writes and
/// syncs `bytes`, then calls `place(tmp, path)`. The temporary file is
/// removed on any failure (a full disk or a file size limit included).
fn write_via_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    place: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut rnd = [0u8; 8];
    aws_lc_rs::rand::fill(&mut rnd).map_err(|_| Error::EncryptionFailed)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(rnd)));
    let result = (|| -> std::io::Result<()> {
        let mut o = fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(mode);
        }
        let mut f = o.open(&tmp)?;
        // The umask may have removed bits from the requested mode; set it exactly.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        place(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What a PEM file holds, for `nomyo fingerprint FILE`.
pub fn public_key_of_pem_file(path: &Path, password: Option<&SecretString>) -> Result<PublicKey> {
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        return PublicKey::from_pem(&text);
    }
    // A private key: the same permission rule applies as for any use of it.
    check_private_permissions(path, LoadOptions::default())?;
    Ok(
        PrivateKey::from_pem(&text, password, &path.display().to_string())?
            .public_key()
            .clone(),
    )
}

#[cfg(test)]
mod kdf_cost_tests {
    use super::*;
    use der::EncodePem;

    #[test]
    fn fingerprint_of_parts_is_the_fingerprint_of_their_concatenation() {
        let parts: [&[u8]; 4] = [b"nomyo-v2-body\0", b"", b"enc", &[7u8; 5000]];
        assert_eq!(
            Fingerprint::of_parts(&parts),
            Fingerprint::of_bytes(&parts.concat())
        );
        assert_eq!(Fingerprint::of_parts(&[]), Fingerprint::of_bytes(b""));
    }

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
