//! Server key verification: pins, or trust on first use with a known-servers
//! file in the manner of ssh's `known_hosts`.
//!
//! # The known-servers file (format v2)
//!
//! ```text
//! # nomyo known-servers v2
//! https://api.nomyo.ai v1=sha256:3f1c…(64 hex digits) v2=signed
//! http://127.0.0.1:12434 v1=sha256:9a07… v2=signed warned=v1
//! https://ehbp.example v2=unsigned v2-key=x-wing:sha256:51d0…
//! ```
//!
//! The first line names the format. Then one line per server: its origin
//! (`scheme://host[:port]`, the port only when it is not the scheme's
//! default) and space-separated `name=value` fields:
//!
//! | field | meaning |
//! |---|---|
//! | `v1=sha256:HEX` | the server's v1 (RSA) key; repeat it to trust a second key across a planned rotation |
//! | `v2=signed` | the server speaks protocol v2 and signs its key lists with its v1 key: an unsigned list is refused, and so is a fall-back to v1 under protocol auto |
//! | `v2=unsigned` | the server speaks v2 without signing its lists (a third-party EHBP server); its key configs are the `v2-key` fields |
//! | `v2-key=KEM:sha256:HEX` | a trusted key config of an unsigned v2 server (`KEM`: `x-wing` or `x25519`) |
//! | `warned=v1` | `nomyo` has said once that v1 answers from this server are only as safe as the TLS path |
//!
//! A v1 key on record also means that the server's v2 key lists must be
//! signed by it. Fields this version does not know are kept as they are
//! when the file is rewritten (room for later additions, e.g. attestation
//! keys). Blank lines and lines starting with `#` are kept and otherwise
//! ignored. A malformed line is an error, never skipped: skipping it would
//! silently turn a recorded key into a first use. To forget a server (after
//! verifying a new key with its operator), delete its line.
//!
//! The file is locked (`flock`) while it is read, checked and rewritten, so
//! that two first contacts at once record one key; it is rewritten whole
//! through a temporary file and a rename, mode 0600.
//!
//! Files of the earlier format (`ORIGIN sha256:FINGERPRINT` per line, and
//! `ORIGIN#v2-KEM sha256:FINGERPRINT` for an unsigned v2 config) still load;
//! they are rewritten in this format at the next change.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nomyo_core::Fingerprint;

use crate::error::{Downgrade, Error, KnownBy, Result};

/// Where (and whether) first-use trust is recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KnownServers {
    /// `$XDG_CONFIG_HOME/nomyo/known_servers`, or
    /// `~/.config/nomyo/known_servers` when `XDG_CONFIG_HOME` is not set.
    #[default]
    Default,
    /// This file.
    File(PathBuf),
    /// No record: every key the server presents is accepted (TLS is the only
    /// protection, as with the Python client). Only sensible with pins, or
    /// for tools that just display a key.
    Off,
}

impl KnownServers {
    /// The file this resolves to (`None` for [`KnownServers::Off`]).
    pub fn path(&self) -> Result<Option<PathBuf>> {
        match self {
            KnownServers::Off => Ok(None),
            KnownServers::File(p) => Ok(Some(p.clone())),
            KnownServers::Default => default_path().map(Some).ok_or_else(|| {
                Error::Config(
                    "cannot locate the known-servers file: neither XDG_CONFIG_HOME nor HOME is set; \
                     configure a known-servers file or pin the server key"
                        .into(),
                )
            }),
        }
    }
}

/// `$XDG_CONFIG_HOME/nomyo/known_servers` or `$HOME/.config/nomyo/known_servers`.
pub fn default_path() -> Option<PathBuf> {
    let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    if let Some(x) = non_empty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(x).join("nomyo").join("known_servers"));
    }
    non_empty("HOME").map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("nomyo")
            .join("known_servers")
    })
}

/// How a server key came to be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustDecision {
    /// It matches a configured pin.
    Pinned,
    /// It matches the record in the known-servers file.
    Known {
        /// The file.
        file: PathBuf,
    },
    /// First contact: the key was just recorded in the known-servers file.
    FirstUse {
        /// The file it was added to.
        file: PathBuf,
    },
    /// No pins and no known-servers file: accepted without verification.
    Unverified,
}

/// The verification policy of a client.
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    pub(crate) pins: Vec<Fingerprint>,
    pub(crate) known: Option<PathBuf>,
}

/// First line of a known-servers file in this format.
pub const FORMAT_HEADER: &str = "# nomyo known-servers v2";
/// What the file's second line says (written with the header).
const FORMAT_HELP: &str = "# ORIGIN v1=sha256:KEY v2=signed|unsigned v2-key=KEM:sha256:KEY warned=v1 (delete a server's line to forget it)";

impl Trust {
    fn file(&self) -> Option<KnownFile> {
        self.known.as_ref().map(|p| KnownFile { path: p.clone() })
    }

    /// Verifies the v1 key `found` for `origin`; with no pins, records it on
    /// first use.
    pub(crate) fn verify(&self, origin: &str, found: Fingerprint) -> Result<TrustDecision> {
        if !self.pins.is_empty() {
            return if self.pins.contains(&found) {
                Ok(TrustDecision::Pinned)
            } else {
                Err(Error::PinMismatch {
                    origin: origin.to_owned(),
                    found,
                    pins: self.pins.clone(),
                })
            };
        }
        let Some(file) = self.file() else {
            return Ok(TrustDecision::Unverified);
        };
        let decision = file.update(|records| {
            let entry = records.entry_mut(origin);
            if let Some(e) = &entry {
                if e.v1.contains(&found) {
                    return Ok((
                        TrustDecision::Known {
                            file: file.path.clone(),
                        },
                        false,
                    ));
                }
                if let Some(known) = e.v1.first() {
                    return Err(Error::ServerKeyChanged {
                        origin: origin.to_owned(),
                        known: *known,
                        found,
                        file: file.path.clone(),
                        line: e.line,
                    });
                }
            }
            records.entry_or_insert(origin).v1.push(found);
            Ok((
                TrustDecision::FirstUse {
                    file: file.path.clone(),
                },
                true,
            ))
        })?;
        if matches!(decision, TrustDecision::FirstUse { .. }) {
            tracing::info!(%origin, fingerprint = %found, file = %file.path.display(), "server key trusted on first use");
        }
        Ok(decision)
    }

    /// Verifies an unsigned v2 key config (`kem`, fingerprint `found`) of
    /// `origin`. Refused when the origin is known to sign its lists: its v1
    /// key is pinned or recorded, it is recorded as `v2=signed`, or this
    /// client has verified a signed list from it (`signed_seen`). Otherwise
    /// the config is checked against the recorded `v2-key`s, or recorded on
    /// first use.
    pub(crate) fn verify_unsigned_v2(
        &self,
        origin: &str,
        kem: nomyo_core::v2::keys::Kem,
        found: Fingerprint,
        signed_seen: bool,
    ) -> Result<TrustDecision> {
        let refuse = |known_by| Error::Downgrade {
            origin: origin.to_owned(),
            refused: Downgrade::UnsignedKeyList,
            known_by,
        };
        if !self.pins.is_empty() {
            return if self.pins.contains(&found) {
                Ok(TrustDecision::Pinned)
            } else {
                Err(refuse(KnownBy::Pin))
            };
        }
        let Some(file) = self.file() else {
            return if signed_seen {
                Err(refuse(KnownBy::SignedListSeen))
            } else {
                Ok(TrustDecision::Unverified)
            };
        };
        let decision = file.update(|records| {
            if let Some(e) = records.entry_mut(origin) {
                if !e.v1.is_empty() || e.v2 == Some(V2Mark::Signed) {
                    // The record names the line to delete, if ever needed.
                    return Err(refuse(KnownBy::Record {
                        file: file.path.clone(),
                        line: e.line,
                    }));
                }
            }
            if signed_seen {
                return Err(refuse(KnownBy::SignedListSeen));
            }
            if let Some(e) = records.entry_mut(origin) {
                if e.v2_keys.iter().any(|(_, fp)| *fp == found) {
                    return Ok((
                        TrustDecision::Known {
                            file: file.path.clone(),
                        },
                        false,
                    ));
                }
                if let Some((_, known)) = e.v2_keys.first() {
                    return Err(Error::ServerKeyChanged {
                        origin: origin.to_owned(),
                        known: *known,
                        found,
                        file: file.path.clone(),
                        line: e.line,
                    });
                }
            }
            let e = records.entry_or_insert(origin);
            e.v2 = Some(V2Mark::Unsigned);
            e.v2_keys.push((kem.name().to_owned(), found));
            Ok((
                TrustDecision::FirstUse {
                    file: file.path.clone(),
                },
                true,
            ))
        })?;
        if matches!(decision, TrustDecision::FirstUse { .. }) {
            tracing::info!(%origin, %kem, fingerprint = %found, file = %file.path.display(), "unsigned v2 key config trusted on first use");
        }
        Ok(decision)
    }

    /// Before a signed list is checked: refused when the origin is on record
    /// only as an unsigned v2 server (no v1 key), since its signing key
    /// would then be trusted on first use.
    pub(crate) fn check_new_signer(&self, origin: &str) -> Result<()> {
        if !self.pins.is_empty() {
            return Ok(()); // the pins check the signing key
        }
        let Some(file) = self.file() else {
            return Ok(());
        };
        let records = file.read()?;
        match records.entry(origin) {
            Some(e) if e.v1.is_empty() && (e.v2.is_some() || !e.v2_keys.is_empty()) => {
                Err(Error::Downgrade {
                    origin: origin.to_owned(),
                    refused: Downgrade::NewSigningKey,
                    known_by: KnownBy::Record {
                        file: file.path.clone(),
                        line: e.line,
                    },
                })
            }
            _ => Ok(()),
        }
    }

    /// After a signed list verified: records that the origin signs its
    /// lists (`v2=signed`), once.
    pub(crate) fn record_signed_v2(&self, origin: &str) -> Result<()> {
        let Some(file) = self.file() else {
            return Ok(());
        };
        file.update(|records| {
            let e = records.entry_or_insert(origin);
            if e.v2 == Some(V2Mark::Signed) {
                return Ok(((), false));
            }
            e.v2 = Some(V2Mark::Signed);
            e.v2_keys.clear();
            Ok(((), true))
        })?;
        tracing::debug!(%origin, "origin recorded as signing its v2 key lists");
        Ok(())
    }

    /// `/.well-known/hpke-keys` answered 404: refused when the origin is
    /// recorded as speaking v2.
    pub(crate) fn check_no_v2(&self, origin: &str) -> Result<()> {
        // A pinned server is a known one: under `auto`, falling back to v1
        // (whose answers a middleman who terminates TLS can read) takes an
        // explicit `--protocol v1`.
        if !self.pins.is_empty() {
            return Err(Error::Downgrade {
                origin: origin.to_owned(),
                refused: Downgrade::NoV2Keys,
                known_by: KnownBy::Pin,
            });
        }
        let Some(file) = self.file() else {
            return Ok(());
        };
        let records = file.read()?;
        match records.entry(origin) {
            Some(e) if e.v2.is_some() || !e.v2_keys.is_empty() => Err(Error::Downgrade {
                origin: origin.to_owned(),
                refused: Downgrade::NoV2Keys,
                known_by: KnownBy::Record {
                    file: file.path.clone(),
                    line: e.line,
                },
            }),
            _ => Ok(()),
        }
    }

    /// Whether the one-time v1 warning for `origin` is still due; records
    /// it as given (`warned=v1`). Always due without a known-servers file.
    pub(crate) fn take_v1_warning(&self, origin: &str) -> Result<bool> {
        let Some(file) = self.file() else {
            return Ok(true);
        };
        file.update(|records| {
            let e = records.entry_or_insert(origin);
            if e.warned_v1 {
                return Ok((false, false));
            }
            e.warned_v1 = true;
            Ok((true, true))
        })
    }
}

/// What a known-servers record says about protocol v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V2Mark {
    Signed,
    Unsigned,
}

/// One server's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    origin: String,
    /// The (first) line it was read from; 0 for a new record.
    line: usize,
    v1: Vec<Fingerprint>,
    v2: Option<V2Mark>,
    /// `(KEM name, config fingerprint)` of an unsigned v2 server.
    v2_keys: Vec<(String, Fingerprint)>,
    warned_v1: bool,
    /// Fields this version does not know, kept verbatim.
    other: Vec<String>,
}

impl Entry {
    fn render(&self) -> String {
        let mut s = self.origin.clone();
        for fp in &self.v1 {
            s.push_str(&format!(" v1={fp}"));
        }
        match self.v2 {
            Some(V2Mark::Signed) => s.push_str(" v2=signed"),
            Some(V2Mark::Unsigned) => s.push_str(" v2=unsigned"),
            None => {}
        }
        for (kem, fp) in &self.v2_keys {
            s.push_str(&format!(" v2-key={kem}:{fp}"));
        }
        if self.warned_v1 {
            s.push_str(" warned=v1");
        }
        for o in &self.other {
            s.push(' ');
            s.push_str(o);
        }
        s
    }
}

/// A line of the file: kept text (comments, blank lines) or a record.
#[derive(Clone, Debug)]
enum Item {
    Text(String),
    Entry(usize),
}

/// The parsed file.
#[derive(Clone, Debug, Default)]
struct Records {
    items: Vec<Item>,
    entries: Vec<Entry>,
}

impl Records {
    fn entry(&self, origin: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.origin == origin)
    }
    fn entry_mut(&mut self, origin: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.origin == origin)
    }
    fn entry_or_insert(&mut self, origin: &str) -> &mut Entry {
        let i = match self.entries.iter().position(|e| e.origin == origin) {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    origin: origin.to_owned(),
                    ..Entry::default()
                });
                self.items.push(Item::Entry(self.entries.len() - 1));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i]
    }

    /// Adds a record for `origin` from `line` (merging with an earlier one).
    fn merge(&mut self, origin: &str, line: usize, f: impl FnOnce(&mut Entry)) {
        let e = self.entry_or_insert(origin);
        if e.line == 0 {
            e.line = line;
        }
        f(e);
    }

    fn parse(path: &Path, text: &str) -> Result<Records> {
        let mut lines = text.lines().enumerate();
        let first = lines.clone().map(|(_, l)| l.trim()).find(|l| !l.is_empty());
        let v2 = first == Some(FORMAT_HEADER);
        if !v2 {
            if let Some(other) = first.and_then(|l| l.strip_prefix("# nomyo known-servers v")) {
                return Err(kerr(
                    path,
                    format!(
                        "it is in format v{} (this nomyo reads v2 and the earlier format): it was written by a newer nomyo; update nomyo",
                        crate::error::sanitize(other)
                    ),
                ));
            }
        }
        let mut r = Records::default();
        let mut header_seen = false;
        for (i, raw) in lines.by_ref() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                if v2 && !header_seen && line == FORMAT_HEADER {
                    header_seen = true;
                    continue; // written again with the file
                }
                if v2 && line == FORMAT_HELP {
                    continue;
                }
                r.items.push(Item::Text(raw.to_owned()));
                continue;
            }
            if v2 {
                r.parse_v2_line(path, n, line)?;
            } else {
                r.parse_legacy_line(path, n, line)?;
            }
        }
        Ok(r)
    }

    fn parse_legacy_line(&mut self, path: &Path, n: usize, line: &str) -> Result<()> {
        let mut parts = line.split_whitespace();
        let (Some(label), Some(fp), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(kerr(
                path,
                format!("line {n} is not `ORIGIN sha256:FINGERPRINT`; fix or delete it"),
            ));
        };
        let fp: Fingerprint = fp.parse().map_err(|_| {
            kerr(
                path,
                format!("line {n} has an invalid fingerprint; fix or delete it"),
            )
        })?;
        match label.split_once("#v2-") {
            Some((origin, kem)) => {
                let kem = parse_kem(path, n, kem)?;
                self.merge(origin, n, |e| {
                    e.v2.get_or_insert(V2Mark::Unsigned);
                    e.v2_keys.push((kem, fp));
                });
            }
            None => self.merge(label, n, |e| e.v1.push(fp)),
        }
        Ok(())
    }

    fn parse_v2_line(&mut self, path: &Path, n: usize, line: &str) -> Result<()> {
        let mut parts = line.split_whitespace();
        let origin = parts.next().unwrap_or_default();
        if origin.contains('=') || !origin.contains("://") {
            return Err(kerr(
                path,
                format!("line {n} does not start with an origin (scheme://host[:port]); fix or delete it"),
            ));
        }
        let bad = |what: &str| kerr(path, format!("line {n}: {what}; fix or delete the line"));
        let mut fields: Vec<(&str, &str, &str)> = Vec::new();
        for field in parts {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| bad("a field is not NAME=VALUE"))?;
            fields.push((field, name, value));
        }
        let mut e = Entry::default();
        for (field, name, value) in fields {
            match name {
                "v1" => {
                    e.v1.push(value.parse().map_err(|_| bad("invalid v1 fingerprint"))?)
                }
                "v2" => {
                    let mark = match value {
                        "signed" => V2Mark::Signed,
                        "unsigned" => V2Mark::Unsigned,
                        _ => return Err(bad("v2= must be signed or unsigned")),
                    };
                    if e.v2 != Some(V2Mark::Signed) {
                        e.v2 = Some(mark);
                    }
                }
                "v2-key" => {
                    let (kem, fp) = value
                        .split_once(':')
                        .ok_or_else(|| bad("v2-key= must be KEM:sha256:HEX"))?;
                    let kem = parse_kem(path, n, kem)?;
                    let fp = fp.parse().map_err(|_| bad("invalid v2-key fingerprint"))?;
                    e.v2_keys.push((kem, fp));
                }
                "warned" => {
                    if value == "v1" {
                        e.warned_v1 = true;
                    } else {
                        e.other.push(field.to_owned());
                    }
                }
                _ => e.other.push(field.to_owned()),
            }
        }
        self.merge(origin, n, |m| {
            m.v1.extend(e.v1);
            if m.v2 != Some(V2Mark::Signed) {
                m.v2 = e.v2.or(m.v2);
            }
            m.v2_keys.extend(e.v2_keys);
            m.warned_v1 |= e.warned_v1;
            m.other.extend(e.other);
        });
        Ok(())
    }

    fn render(&self) -> String {
        let mut out = format!("{FORMAT_HEADER}\n{FORMAT_HELP}\n");
        for item in &self.items {
            match item {
                Item::Text(t) => out.push_str(t),
                Item::Entry(i) => out.push_str(&self.entries[*i].render()),
            }
            out.push('\n');
        }
        out
    }
}

fn parse_kem(path: &Path, n: usize, kem: &str) -> Result<String> {
    use nomyo_core::v2::keys::Kem;
    [Kem::X25519, Kem::XWing]
        .into_iter()
        .find(|k| k.name() == kem)
        .map(|k| k.name().to_owned())
        .ok_or_else(|| {
            kerr(
                path,
                format!("line {n} names an unknown KEM (x-wing or x25519); fix or delete it"),
            )
        })
}

fn kerr(path: &Path, message: impl Into<String>) -> Error {
    Error::KnownServers {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A known-servers file on disk.
struct KnownFile {
    path: PathBuf,
}

impl KnownFile {
    /// Reads it without a lock (it is only ever replaced whole, by a
    /// rename); a missing file is empty.
    fn read(&self) -> Result<Records> {
        match fs::read_to_string(&self.path) {
            Ok(t) => Records::parse(&self.path, &t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(kerr(&self.path, format!("cannot read it: {e}"))),
        }
    }

    /// Runs `f` on the records with the file locked; when `f` says so
    /// (second value `true`), writes them back before the lock is released.
    /// An error from `f` writes nothing.
    fn update<T>(&self, f: impl FnOnce(&mut Records) -> Result<(T, bool)>) -> Result<T> {
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

    fn read_at(&self, path: &Path) -> Result<Records> {
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
    fn lock(&self) -> Result<(fs::File, PathBuf)> {
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
fn same_file(f: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_f: &fs::File, path: &Path) -> bool {
    path.exists()
}

/// Replaces `path` with `bytes`: a synced temporary file (0600) in the same
/// directory, renamed over it.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

/// One server on record in a known-servers file (`nomyo known-servers list`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnownServer {
    /// `scheme://host[:port]`, as the client reached the server.
    pub origin: String,
    /// The line of the file it was read from (the first, when an earlier
    /// format spread it over several).
    pub line: usize,
    /// What is recorded, as the file writes it: `v1=sha256:… v2=signed …`.
    pub fields: String,
}

/// The servers on record in the known-servers file at `path`, in file
/// order; a missing file records none. Read without the lock, as a check
/// reads it (the file is only ever replaced whole).
pub fn list_known_servers(path: &Path) -> Result<Vec<KnownServer>> {
    let records = KnownFile {
        path: path.to_owned(),
    }
    .read()?;
    Ok(records
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Entry(i) => records.entries.get(*i),
            Item::Text(_) => None,
        })
        .map(|e| {
            let rendered = e.render();
            KnownServer {
                origin: e.origin.clone(),
                line: e.line,
                fields: rendered[e.origin.len()..].trim_start().to_owned(),
            }
        })
        .collect())
}

/// The origin the known-servers file records for what a person typed: a
/// URL becomes `scheme://host[:port]` as the client computes it (lower-case
/// host, no default port, no path); anything else is kept as typed, less a
/// trailing `/`.
pub fn origin_of(text: &str) -> String {
    let text = text.trim();
    match reqwest::Url::parse(text) {
        Ok(url) if url.origin().is_tuple() => url.origin().ascii_serialization(),
        _ => text.trim_end_matches('/').to_owned(),
    }
}

/// Forgets `origin` (see [`origin_of`]): its line is removed from the
/// known-servers file at `path`, under the lock the client takes to record
/// a server, so that a concurrent first contact is neither lost nor
/// resurrected. Comments and the other servers are kept. Returns whether
/// the origin was on record; a missing file is not created.
pub fn remove_known_server(path: &Path, origin: &str) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let file = KnownFile {
        path: path.to_owned(),
    };
    let removed = file.update(|records| {
        let Some(i) = records.entries.iter().position(|e| e.origin == origin) else {
            return Ok((false, false));
        };
        records
            .items
            .retain(|item| !matches!(item, Item::Entry(j) if *j == i));
        Ok((true, true))
    })?;
    tracing::debug!(file = %path.display(), removed, "known-servers record removal");
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nomyo_core::v2::keys::Kem;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    fn recording(file: &Path) -> Trust {
        Trust {
            pins: vec![],
            known: Some(file.to_owned()),
        }
    }

    #[test]
    fn first_use_then_known_then_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_servers");
        let t = recording(&file);
        assert_eq!(
            t.verify("https://a.example", fp(1)).unwrap(),
            TrustDecision::FirstUse { file: file.clone() }
        );
        assert_eq!(
            t.verify("https://a.example", fp(1)).unwrap(),
            TrustDecision::Known { file: file.clone() }
        );
        // Another origin is independent.
        assert!(matches!(
            t.verify("https://b.example", fp(2)).unwrap(),
            TrustDecision::FirstUse { .. }
        ));
        let before = fs::read_to_string(&file).unwrap();
        assert_eq!(
            before,
            format!(
                "{FORMAT_HEADER}\n{FORMAT_HELP}\nhttps://a.example v1={}\nhttps://b.example v1={}\n",
                fp(1),
                fp(2)
            )
        );
        match t.verify("https://a.example", fp(3)) {
            Err(e @ Error::ServerKeyChanged { .. }) => {
                let Error::ServerKeyChanged {
                    known, found, line, ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!((*known, *found, *line), (fp(1), fp(3), 3));
                assert!(
                    e.to_string()
                        .contains(&format!("delete line 3 of {}", file.display())),
                    "{e}"
                );
            }
            other => panic!("expected a key change, got {other:?}"),
        }
        // A changed key is never recorded.
        assert_eq!(fs::read_to_string(&file).unwrap(), before);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    /// A file of the earlier format (one `ORIGIN sha256:FP` line per key,
    /// `ORIGIN#v2-KEM` for unsigned v2 configs, comments, no final newline)
    /// loads as it did, and is rewritten in the v2 format at the next change,
    /// comments kept and each server's keys on one line.
    #[test]
    fn a_file_in_the_earlier_format_loads_and_is_rewritten_as_v2() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ks");
        fs::write(
            &file,
            format!(
                "# comment\n\nhttps://a.example {}\nhttps://a.example {}\nhttps://e.example#v2-x-wing {}",
                fp(1),
                fp(2),
                fp(7)
            ),
        )
        .unwrap();
        let t = recording(&file);
        assert!(matches!(
            t.verify("https://a.example", fp(2)).unwrap(),
            TrustDecision::Known { .. }
        ));
        assert!(matches!(
            t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(7), false)
                .unwrap(),
            TrustDecision::Known { .. }
        ));
        match t.verify("https://a.example", fp(9)).unwrap_err() {
            Error::ServerKeyChanged { line, .. } => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
        // Reading changed nothing.
        assert!(fs::read_to_string(&file)
            .unwrap()
            .starts_with("# comment\n"));
        t.verify("https://c.example", fp(5)).unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!(
                "{FORMAT_HEADER}\n{FORMAT_HELP}\n# comment\n\nhttps://a.example v1={} v1={}\nhttps://e.example v2=unsigned v2-key=x-wing:{}\nhttps://c.example v1={}\n",
                fp(1),
                fp(2),
                fp(7),
                fp(5)
            )
        );
        // ... and reads back the same.
        assert!(matches!(
            t.verify("https://a.example", fp(1)).unwrap(),
            TrustDecision::Known { .. }
        ));
    }

    /// Fields a later version adds are kept through a rewrite; a file of a
    /// later format is refused, not misread.
    #[test]
    fn unknown_fields_survive_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ks");
        fs::write(
            &file,
            format!(
                "{FORMAT_HEADER}\nhttps://a.example v1={} attest=tdx:sha256:00 v2=signed\n",
                fp(1)
            ),
        )
        .unwrap();
        let t = recording(&file);
        assert!(t.take_v1_warning("https://a.example").unwrap());
        assert!(!t.take_v1_warning("https://a.example").unwrap());
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.ends_with(&format!(
                "https://a.example v1={} v2=signed warned=v1 attest=tdx:sha256:00\n",
                fp(1)
            )),
            "{text}"
        );
        fs::write(&file, "# nomyo known-servers v3\nhttps://a.example x\n").unwrap();
        let e = t.verify("https://a.example", fp(1)).unwrap_err();
        assert!(e.to_string().contains("newer nomyo"), "{e}");
    }

    #[test]
    fn malformed_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ks");
        let t = recording(&file);
        for text in [
            "https://a.example sha256:zz\n".to_owned(),
            format!("{FORMAT_HEADER}\nhttps://a.example v1=sha256:zz\n"),
            format!("{FORMAT_HEADER}\nhttps://a.example v2=maybe\n"),
            format!("{FORMAT_HEADER}\nhttps://a.example v2-key=rsa:{}\n", fp(1)),
            format!("{FORMAT_HEADER}\nhttps://a.example bare\n"),
        ] {
            fs::write(&file, &text).unwrap();
            let e = t.verify("https://a.example", fp(1)).unwrap_err();
            assert!(e.to_string().contains("line "), "{text}: {e}");
            assert_eq!(fs::read_to_string(&file).unwrap(), text, "never rewritten");
        }
    }

    /// Two first contacts at once, each seeing another key (a middleman
    /// answering one of them): exactly one key is recorded, and the other
    /// contact is refused as a changed key. Before the file was locked both
    /// were appended.
    #[test]
    fn two_first_uses_at_once_record_one_key() {
        for round in 0..20u8 {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("known_servers");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4u8)
                .map(|i| {
                    let (file, barrier) = (file.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let t = recording(&file);
                        barrier.wait();
                        t.verify("https://race.example", fp(10 + i))
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let first = results
                .iter()
                .filter(|r| matches!(r, Ok(TrustDecision::FirstUse { .. })))
                .count();
            let changed = results
                .iter()
                .filter(|r| matches!(r, Err(Error::ServerKeyChanged { .. })))
                .count();
            assert_eq!((first, changed), (1, 3), "round {round}: {results:?}");
            let text = fs::read_to_string(&file).unwrap();
            let keys = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.matches(" v1=").count())
                .sum::<usize>();
            assert_eq!(keys, 1, "round {round}: {text}");
        }
    }

    #[test]
    fn unsigned_v2_lists_are_refused_for_a_server_known_to_sign() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ks");
        let t = recording(&file);
        // Unknown server: trusted on first use, then known, then changed.
        assert!(matches!(
            t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(1), false)
                .unwrap(),
            TrustDecision::FirstUse { .. }
        ));
        assert!(matches!(
            t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(1), false)
                .unwrap(),
            TrustDecision::Known { .. }
        ));
        assert!(matches!(
            t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(2), false),
            Err(Error::ServerKeyChanged { .. })
        ));
        // Its signing key would be new: refused.
        assert!(matches!(
            t.check_new_signer("https://e.example"),
            Err(Error::Downgrade {
                refused: Downgrade::NewSigningKey,
                ..
            })
        ));
        // A server with a recorded v1 key, or recorded as signing.
        t.verify("https://n.example", fp(3)).unwrap();
        let err = t
            .verify_unsigned_v2("https://n.example", Kem::XWing, fp(4), false)
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Downgrade {
                    refused: Downgrade::UnsignedKeyList,
                    known_by: KnownBy::Record { line: 4, .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_security());
        assert!(err.to_string().contains("delete line 4 of"), "{err}");
        t.record_signed_v2("https://s.example").unwrap();
        assert!(t.check_no_v2("https://s.example").is_err());
        assert!(t.check_no_v2("https://n.example").is_ok());
        assert!(t
            .verify_unsigned_v2("https://s.example", Kem::X25519, fp(5), false)
            .is_err());
        // A pinned server is a known one: auto does not fall back to v1
        // when its key list answers 404.
        let pinned = Trust {
            pins: vec![fp(7)],
            known: None,
        };
        let err = pinned.check_no_v2("https://p.example").unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Downgrade {
                    refused: Downgrade::NoV2Keys,
                    known_by: KnownBy::Pin,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("--protocol v1"), "{err}");
        // Seen signed in this session: refused even with no record.
        let off = Trust {
            pins: vec![],
            known: None,
        };
        assert!(matches!(
            off.verify_unsigned_v2("https://x.example", Kem::XWing, fp(6), true),
            Err(Error::Downgrade {
                known_by: KnownBy::SignedListSeen,
                ..
            })
        ));
        // Under a v1 pin: refused; a pin of the config itself: accepted.
        let pinned = Trust {
            pins: vec![fp(3)],
            known: None,
        };
        assert!(matches!(
            pinned.verify_unsigned_v2("https://n.example", Kem::XWing, fp(4), false),
            Err(Error::Downgrade {
                known_by: KnownBy::Pin,
                ..
            })
        ));
        assert_eq!(
            pinned
                .verify_unsigned_v2("https://n.example", Kem::XWing, fp(3), false)
                .unwrap(),
            TrustDecision::Pinned
        );
    }

    #[test]
    fn pins_take_precedence() {
        let t = Trust {
            pins: vec![fp(1), fp(2)],
            known: None,
        };
        assert_eq!(t.verify("https://a", fp(2)).unwrap(), TrustDecision::Pinned);
        assert!(matches!(
            t.verify("https://a", fp(3)),
            Err(Error::PinMismatch { .. })
        ));
        let off = Trust {
            pins: vec![],
            known: None,
        };
        assert_eq!(
            off.verify("https://a", fp(3)).unwrap(),
            TrustDecision::Unverified
        );
    }

    #[test]
    fn list_and_remove_known_servers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_servers");
        assert!(list_known_servers(&file).unwrap().is_empty());
        assert!(!remove_known_server(&file, "https://a.example").unwrap());
        assert!(!file.exists(), "removal must not create the file");
        let t = recording(&file);
        t.verify("https://a.example", fp(1)).unwrap();
        t.verify("https://b.example:8443", fp(2)).unwrap();
        let listed = list_known_servers(&file).unwrap();
        let origins: Vec<&str> = listed.iter().map(|k| k.origin.as_str()).collect();
        assert_eq!(origins, ["https://a.example", "https://b.example:8443"]);
        assert_eq!(listed[1].fields, format!("v1={}", fp(2)));
        assert!(listed[0].line > 0);

        assert_eq!(origin_of("HTTPS://A.example:443/v1/"), "https://a.example");
        assert!(remove_known_server(&file, &origin_of("https://a.example/")).unwrap());
        assert!(!remove_known_server(&file, "https://a.example").unwrap());
        let listed = list_known_servers(&file).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].origin, "https://b.example:8443");
        // Forgotten: the next contact is a first use again, with any key.
        assert!(matches!(
            t.verify("https://a.example", fp(9)).unwrap(),
            TrustDecision::FirstUse { .. }
        ));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with(FORMAT_HEADER));
    }
}
