//! The local replay window on disk, so that a restart does not reopen it.
//!
//! v1 packages carry no time: without this, a request captured before a
//! restart (from a TLS terminator's logs, say) could be answered once more
//! by the restarted server. The journal is an append-only file of 40-byte
//! records, `SHA-256 replay key (32) | expiry in Unix milliseconds (8, big
//! endian)`; an expiry of 0 gives a key back (a request refused before it
//! reached the backend). Only hashes of public request bytes and times are
//! written, nothing secret.
//!
//! - **Start**: the file is read, expired and given-back entries dropped,
//!   the rest restored into the window (with the time each has left) and the
//!   file rewritten with them alone (compaction), atomically (temporary file,
//!   `fsync`, rename).
//! - **Claims** are appended by one writer thread in batches: every claim
//!   waiting when the thread wakes is written with one `write` and made
//!   durable with one `fdatasync` (group commit), then all of them are
//!   answered. A claim is not answered before its record is on disk, so a
//!   crash never forgets a request the backend was given; a write failure
//!   refuses the request (503), as the shared store does.
//! - **Compaction** while running: when the file holds more than twice the
//!   live records (plus 64 Ki), the writer rewrites it with the live ones.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::limits::ReplayKey;

/// Bytes per record.
pub const RECORD: usize = 40;
/// Compact when the file holds this many records more than twice the live ones.
const COMPACT_SLACK: usize = 64 * 1024;

/// Where the journal lives next to the server key, by default.
pub const DEFAULT_FILE: &str = "replay_window.log";

enum Job {
    Claim {
        keys: Vec<ReplayKey>,
        expires_ms: u64,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    Release(Vec<ReplayKey>),
}

/// The writer of the journal (cheap to share: one channel to its thread).
#[derive(Debug)]
pub struct ReplayJournal {
    tx: Option<mpsc::Sender<Job>>,
    path: PathBuf,
    /// The writer thread, which holds the journal's lock until it ends.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ReplayJournal {
    /// Lets the writer finish what is queued and release the lock before
    /// returning, so that a server restarted in the same process (or the
    /// next test) can open the journal at once.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// An entry restored at start: its key and how long it has left.
pub type Restored = Vec<(ReplayKey, Duration)>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn record(key: &ReplayKey, expires_ms: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..32].copy_from_slice(key);
    r[32..].copy_from_slice(&expires_ms.to_be_bytes());
    r
}

/// Reads a journal's live entries (expiry in the future, not given back);
/// a torn last record (a crash mid-write) is ignored.
fn read_live(path: &Path, now: u64) -> Result<HashMap<ReplayKey, u64>, String> {
    let mut live = HashMap::new();
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(live),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    for r in bytes.chunks_exact(RECORD) {
        let mut key = [0u8; 32];
        key.copy_from_slice(&r[..32]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&r[32..]);
        let exp = u64::from_be_bytes(exp);
        if exp > now {
            live.insert(key, exp);
        } else {
            live.remove(&key);
        }
    }
    Ok(live)
}

/// Takes the journal's lock file (`<path>.lock`, created when missing);
/// an error names the file and what to do when another server holds it.
fn lock_journal(path: &Path) -> Result<File, String> {
    let lock_path = path.with_extension("lock");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "the replay journal {} is in use by another nomyo serve; give each server its own \
             --replay-journal FILE, or share one window through --replay-redis-url",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(format!("locking {}: {e}", lock_path.display()))
        }
    }
}

/// Writes `records` to `path` atomically (temporary file, `fsync`, rename,
/// directory `fsync`) and opens it for appending.
fn rewrite(path: &Path, records: &[[u8; RECORD]]) -> Result<File, String> {
    let tmp = path.with_extension("compacting");
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    {
        // A stale temporary file (or a link planted in its place) is
        // removed, then the file is created anew: never followed.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err("creating", e))?;
        let mut buf = Vec::with_capacity(records.len() * RECORD);
        for r in records {
            buf.extend_from_slice(r);
        }
        f.write_all(&buf).map_err(|e| err("writing", e))?;
        f.sync_all().map_err(|e| err("syncing", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

impl ReplayJournal {
    /// Opens (or creates) the journal at `path`: returns the writer and the
    /// entries still live, which the caller restores into its window. The
    /// file is compacted to those entries first. Blocking.
    ///
    /// One server per journal: an exclusive lock on `<path>.lock` (held by
    /// the writer thread for the life of the server) refuses a second
    /// server on the same file, whose compactions would replace the first
    /// one's file under it and lose its records.
    pub fn open(path: &Path) -> Result<(Self, Restored), String> {
        let lock = lock_journal(path)?;
        let now = now_ms();
        let live = read_live(path, now)?;
        let mut order: Vec<(ReplayKey, u64)> = live.into_iter().collect();
        order.sort_by_key(|(_, exp)| *exp);
        let records: Vec<[u8; RECORD]> = order.iter().map(|(k, e)| record(k, *e)).collect();
        let file = rewrite(path, &records)?;
        let restored = order
            .iter()
            .map(|(k, exp)| (*k, Duration::from_millis(exp - now)))
            .collect();
        let (tx, rx) = mpsc::channel();
        let p = path.to_owned();
        let writer_thread = std::thread::Builder::new()
            .name("nomyo-replay-journal".into())
            .spawn(move || {
                let _lock = lock;
                writer(p, file, rx, order)
            })
            .map_err(|e| format!("starting the replay journal writer: {e}"))?;
        Ok((
            Self {
                tx: Some(tx),
                path: path.to_owned(),
                writer: Some(writer_thread),
            },
            restored,
        ))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `keys` as used until `window` from now; returns once they are
    /// on disk (with every other claim of the same batch).
    pub async fn claim(&self, keys: &[ReplayKey], window: Duration) -> Result<(), String> {
        let expires_ms = now_ms().saturating_add(u64::try_from(window.as_millis()).unwrap_or(0));
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| "replay journal writer stopped".to_owned())?
            .send(Job::Claim {
                keys: keys.to_vec(),
                expires_ms: expires_ms.max(1),
                done,
            })
            .map_err(|_| "replay journal writer stopped".to_owned())?;
        wait.await
            .map_err(|_| "replay journal writer stopped".to_owned())?
    }

    /// Records that `keys` were given back (not waited for: at worst a
    /// restart keeps them used until they expire).
    pub fn release(&self, keys: &[ReplayKey]) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Release(keys.to_vec()));
        }
    }
}

/// The writer thread: group commit of every waiting job, then compaction
/// when the file has grown well past the live entries.
fn writer(path: PathBuf, mut file: File, rx: mpsc::Receiver<Job>, initial: Vec<(ReplayKey, u64)>) {
    // The live entries in expiry order (the window is one length, so claims
    // arrive nearly in expiry order), and given-back keys.
    let mut live: VecDeque<(ReplayKey, u64)> = initial.into_iter().collect();
    let mut released: HashMap<ReplayKey, ()> = HashMap::new();
    let mut in_file = live.len();
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        buf.clear();
        let mut waiting = Vec::new();
        for job in jobs {
            match job {
                Job::Claim {
                    keys,
                    expires_ms,
                    done,
                } => {
                    for k in &keys {
                        buf.extend_from_slice(&record(k, expires_ms));
                        live.push_back((*k, expires_ms));
                        released.remove(k);
                    }
                    waiting.push(done);
                }
                Job::Release(keys) => {
                    for k in &keys {
                        buf.extend_from_slice(&record(k, 0));
                        released.insert(*k, ());
                    }
                }
            }
        }
        let t = std::time::Instant::now();
        let result = file
            .write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("writing {}: {e}", path.display()));
        if result.is_ok() {
            in_file += buf.len() / RECORD;
        } else {
            // A partial write (a full disk) would leave a torn record in
            // the middle of the file and misalign every later one: cut the
            // file back to its last whole batch (appends follow the end).
            let _ = file.set_len((in_file * RECORD) as u64);
        }
        tracing::trace!(
            records = buf.len() / RECORD,
            claims = waiting.len(),
            sync_us = t.elapsed().as_micros() as u64,
            "replay journal batch written"
        );
        if let Err(e) = &result {
            tracing::error!(error = %e, "replay journal write failed; refusing requests (503) until it works");
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
        // Expired entries leave the live list; given-back ones are dropped
        // when the file is compacted.
        let now = now_ms();
        while live.front().is_some_and(|(_, exp)| *exp <= now) {
            live.pop_front();
        }
        if in_file > 2 * live.len() + COMPACT_SLACK {
            live.retain(|(k, _)| !released.contains_key(k));
            released.clear();
            let records: Vec<[u8; RECORD]> = live.iter().map(|(k, e)| record(k, *e)).collect();
            match rewrite(&path, &records) {
                Ok(f) => {
                    file = f;
                    tracing::debug!(
                        before = in_file,
                        after = records.len(),
                        "replay journal compacted"
                    );
                    in_file = records.len();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "compacting the replay journal failed; it keeps growing")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claims_survive_a_restart_and_expired_or_released_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_FILE);
        let (j, restored) = ReplayJournal::open(&path).unwrap();
        assert!(restored.is_empty());
        j.claim(&[[1; 32], [2; 32]], Duration::from_secs(60))
            .await
            .unwrap();
        j.claim(&[[3; 32]], Duration::from_millis(1)).await.unwrap();
        j.claim(&[[4; 32]], Duration::from_secs(60)).await.unwrap();
        j.release(&[[4; 32]]);
        // A claim after the release is on disk once it returns, so the
        // release (sent before it) is too.
        j.claim(&[[5; 32]], Duration::from_secs(60)).await.unwrap();
        drop(j);
        // Key 3's millisecond window is certainly over before the restart.
        std::thread::sleep(Duration::from_millis(50));
        // A torn record at the end (a crash mid-write) is ignored.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9u8; 17]).unwrap();
        drop(f);
        let (_j, restored) = ReplayJournal::open(&path).unwrap();
        let mut keys: Vec<u8> = restored.iter().map(|(k, _)| k[0]).collect();
        keys.sort();
        assert_eq!(keys, vec![1, 2, 5]);
        assert!(restored
            .iter()
            .all(|(_, left)| *left > Duration::from_secs(50)));
        // Compacted at start: three records, nothing else.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * RECORD as u64);
    }

    /// Two servers on one journal would replace each other's file when
    /// compacting and lose records: the second is refused, with what to do.
    #[test]
    fn a_second_server_on_the_same_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_FILE);
        let (first, _) = ReplayJournal::open(&path).unwrap();
        let err = ReplayJournal::open(&path).unwrap_err();
        assert!(err.contains("in use by another nomyo serve"), "{err}");
        assert!(err.contains("--replay-journal"), "{err}");
        drop(first);
        // Released when the first one is dropped.
        let (_again, _) = ReplayJournal::open(&path).unwrap();
    }
}
