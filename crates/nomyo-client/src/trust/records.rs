//! The known-servers file's records: one server's line ([`Entry`]), the
//! parsed file with its comments kept ([`Records`]), and their rendering.

use std::path::Path;

use nomyo_core::Fingerprint;

use super::{FORMAT_HEADER, FORMAT_HELP};
use crate::error::{Error, Result};

/// What a known-servers record says about protocol v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum V2Mark {
    Signed,
    Unsigned,
}

/// One server's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) origin: String,
    /// The (first) line it was read from; 0 for a new record.
    pub(super) line: usize,
    pub(super) v1: Vec<Fingerprint>,
    pub(super) v2: Option<V2Mark>,
    /// `(KEM name, config fingerprint)` of an unsigned v2 server.
    pub(super) v2_keys: Vec<(String, Fingerprint)>,
    pub(super) warned_v1: bool,
    /// The TPM attestation keys verified for this origin (one per replica).
    pub(super) aks: Vec<Fingerprint>,
    /// Fields this version does not know, kept verbatim.
    pub(super) other: Vec<String>,
}

impl Entry {
    pub(super) fn render(&self) -> String {
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
        for fp in &self.aks {
            s.push_str(&format!(" ak={fp}"));
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
pub(super) enum Item {
    Text(String),
    Entry(usize),
}

/// The parsed file.
#[derive(Clone, Debug, Default)]
pub(super) struct Records {
    pub(super) items: Vec<Item>,
    pub(super) entries: Vec<Entry>,
}

impl Records {
    pub(super) fn entry(&self, origin: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.origin == origin)
    }
    pub(super) fn entry_mut(&mut self, origin: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.origin == origin)
    }
    pub(super) fn entry_or_insert(&mut self, origin: &str) -> &mut Entry {
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
    pub(super) fn merge(&mut self, origin: &str, line: usize, f: impl FnOnce(&mut Entry)) {
        let e = self.entry_or_insert(origin);
        if e.line == 0 {
            e.line = line;
        }
        f(e);
    }

    pub(super) fn parse(path: &Path, text: &str) -> Result<Records> {
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

    pub(super) fn parse_legacy_line(&mut self, path: &Path, n: usize, line: &str) -> Result<()> {
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

    pub(super) fn parse_v2_line(&mut self, path: &Path, n: usize, line: &str) -> Result<()> {
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
                "ak" => e
                    .aks
                    .push(value.parse().map_err(|_| bad("invalid ak fingerprint"))?),
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
            m.aks.extend(e.aks);
            m.other.extend(e.other);
        });
        Ok(())
    }

    pub(super) fn render(&self) -> String {
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

pub(super) fn parse_kem(path: &Path, n: usize, kem: &str) -> Result<String> {
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

pub(super) fn kerr(path: &Path, message: impl Into<String>) -> Error {
    Error::KnownServers {
        path: path.to_owned(),
        message: message.into(),
    }
}
