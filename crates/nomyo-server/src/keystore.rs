//! The server's v1 RSA key: loading, first-start generation, rotation with a
//! grace period.
//!
//! The current key is what `GET /pki/public_key` publishes and what opens new
//! requests. After a rotation the previous key still opens requests for a
//! grace period (a client may have fetched the old public key just before),
//! then its last reference is dropped and aws-lc cleanses it. The current /
//! retired / grace / purge logic is [`crate::key_ring`]'s, shared with the
//! v2 HPKE keys.
//!
//! Every method that generates or loads a key does blocking work (RSA key
//! generation takes seconds at 4096 bits; PBKDF2 for a password-protected file
//! takes a fraction of one): call them from a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nomyo_core::keys::{
    load_private_key_file, save_key_pair, LoadOptions, PrivateKey, RsaBits, PRIVATE_KEY_FILE,
};
use nomyo_core::{Fingerprint, SecretString};

pub use crate::key_ring::DEFAULT_GRACE;
use crate::key_ring::{KeyRing, SharedRing};

/// One server key with its published forms, computed once.
pub struct ServerKey {
    key: PrivateKey,
    pem: Bytes,
    fingerprint: Fingerprint,
}

impl ServerKey {
    /// Wraps a private key.
    pub fn new(key: PrivateKey) -> Self {
        let pem = Bytes::from(key.public_key().to_pem());
        let fingerprint = key.public_key().fingerprint();
        Self {
            key,
            pem,
            fingerprint,
        }
    }

    /// The private key (opens v1 packages).
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The public key PEM (SPKI) as published.
    pub fn public_pem(&self) -> &Bytes {
        &self.pem
    }

    /// `sha256:` fingerprint of the public key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The keys that open requests right now: the current one (the published
/// key, [`KeyRing::current`]) and the retired ones still inside their grace
/// period.
pub type KeySet = KeyRing<Arc<ServerKey>, Arc<ServerKey>>;

impl KeySet {
    /// Every key that may open a request at `now` (pass
    /// [`crate::key_ring::now`]): the current one, then the retired ones in
    /// their grace period, newest first.
    pub fn openers(&self, now: Instant) -> impl Iterator<Item = &ServerKey> {
        std::iter::once(&**self.current()).chain(self.in_grace(now).map(|k| &**k))
    }
}

/// Where the key lives on disk, for loading and rotation.
pub struct KeySource {
    /// The key directory (`private_key.pem`, `public_key.pem`).
    pub dir: PathBuf,
    /// Password of the private key file, if it is (to be) encrypted.
    pub password: Option<SecretString>,
    /// Size of keys generated here.
    pub bits: RsaBits,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("dir", &self.dir)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("bits", &self.bits)
            .finish()
    }
}

/// How the key store got its key at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Loaded from the key directory.
    Loaded,
    /// Generated and saved (first start).
    Generated,
    /// Generated in memory only (ephemeral; never saved).
    Ephemeral,
}

/// The server's key store.
pub struct KeyStore {
    ring: SharedRing<Arc<ServerKey>, Arc<ServerKey>>,
    source: Option<KeySource>,
    ephemeral_bits: RsaBits,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("current", &self.current().fingerprint())
            .field("source", &self.source)
            .field("grace", &self.ring.grace())
            .finish()
    }
}

impl KeyStore {
    /// A store holding `key` in memory only; rotation generates a fresh key of
    /// the same size in memory.
    pub fn ephemeral(key: PrivateKey) -> Self {
        let bits = match key.bits() {
            b if b <= 2048 => RsaBits::B2048,
            b if b <= 3072 => RsaBits::B3072,
            _ => RsaBits::B4096,
        };
        Self::with(ServerKey::new(key), None, bits)
    }

    fn with(key: ServerKey, source: Option<KeySource>, ephemeral_bits: RsaBits) -> Self {
        Self {
            ring: SharedRing::new(Arc::new(key)),
            source,
            ephemeral_bits,
        }
    }

    /// Loads `DIR/private_key.pem`, or generates a key and saves it there
    /// (private key 0600, PBES2-encrypted when a password is given) if the
    /// directory holds no key yet. Blocking.
    ///
    /// Two processes starting at once on one empty directory (replicas) end
    /// up with the same key: the save only succeeds for the first one
    /// ([`save_key_pair`] without overwrite puts each file in place only if
    /// its name is free), and the other loads what the first one wrote.
    pub fn load_or_generate(source: KeySource) -> nomyo_core::Result<(Self, KeyOrigin)> {
        let path = source.dir.join(PRIVATE_KEY_FILE);
        let (key, origin) = if path.exists() {
            (load(&path, source.password.as_ref())?, KeyOrigin::Loaded)
        } else {
            let key = PrivateKey::generate(source.bits)?;
            match save_key_pair(&source.dir, &key, source.password.as_ref(), false) {
                Ok(_) => (key, KeyOrigin::Generated),
                // Another process saved its key first: use that one.
                Err(nomyo_core::Error::AlreadyExists(_)) if path.exists() => {
                    drop(key);
                    tracing::info!(
                        file = %path.display(),
                        "another process saved a server key first; loading it"
                    );
                    (load(&path, source.password.as_ref())?, KeyOrigin::Loaded)
                }
                Err(e) => return Err(e),
            }
        };
        let bits = source.bits;
        Ok((Self::with(ServerKey::new(key), Some(source), bits), origin))
    }

    /// Sets how long a retired key keeps opening requests (default
    /// [`DEFAULT_GRACE`]).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.ring = self.ring.with_grace(grace);
        self
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.ring.grace()
    }

    /// The current key set (cheap: one `Arc` clone under a read lock).
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.ring.snapshot()
    }

    /// The published key.
    pub fn current(&self) -> Arc<ServerKey> {
        Arc::clone(self.snapshot().current())
    }

    /// How many retired keys are still held (inside or past their grace, until purged).
    pub fn retired_count(&self) -> usize {
        self.snapshot().retired_count()
    }

    /// Makes `key` current at once; the previous key opens requests for the
    /// grace period. Returns the new fingerprint.
    pub fn install(&self, key: PrivateKey) -> Fingerprint {
        let new = Arc::new(ServerKey::new(key));
        let fp = new.fingerprint();
        self.ring.rotate(
            new,
            // The same key again (reinstalled) is not retired beside itself.
            |old| {
                if old.fingerprint() == fp {
                    Vec::new()
                } else {
                    vec![Arc::clone(old)]
                }
            },
            |_| true,
        );
        fp
    }

    /// Drops retired keys whose grace period is over. Returns how many were
    /// dropped (their memory is cleansed once the last in-flight request that
    /// holds them finishes).
    pub fn purge_expired(&self) -> usize {
        self.ring.purge_expired().len()
    }

    /// Rotation (SIGHUP): reloads the key directory; if it still holds the
    /// current key, generates a new one and saves it there (replacing the
    /// files atomically). An operator can thus either drop a new key in the
    /// directory or let the server make one. Without a key directory a fresh
    /// in-memory key is generated. Blocking. Returns the new fingerprint.
    pub fn rotate(&self) -> nomyo_core::Result<Fingerprint> {
        let current = self.current().fingerprint();
        let key = match &self.source {
            None => PrivateKey::generate(self.ephemeral_bits)?,
            Some(src) => {
                let path = src.dir.join(PRIVATE_KEY_FILE);
                let on_disk = if path.exists() {
                    Some(load(&path, src.password.as_ref())?)
                } else {
                    None
                };
                match on_disk {
                    Some(k) if k.public_key().fingerprint() != current => k,
                    _ => {
                        let k = PrivateKey::generate(src.bits)?;
                        save_key_pair(&src.dir, &k, src.password.as_ref(), true)?;
                        k
                    }
                }
            }
        };
        Ok(self.install(key))
    }
}

impl KeyStore {
    /// `DIR/private_key.pem` when the store has a key directory.
    pub fn key_file(&self) -> Option<PathBuf> {
        self.source.as_ref().map(|s| s.dir.join(PRIVATE_KEY_FILE))
    }

    /// Follows the key directory (a replica that rotates, or an operator,
    /// wrote a new key there): if `DIR/private_key.pem` holds another key than
    /// the current one, it becomes current and the previous one enters its
    /// grace period. Never generates or writes. `None` when nothing changed
    /// or the store has no directory. Blocking.
    pub fn reload(&self) -> nomyo_core::Result<Option<Fingerprint>> {
        let Some(src) = &self.source else {
            return Ok(None);
        };
        let path = src.dir.join(PRIVATE_KEY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let key = load(&path, src.password.as_ref())?;
        if key.public_key().fingerprint() == self.current().fingerprint() {
            return Ok(None);
        }
        Ok(Some(self.install(key)))
    }
}

fn load(path: &Path, password: Option<&SecretString>) -> nomyo_core::Result<PrivateKey> {
    load_private_key_file(path, password, LoadOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On tokio's paused clock: the grace period passes without waiting.
    #[tokio::test(start_paused = true)]
    async fn rotation_keeps_old_key_for_grace_then_drops_it() {
        use crate::key_ring::now;
        let a = PrivateKey::generate(RsaBits::B2048).unwrap();
        let fa = a.public_key().fingerprint();
        let store = KeyStore::ephemeral(a).with_grace(Duration::from_millis(200));
        assert_eq!(store.grace(), Duration::from_millis(200));
        let fb = store.rotate().unwrap();
        assert_ne!(fa, fb);
        assert_eq!(store.current().fingerprint(), fb);
        let set = store.snapshot();
        let fps: Vec<_> = set.openers(now()).map(|k| k.fingerprint()).collect();
        assert_eq!(fps, vec![fb, fa]);
        // Just inside the grace period: still opens, not purged.
        tokio::time::advance(Duration::from_millis(199)).await;
        assert_eq!(set.openers(now()).count(), 2);
        assert_eq!(store.purge_expired(), 0);
        tokio::time::advance(Duration::from_millis(51)).await;
        // Expired keys no longer open, even before the purge...
        let fps: Vec<_> = set.openers(now()).map(|k| k.fingerprint()).collect();
        assert_eq!(fps, vec![fb]);
        // ...and the purge drops them.
        assert_eq!(store.purge_expired(), 1);
        assert_eq!(store.retired_count(), 0);
    }

    #[test]
    fn first_start_generates_and_saves_then_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let src = || KeySource {
            dir: dir.path().join("k"),
            password: None,
            bits: RsaBits::B2048,
        };
        let (s1, o1) = KeyStore::load_or_generate(src()).unwrap();
        assert_eq!(o1, KeyOrigin::Generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.path().join("k").join(PRIVATE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600);
        }
        let (s2, o2) = KeyStore::load_or_generate(src()).unwrap();
        assert_eq!(o2, KeyOrigin::Loaded);
        assert_eq!(s1.current().fingerprint(), s2.current().fingerprint());
        // Rotation with an unchanged directory generates and saves a new key.
        let f = s2.rotate().unwrap();
        assert_ne!(f, s1.current().fingerprint());
        let (s3, _) = KeyStore::load_or_generate(src()).unwrap();
        assert_eq!(s3.current().fingerprint(), f);
    }

    #[test]
    fn concurrent_first_starts_on_one_empty_dir_share_one_key() {
        // Several stores generating into one empty directory at the same
        // moment: exactly one key is saved, and every store holds it.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let key_dir = dir.path().join("k");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (key_dir, barrier) = (key_dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        KeyStore::load_or_generate(KeySource {
                            dir: key_dir,
                            password: None,
                            bits: RsaBits::B2048,
                        })
                        .unwrap()
                    })
                })
                .collect();
            let stores: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let (on_disk, _) = KeyStore::load_or_generate(src_of(&key_dir)).unwrap();
            let want = on_disk.current().fingerprint();
            for (s, _) in &stores {
                assert_eq!(s.current().fingerprint(), want);
            }
            let generated = stores
                .iter()
                .filter(|(_, o)| *o == KeyOrigin::Generated)
                .count();
            assert_eq!(generated, 1);
            // The public key file belongs to the same key.
            let public = nomyo_core::keys::load_public_key_file(
                &key_dir.join(nomyo_core::keys::PUBLIC_KEY_FILE),
            )
            .unwrap();
            assert_eq!(public.fingerprint(), want);
            // No temporary file left behind.
            let names: Vec<_> = std::fs::read_dir(&key_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 2, "{names:?}");
        }
    }

    fn src_of(dir: &Path) -> KeySource {
        KeySource {
            dir: dir.to_owned(),
            password: None,
            bits: RsaBits::B2048,
        }
    }
}
