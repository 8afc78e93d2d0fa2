//! The known-servers file on disk: read, locked for an update and
//! replaced whole through a synced temporary file (mode 0600).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::records::{kerr, Records};
use crate::error::Result;

/// A known-servers file on disk.
pub(super) struct KnownFile {
    pub(super) path: PathBuf,
}

impl KnownFile {
    /// Reads it without a lock (it is only ever replaced whole, by a
    /// rename); a missing file is empty.
    pub(super) fn read(&self) -> Result<Records> {
        match fs::read_to_string(&self.path) {
            Ok(t) => Records::parse(&self.path, &t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(kerr(&self.path, format!("cannot read it: {e}"))),
        }
    }

    /// Runs `f` on the records with the file locked; when `f` says so
    /// (second value `true`), writes them back before the lock is released.
    /// An error from `f` writes nothing.
    pub(super) fn update<T>(&self, f: impl FnOnce(&mut Records) -> Result<(T, bool)>) -> Result<T> {
        let started = std::time::Instant::now();
        let (lock, path) = self.lock()?;
        let mut records = self.read_at(&path)?;
        let (value, changed) = f(&mut records)?;
        if changed {
            write_replacing(&path, records.render().as_bytes())
                .map_err(|e| kerr(&self.path, format!("cannot write it: {e}")))?;
        }
        drop(lock);
        tracing::debug!(file = %self.path.display(), changed, ms = started.elapsed().as_millis() as u64, "known-servers file updated under lock");
        Ok(value)
    }

    pub(super) fn read_at(&self, path: &Path) -> Result<Records> {
        match fs::read_to_string(path) {
            Ok(t) => Records::parse(&self.path, &t),
            Err(e) => Err(kerr(&self.path, format!("cannot read it: {e}"))),
        }
    }

    /// Creates the file (0600, directory 0700) if needed and takes an
    /// exclusive lock on it. A writer replaces the file by a rename while
    /// holding the lock, so a lock won on a file that is no longer at the
    /// path is dropped and taken again on the new one. Returns the locked
    /// file and the path it was opened at (a symbolic link is followed, so
    /// that the rename replaces its target, not the link).
    pub(super) fn lock(&self) -> Result<(fs::File, PathBuf)> {
        let path = &self.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            b.create(dir)
                .map_err(|e| kerr(path, format!("cannot create its directory: {e}")))?;
        }
        let mut create = fs::OpenOptions::new();
        create.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            create.mode(0o600);
        }
        match create.open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(kerr(path, format!("cannot create it: {e}"))),
        }
        let real = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        for _ in 0..100 {
            let f =
                fs::File::open(&real).map_err(|e| kerr(path, format!("cannot open it: {e}")))?;
            f.lock()
                .map_err(|e| kerr(path, format!("cannot lock it: {e}")))?;
            if same_file(&f, &real) {
                return Ok((f, real));
            }
        }
        Err(kerr(
            path,
            "it keeps being replaced while this process waits for its lock",
        ))
    }
}

#[cfg(unix)]
pub(super) fn same_file(f: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
pub(super) fn same_file(_f: &fs::File, path: &Path) -> bool {
    path.exists()
}

/// Replaces `path` with `bytes`: a synced temporary file (0600) in the same
/// directory, renamed over it.
pub(super) fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "known_servers".into());
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let result = o.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
