//! Key files: loading them with their permissions checked, saving a key
//! pair, and writing files atomically with their final mode.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::{PrivateKey, PublicKey};
use crate::error::{Error, Result};

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
