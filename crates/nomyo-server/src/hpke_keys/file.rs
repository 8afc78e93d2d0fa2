//! The key set on disk: `KEY_DIR/hpke_keys.key` (0600), in the format of
//! [`nomyo_core::v2::key_file`]. Loading checks the file's permissions and
//! reads it straight into locked memory that is wiped when dropped; saving
//! replaces it atomically and overwrites the old copy with zeros before
//! unlinking it (best effort). Every function here blocks.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use nomyo_core::v2::key_file::{self, KeyFileError};
use nomyo_core::SecretBuf;

use super::{HpkeKeySet, KEY_FILE};

/// Key files of earlier builds (one raw key each); erased when found.
const LEGACY_KEY_FILES: [&str; 2] = ["hpke_x25519.key", "hpke_xwing.key"];

impl HpkeKeySet {
    /// Loads the set from `dir/hpke_keys.key`, or generates one and saves it
    /// there (0600). Returns the set and whether it was generated. Errors
    /// name the file, never its content. Blocking.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), String> {
        let path = dir.join(KEY_FILE);
        // A copy left by a rotation interrupted before it erased it.
        let stale = stale_copy(&path);
        if stale.exists() {
            shred_and_remove(&stale);
        }
        for legacy in LEGACY_KEY_FILES.map(|f| dir.join(f)) {
            if legacy.exists() {
                tracing::info!(file = %legacy.display(), "erasing an HPKE key file of an earlier format");
                shred_and_remove(&legacy);
            }
        }
        if let Some(set) = Self::load(dir)? {
            return Ok((set, false));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let set = Self::generate();
        // Create-new: of two replicas starting at once on one empty
        // directory, one saves its keys and the other loads them.
        match nomyo_core::keys::write_new(&path, set.encode_secret(&path)?.expose_secret(), 0o600) {
            Ok(()) => Ok((set, true)),
            Err(nomyo_core::Error::AlreadyExists(_)) => {
                tracing::info!(file = %path.display(), "another process saved HPKE keys first; loading them");
                let loaded = Self::load(dir)?
                    .ok_or_else(|| format!("{} vanished while loading it", path.display()))?;
                Ok((loaded, false))
            }
            Err(e) => Err(format!("writing {}: {e}", path.display())),
        }
    }

    /// Loads the set from `dir/hpke_keys.key` if that file exists and is
    /// not readable by group or others (0600 or 0400); reads only (a
    /// read-only secret mount is fine). Errors name the file, never
    /// its content. Blocking.
    pub fn load(dir: &Path) -> Result<Option<Self>, String> {
        use std::io::Read;
        let path = dir.join(KEY_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        // Like the server key: a group- or world-readable key file may
        // already have been copied, and one another user owns may have been
        // replaced; refuse it and say how to fix it.
        nomyo_core::keys::check_secret_file_permissions(&path).map_err(|e| e.to_string())?;
        // Straight into locked memory that is wiped when dropped (never a
        // plain buffer); one byte more than the format allows, so that a
        // larger file is refused as such.
        let mut raw = SecretBuf::with_capacity(4096);
        let max = u64::try_from(key_file::MAX_LEN).unwrap_or(u64::MAX);
        std::io::copy(&mut file.take(max + 1), &mut raw)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let [x25519, xwing] =
            key_file::parse(raw.expose_secret()).map_err(|e| unusable(&path, &e))?;
        Ok(Some(Self::from_pairs(vec![x25519, xwing])))
    }

    /// Makes a new set for `dir` (as `nomyo keygen --server` does): with
    /// ids none of which the set it replaces uses, so that clients holding
    /// the old configs get 422 and refetch; the old file, if any, is
    /// replaced atomically, then overwritten with zeros and unlinked.
    /// Blocking.
    pub fn replace_in(dir: &Path) -> Result<Self, String> {
        let old_ids = match Self::load(dir) {
            Ok(Some(old)) => old.key_ids(),
            // An unreadable or loose file is replaced all the same.
            Ok(None) | Err(_) => Vec::new(),
        };
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let set = Self::generate_avoiding(&old_ids);
        set.save(&dir.join(KEY_FILE))?;
        Ok(set)
    }

    /// The file encoding (secret: only for the 0600 key file).
    fn encode_secret(&self, path: &Path) -> Result<SecretBuf, String> {
        key_file::encode(self.keys.iter().map(|k| &**k))
            .map_err(|e| format!("not writing {}: {e}", path.display()))
    }

    /// Writes the set to `path` (0600): atomically replaces the previous
    /// file, whose content is then overwritten with zeros and unlinked.
    pub(super) fn save(&self, path: &Path) -> Result<(), String> {
        let stale = stale_copy(path);
        let had_old = path.exists() && std::fs::hard_link(path, &stale).is_ok();
        nomyo_core::keys::write_atomic(path, self.encode_secret(path)?.expose_secret(), 0o600)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        if had_old {
            shred_and_remove(&stale);
        }
        Ok(())
    }
}

/// A key file that cannot be used: what is wrong, and what to do.
fn unusable(path: &Path, e: &KeyFileError) -> String {
    format!(
        "{}: {e}; restore it from a backup, or remove it to have a new key set made and saved \
         (clients holding the old configs get 422 and refetch)",
        path.display()
    )
}

fn stale_copy(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".old");
    path.with_file_name(name)
}

/// Overwrites a file with zeros, syncs and unlinks it. Best effort.
fn shred_and_remove(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0).min(1 << 20)];
            let _ = f.write_all(&zeros);
            let _ = f.sync_all();
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "could not remove an old HPKE key file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpke_keys::HpkeKeyStore;
    use crate::key_ring::now;
    use std::sync::Arc;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "nomyo-hpke-test-{}-{}",
            std::process::id(),
            hex::encode(nomyo_core::v2::response::random_response_nonce().unwrap())
        ))
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn saved_0600_and_reloaded_identically() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LEGACY_KEY_FILES[0]), [7u8; 32]).unwrap();
        let (a, generated) = HpkeKeySet::load_or_generate(&dir).unwrap();
        assert!(generated);
        assert!(
            !dir.join(LEGACY_KEY_FILES[0]).exists(),
            "old-format key erased"
        );
        #[cfg(unix)]
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        let (b, generated) = HpkeKeySet::load_or_generate(&dir).unwrap();
        assert!(!generated);
        assert_eq!(a.encoded(), b.encoded());
        for bad in [&b"short"[..], &[0u8; 75][..]] {
            std::fs::write(dir.join(KEY_FILE), bad).unwrap();
            let err = HpkeKeySet::load_or_generate(&dir).unwrap_err();
            assert!(err.contains(KEY_FILE), "{err}");
            assert!(err.contains("not an HPKE key file"), "{err}");
            assert!(err.contains("remove it"), "{err}");
        }
        // A file past the format's limit is refused as too large, after
        // reading one byte more than the limit.
        std::fs::write(dir.join(KEY_FILE), vec![0u8; key_file::MAX_LEN + 100]).unwrap();
        let err = HpkeKeySet::load_or_generate(&dir).unwrap_err();
        assert!(err.contains("larger than 65536 bytes"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_rewrites_the_file_with_the_new_keys_only() {
        let dir = temp_dir();
        let (set, _) = HpkeKeySet::load_or_generate(&dir).unwrap();
        let old_file = std::fs::read(dir.join(KEY_FILE)).unwrap();
        let old_secrets: Vec<Vec<u8>> = set
            .keys
            .iter()
            .map(|k| k.secret_bytes().expose_secret().to_vec())
            .collect();
        let first = set.key_ids()[0];
        let store = HpkeKeyStore::new(set).with_dir(dir.clone());
        store.rotate().unwrap();
        let file = std::fs::read(dir.join(KEY_FILE)).unwrap();
        assert_ne!(file, old_file);
        assert_eq!(file.len(), key_file::MAGIC.len() + 2 * key_file::RECORD_LEN);
        for s in &old_secrets {
            assert!(
                !file
                    .windows(key_file::SECRET_LEN)
                    .any(|w| w == s.as_slice()),
                "old key left in the file"
            );
        }
        #[cfg(unix)]
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        // Nothing else in the directory (no temporary, no stale copy).
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![KEY_FILE.to_owned()]);
        // A restart loads exactly the new keys, with their ids.
        let (reloaded, generated) = HpkeKeySet::load_or_generate(&dir).unwrap();
        assert!(!generated);
        assert_eq!(reloaded.encoded(), store.current().encoded());
        assert_eq!(
            reloaded.key_ids(),
            vec![first.wrapping_add(2), first.wrapping_add(3)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_first_starts_on_one_empty_dir_share_one_key_set() {
        // Replicas starting at the same moment on an empty directory: one
        // saves, the others load what it saved; all hold the same keys.
        for _ in 0..3 {
            let dir = temp_dir();
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (dir, barrier) = (dir.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        HpkeKeySet::load_or_generate(&dir).unwrap()
                    })
                })
                .collect();
            let sets: Vec<(HpkeKeySet, bool)> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(sets.iter().filter(|(_, generated)| *generated).count(), 1);
            for (set, _) in &sets {
                assert_eq!(set.encoded(), sets[0].0.encoded());
            }
            let names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, vec![KEY_FILE.to_owned()], "no temporary left");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn reload_follows_a_file_written_by_another_store() {
        let dir = temp_dir();
        let (set, _) = HpkeKeySet::load_or_generate(&dir).unwrap();
        let a = HpkeKeyStore::new(set.clone()).with_dir(dir.clone());
        let b = HpkeKeyStore::new(set).with_dir(dir.clone());
        assert!(b.reload().unwrap().is_none(), "nothing changed yet");
        let old_ids = b.current().key_ids();
        let r = a.rotate().unwrap();
        let followed = b.reload().unwrap().expect("b follows a's rotation");
        assert_eq!(followed.key_ids, r.key_ids);
        assert_eq!(b.current().encoded(), a.current().encoded());
        // The previous keys still open requests in their grace period.
        for id in old_ids {
            assert!(b.snapshot().by_id(id, now()).is_some());
        }
        assert!(b.reload().unwrap().is_none());
        // A store reloading never writes.
        let before = std::fs::read(dir.join(KEY_FILE)).unwrap();
        b.reload().unwrap();
        assert_eq!(std::fs::read(dir.join(KEY_FILE)).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
