//! Server key verification: pins, or trust on first use with a known-servers
//! file in the manner of ssh's `known_hosts`.
//!
//! The file holds one record per line, `ORIGIN FINGERPRINT`, for example
//!
//! ```text
//! # nomyo known servers: ORIGIN sha256:FINGERPRINT
//! https://api.nomyo.ai sha256:3f1c…(64 hex digits)
//! http://127.0.0.1:12434 sha256:9a07…
//! ```
//!
//! `ORIGIN` is `scheme://host[:port]` (the port only when it is not the
//! scheme's default). Blank lines and lines starting with `#` are ignored.
//! An origin may have several lines; a key matching any of them is trusted
//! (add the new key's line before a planned rotation, remove the old one
//! after). A malformed line is an error, never skipped: skipping it would
//! silently turn a recorded key into a first use.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nomyo_core::Fingerprint;

use crate::error::{Error, Result};

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

impl Trust {
    /// Verifies `found` for `origin`; with no pins, records it on first use.
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
        let Some(file) = &self.known else {
            return Ok(TrustDecision::Unverified);
        };
        let records = read_records(file)?;
        let mut first_line = None;
        for (line, rec_origin, fp) in &records {
            if rec_origin == origin {
                if *fp == found {
                    return Ok(TrustDecision::Known { file: file.clone() });
                }
                first_line.get_or_insert((*line, *fp));
            }
        }
        if let Some((line, known)) = first_line {
            return Err(Error::ServerKeyChanged {
                origin: origin.to_owned(),
                known,
                found,
                file: file.clone(),
                line,
            });
        }
        append_record(file, origin, found)?;
        tracing::info!(%origin, fingerprint = %found, file = %file.display(), "server key trusted on first use");
        Ok(TrustDecision::FirstUse { file: file.clone() })
    }
}

fn kerr(path: &Path, message: impl Into<String>) -> Error {
    Error::KnownServers {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Reads `(line number, origin, fingerprint)` records; a missing file is empty.
fn read_records(path: &Path) -> Result<Vec<(usize, String, Fingerprint)>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(kerr(path, format!("cannot read it: {e}"))),
    };
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(origin), Some(fp), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(kerr(
                path,
                format!(
                    "line {} is not `ORIGIN sha256:FINGERPRINT`; fix or delete it",
                    i + 1
                ),
            ));
        };
        let fp: Fingerprint = fp.parse().map_err(|_| {
            kerr(
                path,
                format!(
                    "line {} has an invalid fingerprint; fix or delete it",
                    i + 1
                ),
            )
        })?;
        out.push((i + 1, origin.to_owned(), fp));
    }
    Ok(out)
}

/// Appends one record, creating the file (0600) and its directory (0700).
fn append_record(path: &Path, origin: &str, fp: Fingerprint) -> Result<()> {
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
    let mut o = fs::OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .map_err(|e| kerr(path, format!("cannot write it: {e}")))?;
    // A file that does not end in a newline (edited by hand) must not glue
    // our record onto its last line.
    let needs_newline = fs::read(path)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let record = format!("{}{origin} {fp}\n", if needs_newline { "\n" } else { "" });
    // One write of a short line with O_APPEND: concurrent writers do not interleave.
    f.write_all(record.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| kerr(path, format!("cannot write it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    #[test]
    fn first_use_then_known_then_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_servers");
        let t = Trust {
            pins: vec![],
            known: Some(file.clone()),
        };
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
        match t.verify("https://a.example", fp(3)) {
            Err(Error::ServerKeyChanged {
                known, found, line, ..
            }) => {
                assert_eq!((known, found, line), (fp(1), fp(3), 1));
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

    #[test]
    fn rotation_with_two_records() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ks");
        fs::write(
            &file,
            format!(
                "# comment\n\nhttps://a.example {}\nhttps://a.example {}",
                fp(1),
                fp(2)
            ),
        )
        .unwrap();
        let t = Trust {
            pins: vec![],
            known: Some(file.clone()),
        };
        assert!(matches!(
            t.verify("https://a.example", fp(2)).unwrap(),
            TrustDecision::Known { .. }
        ));
        // Appending after a last line without newline starts a new line.
        t.verify("https://c.example", fp(5)).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.ends_with(&format!("{}\nhttps://c.example {}\n", fp(2), fp(5))));
    }

    #[test]
    fn malformed_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ks");
        fs::write(&file, "https://a.example sha256:zz\n").unwrap();
        let t = Trust {
            pins: vec![],
            known: Some(file.clone()),
        };
        let e = t.verify("https://a.example", fp(1)).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
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
}
