//! The server's HPKE keys for protocol v2 (docs/PROTOCOL.md §4.2, §6): one X25519
//! config (the EHBP reference suite, published first because EHBP clients
//! read only the first config) and one X-Wing config (post-quantum), and
//! their rotation.
//!
//! # Rotation and forward secrecy
//!
//! [`HpkeKeyStore::rotate`] generates a new pair of keys with new key ids and
//! publishes them at once; the previous pair still opens requests for the
//! grace period (a client may have sealed to it just before), then
//! [`HpkeKeyStore::purge_expired`] drops it. Dropping the last reference
//! erases the private key: the `hpke` crate's private keys wrap
//! `x25519_dalek::StaticSecret` and `x_wing::DecapsulationKey`, both
//! zeroize-on-drop (the crate enables their `zeroize` features). A request
//! for a dropped key id gets 422 and the client refetches the keys.
//!
//! Key ids are `u8`. Each rotation takes the next ids after the last ones
//! handed out, skipping any id still live (current or in grace), so an id
//! comes back only after 128 rotations, and a live id never.
//!
//! # On disk
//!
//! With a key directory (`hpke_keys.key`, mode 0600) the current pair is
//! saved so that clients' cached configs survive a restart. A rotation
//! replaces the file atomically with the new keys only (the retired keys,
//! still in memory for the grace period, are never written again); the old
//! file's content is overwritten with zeros before it is unlinked (best
//! effort: a journaling or copy-on-write file system or an SSD may keep old
//! blocks). File layout: `NHPK` `0x01`, then per key
//! `key_id (1) | kem_id (2, big-endian) | private key (32)`, X25519 first.
//!
//! The set is generated in memory at start when there is no key directory;
//! both KEMs generate in well under a millisecond.
//!
//! # Signed key lists
//!
//! Clients cannot pin or record keys that change every day, so the server's
//! long-lived v1 RSA key signs each published list ([`SignedKeyList`],
//! header `Nomyo-Keys-Signature`, [`nomyo_core::keys_signature`]); a client
//! that trusts the v1 key accepts every list it signed within the
//! signature's validity window. The signature is made once per key list
//! and RSA key (at start, after each rotation of either) and again when
//! half of its window has passed, never per request.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use bytes::Bytes;
use nomyo_core::keys::PrivateKey;
use nomyo_core::keys_signature::{KeysSignature, Validity, MAX_VALIDITY_SECS};
use nomyo_core::v2::keys::{Kem, KeyConfig, ServerKeyPair};
use nomyo_core::{Fingerprint, SecretBuf};

/// The key file in the key directory.
pub const KEY_FILE: &str = "hpke_keys.key";
/// The replay journal's default name in the key directory
/// ([`crate::replay_journal`]).
pub const REPLAY_JOURNAL_FILE: &str = crate::replay_journal::DEFAULT_FILE;
/// Key files of earlier builds (one raw key each); erased when found.
const LEGACY_KEY_FILES: [&str; 2] = ["hpke_x25519.key", "hpke_xwing.key"];
/// Magic and version at the start of [`KEY_FILE`].
const MAGIC: &[u8; 5] = b"NHPK\x01";
/// Length of a private key in the file (both KEMs: the X25519 scalar, the X-Wing seed).
const SECRET_LEN: usize = 32;
const RECORD_LEN: usize = 1 + 2 + SECRET_LEN;

/// Default interval between rotations.
pub const DEFAULT_ROTATE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Default time a rotated-out key still opens requests.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// A set of HPKE key pairs, X25519 first. `Debug` shows configs only.
#[derive(Debug, Clone)]
pub struct HpkeKeySet {
    keys: Vec<Arc<ServerKeyPair>>,
    encoded: Arc<Vec<u8>>,
}

impl HpkeKeySet {
    /// A fresh X25519 key and a fresh X-Wing key, with random adjacent key
    /// ids (an even id and the next one), so that sets made independently
    /// (a re-made key set, replicas that were not given one) rarely share an
    /// id: a client holding a stale config then gets 422 and refetches,
    /// instead of having its request tried against a different key.
    pub fn generate() -> Self {
        Self::generate_avoiding(&[])
    }

    /// Like [`Self::generate`], with ids none of which is in `used` (the
    /// ids of the set this one replaces, so that its clients get 422).
    pub fn generate_avoiding(used: &[u8]) -> Self {
        let free = |b: u8| !used.contains(&b) && !used.contains(&(b + 1));
        let start = rand::random::<u8>() & 0xFE;
        let base = (0..128u16)
            .map(|i| start.wrapping_add((i * 2) as u8))
            .find(|&b| free(b))
            .unwrap_or(start);
        Self::generate_with_ids(base, base + 1)
    }

    fn generate_with_ids(x25519: u8, xwing: u8) -> Self {
        Self::from_pairs(vec![
            ServerKeyPair::generate(x25519, Kem::X25519),
            ServerKeyPair::generate(xwing, Kem::XWing),
        ])
    }

    /// A set from existing pairs, in publication order (put X25519 first:
    /// EHBP clients read only the first config). Key ids must be distinct;
    /// the first pair with a given id wins.
    pub fn from_pairs(pairs: Vec<ServerKeyPair>) -> Self {
        let keys: Vec<Arc<ServerKeyPair>> = pairs.into_iter().map(Arc::new).collect();
        let configs: Vec<KeyConfig> = keys.iter().map(|k| k.config().clone()).collect();
        Self {
            encoded: Arc::new(KeyConfig::encode_list(&configs)),
            keys,
        }
    }

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
        match nomyo_core::keys::write_new(&path, set.encode_secret().expose_secret(), 0o600) {
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
        // plain buffer); a few keys are a few KiB, so a larger file is not
        // ours.
        const MAX: u64 = 64 * 1024;
        let mut raw = SecretBuf::with_capacity(4096);
        let n = std::io::copy(&mut file.take(MAX + 1), &mut raw)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if n > MAX {
            return Err(format!(
                "{}: larger than {MAX} bytes; not an HPKE key file",
                path.display()
            ));
        }
        Self::decode(raw.expose_secret())
            .map(Some)
            .map_err(|m| format!("{}: {m}", path.display()))
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
    fn encode_secret(&self) -> SecretBuf {
        let mut out = SecretBuf::new();
        out.extend_from_slice(MAGIC);
        for k in &self.keys {
            out.extend_from_slice(&[k.key_id()]);
            out.extend_from_slice(&k.kem().id().to_be_bytes());
            out.extend_from_slice(k.secret_bytes().expose_secret());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not an HPKE key file (bad header)")?;
        if body.is_empty() || body.len() % RECORD_LEN != 0 {
            return Err("truncated HPKE key file".into());
        }
        let mut pairs = Vec::new();
        for rec in body.chunks_exact(RECORD_LEN) {
            let key_id = rec[0];
            let kem_id = u16::from_be_bytes([rec[1], rec[2]]);
            let kem = Kem::from_id(kem_id).ok_or_else(|| format!("unknown KEM 0x{kem_id:04x}"))?;
            let pair = ServerKeyPair::from_secret_bytes(key_id, kem, &rec[3..])
                .map_err(|_| format!("invalid {kem} private key (key id {key_id})"))?;
            pairs.push(pair);
        }
        let kems: Vec<Kem> = pairs.iter().map(ServerKeyPair::kem).collect();
        if kems != [Kem::X25519, Kem::XWing] || pairs[0].key_id() == pairs[1].key_id() {
            return Err("expected one X25519 and one X-Wing key with distinct key ids".into());
        }
        Ok(Self::from_pairs(pairs))
    }

    /// Writes the set to `path` (0600): atomically replaces the previous
    /// file, whose content is then overwritten with zeros and unlinked.
    fn save(&self, path: &Path) -> Result<(), String> {
        let stale = stale_copy(path);
        let had_old = path.exists() && std::fs::hard_link(path, &stale).is_ok();
        nomyo_core::keys::write_atomic(path, self.encode_secret().expose_secret(), 0o600)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        if had_old {
            shred_and_remove(&stale);
        }
        Ok(())
    }

    /// The `application/ohttp-keys` body: every config, in order.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The key with this `key_id`.
    pub fn by_id(&self, key_id: u8) -> Option<&Arc<ServerKeyPair>> {
        self.keys.iter().find(|k| k.key_id() == key_id)
    }

    /// The first key of this KEM (selection by `enc` length).
    pub fn by_kem(&self, kem: Kem) -> Option<&Arc<ServerKeyPair>> {
        self.keys.iter().find(|k| k.kem() == kem)
    }

    /// The published configs, in order.
    pub fn configs(&self) -> Vec<KeyConfig> {
        self.keys.iter().map(|k| k.config().clone()).collect()
    }

    /// The key ids, in order.
    pub fn key_ids(&self) -> Vec<u8> {
        self.keys.iter().map(|k| k.key_id()).collect()
    }

    /// `key_id`s and fingerprints, for logs.
    fn describe(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{}#{} {}", k.kem(), k.key_id(), k.config().fingerprint()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The published key list with its signature by the server's v1 RSA key
/// (`Nomyo-Keys-Signature`, [`nomyo_core::keys_signature`]): clients that
/// trust the v1 key (pinned or recorded) thereby trust every rotation of
/// the HPKE keys. Made once per (key list, RSA key) pair, and again when
/// half of its validity window has passed (never per request); `Debug`
/// shows the signer only.
pub struct SignedKeyList {
    body: Bytes,
    signer: Fingerprint,
    validity: Validity,
    header: HeaderValue,
}

/// Seconds since the Unix epoch, by this machine's clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SignedKeyList {
    /// Signs `set`'s `application/ohttp-keys` body with `key` (RSA-PSS;
    /// about a millisecond for RSA-4096: run it on a blocking thread), valid
    /// from now for `lifetime` (the rotation period plus the grace period;
    /// at least an hour, at most 31 days).
    pub fn sign(set: &HpkeKeySet, key: &PrivateKey, lifetime: Duration) -> Result<Self, String> {
        let now = unix_now();
        let secs = lifetime.as_secs().clamp(3600, MAX_VALIDITY_SECS);
        let validity = Validity::new(now, now.saturating_add(secs))
            .ok_or_else(|| "the key list's validity window is out of range".to_owned())?;
        let sig = KeysSignature::sign(key, set.encoded(), validity)
            .map_err(|_| "signing the HPKE key list failed".to_owned())?;
        let header = HeaderValue::from_str(&sig.to_header_value())
            .map_err(|_| "the key-list signature is not a valid header value".to_owned())?;
        Ok(Self {
            body: Bytes::copy_from_slice(set.encoded()),
            signer: sig.key_fingerprint(),
            validity,
            header,
        })
    }

    /// The window the signature covers.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// Whether less than half of the validity window has passed at `now`
    /// (a list past that is signed again, well before clients refuse it).
    pub fn fresh_at(&self, now: u64) -> bool {
        let v = self.validity;
        now < v.not_before() + (v.not_after() - v.not_before()) / 2
    }

    /// Whether the background renewal should sign the list again at `now`:
    /// 40 % of the window has passed, ahead of the half-way point after
    /// which a fetch would sign it itself, so no fetch waits for RSA.
    pub fn renewal_due_at(&self, now: u64) -> bool {
        let v = self.validity;
        now >= v.not_before() + (v.not_after() - v.not_before()) * 2 / 5
    }

    /// The body as served (exactly the signed bytes).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Fingerprint of the RSA key that signed it.
    pub fn signer(&self) -> Fingerprint {
        self.signer
    }

    /// The `Nomyo-Keys-Signature` header value.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether this is a fresh signature of `set` by the key `signer`.
    pub fn is_for(&self, set: &HpkeKeySet, signer: Fingerprint) -> bool {
        self.signer == signer && self.body.as_ref() == set.encoded() && self.fresh_at(unix_now())
    }
}

impl std::fmt::Debug for SignedKeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedKeyList")
            .field("signer", &self.signer)
            .field("validity", &self.validity)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
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

/// A retired key: opens requests until `until`, then is dropped (erased).
#[derive(Debug)]
struct Retired {
    key: Arc<ServerKeyPair>,
    until: Instant,
}

/// What handlers see: the published set and the keys in grace.
#[derive(Debug)]
pub struct HpkeSnapshot {
    current: HpkeKeySet,
    retired: Vec<Retired>,
}

impl HpkeSnapshot {
    /// The published set.
    pub fn current(&self) -> &HpkeKeySet {
        &self.current
    }

    /// The key with this id that may open a request at `now`: a current key,
    /// or a retired one still in its grace period.
    pub fn by_id(&self, key_id: u8, now: Instant) -> Option<Arc<ServerKeyPair>> {
        self.current.by_id(key_id).cloned().or_else(|| {
            self.retired
                .iter()
                .find(|r| r.key.key_id() == key_id && r.until > now)
                .map(|r| Arc::clone(&r.key))
        })
    }

    /// Every key of this KEM that may open a request at `now`: the current
    /// one first, then the retired ones in grace, newest first.
    pub fn by_kem(&self, kem: Kem, now: Instant) -> Vec<Arc<ServerKeyPair>> {
        let current = self.current.keys.iter().filter(|k| k.kem() == kem).cloned();
        let retired = self
            .retired
            .iter()
            .rev()
            .filter(|r| r.key.kem() == kem && r.until > now)
            .map(|r| Arc::clone(&r.key));
        current.chain(retired).collect()
    }

    fn is_live(&self, key_id: u8) -> bool {
        self.current.by_id(key_id).is_some()
            || self.retired.iter().any(|r| r.key.key_id() == key_id)
    }
}

/// Two key ids that are not live, trying `next`, `next + 1`, ... (wrapping),
/// and the id to start from next time.
fn next_free_ids(snapshot: &HpkeSnapshot, mut next: u8) -> Option<([u8; 2], u8)> {
    let mut ids = [0u8; 2];
    let mut found = 0;
    for _ in 0..=u8::MAX {
        let id = next;
        next = next.wrapping_add(1);
        if !snapshot.is_live(id) {
            ids[found] = id;
            found += 1;
            if found == 2 {
                return Some((ids, next));
            }
        }
    }
    None
}

/// The outcome of a rotation, for logs and tests.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The new key ids (X25519, X-Wing).
    pub key_ids: Vec<u8>,
    /// Fingerprints of the new configs, in order.
    pub fingerprints: Vec<Fingerprint>,
    /// The key ids now in grace.
    pub retired_ids: Vec<u8>,
}

#[derive(Debug)]
struct StoreState {
    snapshot: Arc<HpkeSnapshot>,
    /// The next key id to try.
    next_id: u8,
    /// When the current keys were made (for the first scheduled rotation
    /// after a restart with saved keys).
    born: Instant,
}

/// The HPKE keys that open requests, and their rotation. Cheap lookups (one
/// read lock and an `Arc` clone); rotation and purging swap the snapshot.
#[derive(Debug)]
pub struct HpkeKeyStore {
    state: RwLock<StoreState>,
    /// Saved here after each rotation, if set.
    dir: Option<PathBuf>,
    grace: Duration,
    /// One rotation at a time (the file write happens under it).
    rotating: Mutex<()>,
}

impl HpkeKeyStore {
    /// A store around `current`, kept in memory only; retired keys get
    /// [`DEFAULT_GRACE`].
    pub fn new(current: HpkeKeySet) -> Self {
        let next_id = current
            .key_ids()
            .into_iter()
            .max()
            .unwrap_or(0)
            .wrapping_add(1);
        Self {
            state: RwLock::new(StoreState {
                snapshot: Arc::new(HpkeSnapshot {
                    current,
                    retired: Vec::new(),
                }),
                next_id,
                born: Instant::now(),
            }),
            dir: None,
            grace: DEFAULT_GRACE,
            rotating: Mutex::new(()),
        }
    }

    /// Saves every rotation's keys to `dir` (the set given to [`Self::new`]
    /// must already be saved there, e.g. by [`HpkeKeySet::load_or_generate`]).
    pub fn with_dir(mut self, dir: PathBuf) -> Self {
        self.dir = Some(dir);
        self
    }

    /// How long a rotated-out key still opens requests.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The current keys are already this old (saved keys loaded at start:
    /// the age of their file), so that a server restarted more often than
    /// it rotates still rotates on time.
    pub fn with_age(self, age: Duration) -> Self {
        {
            let mut st = self.write();
            st.born = Instant::now().checked_sub(age).unwrap_or(st.born);
        }
        self
    }

    /// How long ago the current keys were made.
    pub fn current_age(&self) -> Duration {
        self.read().born.elapsed()
    }

    /// The keys as of now.
    pub fn snapshot(&self) -> Arc<HpkeSnapshot> {
        Arc::clone(&self.read().snapshot)
    }

    /// The published set.
    pub fn current(&self) -> HpkeKeySet {
        self.snapshot().current.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StoreState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StoreState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Generates new keys with new ids, saves them (if the store has a
    /// directory) and publishes them; the previous ones enter their grace
    /// period. If saving fails nothing changes. Blocking (file I/O).
    pub fn rotate(&self) -> Result<Rotation, String> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let (snapshot, next) = {
            let s = self.read();
            (Arc::clone(&s.snapshot), s.next_id)
        };
        let (ids, next) = next_free_ids(&snapshot, next)
            .ok_or("no free HPKE key id: too many keys in their grace period")?;
        let set = HpkeKeySet::generate_with_ids(ids[0], ids[1]);
        if let Some(dir) = &self.dir {
            set.save(&dir.join(KEY_FILE))?;
        }
        let rotation = self.install(set, "rotated");
        self.write().next_id = next;
        Ok(rotation)
    }

    /// Follows the key file another process (a replica that rotates, or an
    /// operator) wrote: if `dir/hpke_keys.key` holds other keys than the
    /// current ones, they become current and the previous ones enter their
    /// grace period. `None` when nothing changed (or the store has no
    /// directory). Never writes. Blocking (file I/O).
    pub fn reload(&self) -> Result<Option<Rotation>, String> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let Some(set) = HpkeKeySet::load(dir)? else {
            return Ok(None);
        };
        if set.encoded() == self.current().encoded() {
            return Ok(None);
        }
        let next = set.key_ids().into_iter().max().unwrap_or(0).wrapping_add(1);
        let rotation = self.install(set, "reloaded from the key file");
        self.write().next_id = next;
        Ok(Some(rotation))
    }

    /// Publishes `set`; the current keys enter their grace period.
    fn install(&self, set: HpkeKeySet, how: &'static str) -> Rotation {
        let now = Instant::now();
        let until = now + self.grace;
        let mut st = self.write();
        let new_ids = set.key_ids();
        let mut retired: Vec<Retired> = st
            .snapshot
            .retired
            .iter()
            .filter(|r| r.until > now)
            .map(|r| Retired {
                key: Arc::clone(&r.key),
                until: r.until,
            })
            .collect();
        let retired_ids: Vec<u8> = st.snapshot.current.key_ids();
        retired.extend(st.snapshot.current.keys.iter().map(|k| Retired {
            key: Arc::clone(k),
            until,
        }));
        // A key set made elsewhere (reloaded) may reuse an id still in its
        // grace period: lookups by id find the new key first, so the old one
        // could never open anything again. Drop it now and say so.
        let before = retired.len();
        retired.retain(|r| !new_ids.contains(&r.key.key_id()));
        if retired.len() != before {
            tracing::warn!(
                dropped = before - retired.len(),
                new_ids = ?new_ids,
                "the new HPKE keys reuse key ids still in their grace period: clients holding the old configs get 400 until they refetch (make key sets with `nomyo keygen --server --force` on the old directory, which avoids its ids)"
            );
        }
        let rotation = Rotation {
            key_ids: set.key_ids(),
            fingerprints: set.keys.iter().map(|k| k.config().fingerprint()).collect(),
            retired_ids,
        };
        tracing::info!(
            keys = %set.describe(),
            retired = ?rotation.retired_ids,
            grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            saved = self.dir.is_some(),
            "HPKE keys {how}"
        );
        st.snapshot = Arc::new(HpkeSnapshot {
            current: set,
            retired,
        });
        st.born = now;
        rotation
    }

    /// Drops the retired keys whose grace period is over; their private keys
    /// are erased once the last in-flight request using them lets go.
    /// Returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        {
            let s = self.read();
            if !s.snapshot.retired.iter().any(|r| r.until <= now) {
                return 0;
            }
        }
        let mut st = self.write();
        let before = st.snapshot.retired.len();
        let dropped: Vec<u8> = st
            .snapshot
            .retired
            .iter()
            .filter(|r| r.until <= now)
            .map(|r| r.key.key_id())
            .collect();
        let retired = st
            .snapshot
            .retired
            .iter()
            .filter(|r| r.until > now)
            .map(|r| Retired {
                key: Arc::clone(&r.key),
                until: r.until,
            })
            .collect::<Vec<_>>();
        st.snapshot = Arc::new(HpkeSnapshot {
            current: st.snapshot.current.clone(),
            retired,
        });
        let n = before - st.snapshot.retired.len();
        drop(st);
        tracing::info!(key_ids = ?dropped, "retired HPKE keys dropped after their grace period");
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "nomyo-hpke-test-{}-{}",
            std::process::id(),
            hex::encode(nomyo_core::v2::response::random_response_nonce().unwrap())
        ))
    }

    #[test]
    fn the_background_renewal_comes_before_a_fetch_would_sign() {
        let key = nomyo_core::keys::PrivateKey::generate(nomyo_core::keys::RsaBits::B2048).unwrap();
        let signed =
            SignedKeyList::sign(&HpkeKeySet::generate(), &key, Duration::from_secs(10_000))
                .unwrap();
        let nbf = signed.validity().not_before();
        assert!(!signed.renewal_due_at(nbf + 3_999));
        // Due at 40 %, while a fetch still serves it as fresh (until 50 %).
        assert!(signed.renewal_due_at(nbf + 4_000));
        assert!(signed.fresh_at(nbf + 4_000));
        assert!(signed.fresh_at(nbf + 4_999));
        assert!(!signed.fresh_at(nbf + 5_000));
    }

    #[test]
    fn x25519_first_then_xwing() {
        let set = HpkeKeySet::generate();
        let parsed = KeyConfig::parse_list(set.encoded()).unwrap();
        assert_eq!(parsed.len(), 2);
        let x = parsed[0].key_id;
        assert_eq!(x % 2, 0, "an even id, then the next one");
        assert_eq!((parsed[0].key_id, parsed[0].kem), (x, Kem::X25519));
        assert_eq!((parsed[1].key_id, parsed[1].kem), (x + 1, Kem::XWing));
        assert_eq!(set.by_id(x + 1).unwrap().kem(), Kem::XWing);
        assert!(set.by_id(x.wrapping_add(7)).is_none());
        assert_eq!(set.by_kem(Kem::X25519).unwrap().key_id(), x);
    }

    #[test]
    fn fresh_sets_get_random_ids_that_avoid_the_replaced_ones() {
        let firsts: std::collections::HashSet<u8> = (0..16)
            .map(|_| HpkeKeySet::generate().key_ids()[0])
            .collect();
        assert!(firsts.len() > 1, "ids are not random: {firsts:?}");
        for _ in 0..64 {
            let old = HpkeKeySet::generate();
            let new = HpkeKeySet::generate_avoiding(&old.key_ids());
            for id in new.key_ids() {
                assert!(!old.key_ids().contains(&id));
            }
        }
        // Every pair but one taken: that one is found.
        let used: Vec<u8> = (0..=255u8).filter(|&i| i != 200 && i != 201).collect();
        assert_eq!(
            HpkeKeySet::generate_avoiding(&used).key_ids(),
            vec![200, 201]
        );
    }

    #[test]
    fn reloading_a_set_that_reuses_ids_in_grace_drops_the_shadowed_keys() {
        let store = HpkeKeyStore::new(HpkeKeySet::generate_with_ids(10, 11))
            .with_grace(Duration::from_secs(60));
        store.install(HpkeKeySet::generate_with_ids(20, 21), "test");
        // Made elsewhere with an id still in grace (11).
        store.install(HpkeKeySet::generate_with_ids(11, 12), "test");
        let snap = store.snapshot();
        let now = Instant::now();
        assert_eq!(
            snap.by_id(11, now).unwrap().kem(),
            Kem::X25519,
            "the new key"
        );
        assert!(snap.by_id(10, now).is_some() && snap.by_id(20, now).is_some());
        assert_eq!(
            snap.by_kem(Kem::XWing, now)
                .iter()
                .map(|k| k.key_id())
                .collect::<Vec<_>>(),
            vec![12, 21],
            "the shadowed X-Wing key 11 is gone"
        );
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
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_publishes_new_ids_keeps_old_in_grace_then_drops_and_erases() {
        let store = HpkeKeyStore::new(HpkeKeySet::generate_with_ids(0, 1))
            .with_grace(Duration::from_secs(60));
        let old = store.current();
        let old_x = Arc::downgrade(old.by_id(0).unwrap());
        let r = store.rotate().unwrap();
        assert_eq!(r.key_ids, vec![2, 3]);
        assert_eq!(r.retired_ids, vec![0, 1]);
        let snap = store.snapshot();
        let parsed = KeyConfig::parse_list(snap.current().encoded()).unwrap();
        assert_eq!((parsed[0].key_id, parsed[0].kem), (2, Kem::X25519));
        assert_eq!((parsed[1].key_id, parsed[1].kem), (3, Kem::XWing));
        assert_eq!(r.fingerprints[0], parsed[0].fingerprint());
        // In grace: the old ids still open, the current key is tried first.
        let now = Instant::now();
        assert!(snap.by_id(0, now).is_some() && snap.by_id(1, now).is_some());
        let xs: Vec<u8> = snap
            .by_kem(Kem::X25519, now)
            .iter()
            .map(|k| k.key_id())
            .collect();
        assert_eq!(xs, vec![2, 0]);
        // Past the grace (as seen by a lookup): not usable any more.
        let later = now + Duration::from_secs(61);
        assert!(snap.by_id(0, later).is_none());
        assert_eq!(snap.by_kem(Kem::X25519, later).len(), 1);
        drop((snap, old));
        assert!(old_x.upgrade().is_some(), "still in grace: kept");
        // A store with zero grace drops them at the first purge.
        let store =
            HpkeKeyStore::new(HpkeKeySet::generate_with_ids(0, 1)).with_grace(Duration::ZERO);
        let weak = Arc::downgrade(store.current().by_id(1).unwrap());
        store.rotate().unwrap();
        assert_eq!(store.purge_expired(), 2);
        assert!(store.snapshot().by_id(1, Instant::now()).is_none());
        // The last reference is gone: the private key was dropped, hence zeroized.
        assert!(weak.upgrade().is_none());
        assert_eq!(store.purge_expired(), 0);
    }

    /// A snapshot whose live ids are `current` and `retired` (X25519 keys:
    /// X-Wing key generation is slow in unoptimised test builds).
    fn snapshot_with(current: [u8; 2], retired: &[u8]) -> HpkeSnapshot {
        let far = Instant::now() + Duration::from_secs(3600);
        HpkeSnapshot {
            current: HpkeKeySet::from_pairs(
                current
                    .iter()
                    .map(|&id| ServerKeyPair::generate(id, Kem::X25519))
                    .collect(),
            ),
            retired: retired
                .iter()
                .map(|&id| Retired {
                    key: Arc::new(ServerKeyPair::generate(id, Kem::X25519)),
                    until: far,
                })
                .collect(),
        }
    }

    #[test]
    fn key_ids_never_reuse_a_live_id_and_wrap() {
        // Counting on from the last ids handed out.
        let s = snapshot_with([0, 1], &[]);
        assert_eq!(next_free_ids(&s, 2), Some(([2, 3], 4)));
        // Wrapping past 255, skipping the live ids.
        let s = snapshot_with([254, 255], &[0, 2]);
        assert_eq!(next_free_ids(&s, 254), Some(([1, 3], 4)));
        // Every id but one live: no pair to hand out, so no reuse.
        let all_but_7: Vec<u8> = (2..=255).filter(|&i| i != 7).collect();
        let s = snapshot_with([0, 1], &all_but_7);
        assert_eq!(next_free_ids(&s, 0), None);
        // Real rotations: successive ids, never one that is live.
        let store = HpkeKeyStore::new(HpkeKeySet::generate_with_ids(0, 1))
            .with_grace(Duration::from_secs(3600));
        let mut seen = std::collections::HashSet::from([0u8, 1]);
        for _ in 0..3 {
            let r = store.rotate().unwrap();
            for id in r.key_ids {
                assert!(seen.insert(id), "id {id} reused while live");
            }
        }
        assert_eq!(store.current().key_ids(), vec![6, 7]);
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
        assert_eq!(file.len(), MAGIC.len() + 2 * RECORD_LEN);
        for s in &old_secrets {
            assert!(
                !file.windows(SECRET_LEN).any(|w| w == s.as_slice()),
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
            assert!(b.snapshot().by_id(id, Instant::now()).is_some());
        }
        assert!(b.reload().unwrap().is_none());
        // A store reloading never writes.
        let before = std::fs::read(dir.join(KEY_FILE)).unwrap();
        b.reload().unwrap();
        assert_eq!(std::fs::read(dir.join(KEY_FILE)).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
