//! Durations in the file: the common syntax (`30s`, `10m`), and the older
//! `…_secs` keys renamed to it.

use super::*;

/// The keys that took a number of seconds under a `…_secs` name, and the
/// name that takes a duration (`"30s"`, `"10m"`, `"24h"`) now: `(table, old,
/// new)`, table `""` for the top level and `"backends"` for each
/// `[[backends]]` entry.
pub(super) const SECONDS_KEYS: &[(&str, &str, &str)] = &[
    ("", "key_grace_secs", "key_grace"),
    ("", "shutdown_grace_secs", "shutdown_grace"),
    ("limits", "queue_timeout_secs", "queue_timeout"),
    ("limits", "request_timeout_secs", "request_timeout"),
    ("limits", "body_timeout_secs", "body_timeout"),
    ("limits", "replay_window_secs", "replay_window"),
    ("limits", "stream_idle_timeout_secs", "stream_idle_timeout"),
    (
        "limits",
        "stream_write_timeout_secs",
        "stream_write_timeout",
    ),
    (
        "backends",
        "health_check_interval_secs",
        "health_check_interval",
    ),
    ("backends", "breaker_cooldown_secs", "breaker_cooldown"),
    ("backends", "timeout_secs", "timeout"),
    ("backends", "connect_timeout_secs", "connect_timeout"),
];

/// Renames the older `…_secs` keys of a parsed file to their duration
/// names; one warning for each. Both names in one table is an error.
pub(super) fn rename_seconds_keys(table: &mut toml::Table) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let mut rename = |t: &mut toml::Table, prefix: &str, old: &str, new: &str| {
        let Some(v) = t.remove(old) else {
            return Ok(());
        };
        if t.contains_key(new) {
            return Err(format!(
                "{prefix}{new} and {prefix}{old} both given: keep {new} (a duration such as \"30s\")"
            ));
        }
        let example = match &v {
            toml::Value::Integer(n) => format!("{new} = \"{n}s\""),
            _ => format!("{new} = \"30s\""),
        };
        warnings.push(format!(
            "configuration key {prefix}{old} is deprecated; write {prefix}{example} instead (durations: 500ms, 30s, 10m, 24h, 7d)"
        ));
        t.insert(new.to_owned(), v);
        Ok(())
    };
    for (section, old, new) in SECONDS_KEYS {
        match *section {
            "" => rename(table, "", old, new)?,
            "backends" => {
                if let Some(toml::Value::Array(entries)) = table.get_mut("backends") {
                    for entry in entries.iter_mut() {
                        if let toml::Value::Table(t) = entry {
                            rename(t, "[[backends]] ", old, new)?;
                        }
                    }
                }
            }
            name => {
                if let Some(toml::Value::Table(t)) = table.get_mut(name) {
                    rename(t, &format!("{name}."), old, new)?;
                }
            }
        }
    }
    Ok(warnings)
}

/// Deserialises a duration setting kept in whole seconds: `"30s"`, `"10m"`,
/// `"24h"`, `"7d"`, or a number of seconds.
pub(super) fn de_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Secs;
    impl serde::de::Visitor<'_> for Secs {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"30s\", \"10m\" or \"24h\", or a number of seconds")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            let d = parse_duration(v).ok_or_else(|| {
                E::custom(format!(
                    "\"{v}\" is not a duration (500ms, 30s, 10m, 24h, 7d)"
                ))
            })?;
            if d.subsec_nanos() != 0 {
                return Err(E::custom(format!(
                    "\"{v}\": this setting takes whole seconds (e.g. \"1s\", \"30s\")"
                )));
            }
            Ok(d.as_secs())
        }
    }
    d.deserialize_any(Secs).map(Some)
}
