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
//! | `ak=sha256:HEX` | a TPM attestation key verified in full for this server (`nomyo attest`, or a client that requires attestation); one per replica |
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

use std::path::{Path, PathBuf};

use nomyo_core::Fingerprint;

use crate::error::{Downgrade, Error, KnownBy, Result};

mod file;
mod records;
#[cfg(test)]
mod tests;

use file::KnownFile;
use records::{Item, V2Mark};

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
    /// The TPM attestation keys on record for `origin` (none without a
    /// known-servers file).
    pub(crate) fn recorded_aks(&self, origin: &str) -> Result<Vec<Fingerprint>> {
        let Some(file) = self.file() else {
            return Ok(Vec::new());
        };
        Ok(file
            .read()?
            .entry(origin)
            .map(|e| e.aks.clone())
            .unwrap_or_default())
    }

    /// Records a verified TPM attestation key for `origin` (kept with the
    /// others: one per replica behind a load balancer). Returns whether it
    /// was new. Without a known-servers file, records nothing.
    pub(crate) fn record_ak(&self, origin: &str, ak: Fingerprint) -> Result<bool> {
        let Some(file) = self.file() else {
            return Ok(false);
        };
        file.update(|records| {
            let e = records.entry_or_insert(origin);
            if e.aks.contains(&ak) {
                return Ok((false, false));
            }
            e.aks.push(ak);
            Ok((true, true))
        })
    }

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
