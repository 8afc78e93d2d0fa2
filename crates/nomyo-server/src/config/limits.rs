//! `[limits]`: the request limits and time-outs of the file, checked and
//! resolved into [`Limits`].

use super::*;

/// `[limits]`. Every field optional; absent = the default of [`Limits`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body in bytes (413).
    pub max_body_bytes: Option<usize>,
    /// Secure requests processed at once.
    pub max_concurrency: Option<usize>,
    /// Secure requests that may wait for a slot (then 503).
    pub max_queue: Option<usize>,
    /// Longest wait for a slot, seconds (then 503).
    /// TOML key `queue_timeout` (a duration such as `"30s"`; the older
    /// `queue_timeout_secs` still loads, with a warning).
    #[serde(rename = "queue_timeout", default, deserialize_with = "de_secs")]
    pub queue_timeout_secs: Option<u64>,
    /// Longest a whole secure request may take, seconds (504).
    /// TOML key `request_timeout` (a duration such as `"30s"`; the older
    /// `request_timeout_secs` still loads, with a warning).
    #[serde(rename = "request_timeout", default, deserialize_with = "de_secs")]
    pub request_timeout_secs: Option<u64>,
    /// Longest the request body may take to arrive, seconds (408).
    /// TOML key `body_timeout` (a duration such as `"30s"`; the older
    /// `body_timeout_secs` still loads, with a warning).
    #[serde(rename = "body_timeout", default, deserialize_with = "de_secs")]
    pub body_timeout_secs: Option<u64>,
    /// Most request-body bytes held in memory at once over all requests
    /// (503 beyond). Default 268435456 (256 MiB) or 4 × max_body_bytes,
    /// whichever is more; at least max_body_bytes.
    pub max_buffered_body_bytes: Option<usize>,
    /// Requests per minute per API key; 0 = unlimited (429).
    pub rate_limit_per_minute: Option<u32>,
    /// Burst for the rate limit; 0 = same as the rate.
    pub rate_limit_burst: Option<u32>,
    /// Seconds an `X-Payload-ID` and its package stay used (409 on reuse).
    /// TOML key `replay_window` (a duration such as `"30s"`; the older
    /// `replay_window_secs` still loads, with a warning).
    #[serde(rename = "replay_window", default, deserialize_with = "de_secs")]
    pub replay_window_secs: Option<u64>,
    /// Most entries in the replay window.
    pub replay_max_entries: Option<usize>,
    /// `--replay-journal`: the file that keeps the local replay window across
    /// restarts, or `"off"`. Default: `replay_window.log` in the key
    /// directory (off with an ephemeral key, a shared store, or in replica
    /// mode, where replicas would share one file).
    pub replay_journal: Option<String>,
    /// The largest share of `replay_max_entries`, in percent (1–100), one
    /// caller may hold (429 beyond it). Default 25.
    pub replay_share_percent: Option<u8>,
    /// A streamed answer whose backend produces nothing for this many
    /// seconds is cut. Default 120.
    /// TOML key `stream_idle_timeout` (a duration such as `"30s"`; the older
    /// `stream_idle_timeout_secs` still loads, with a warning).
    #[serde(rename = "stream_idle_timeout", default, deserialize_with = "de_secs")]
    pub stream_idle_timeout_secs: Option<u64>,
    /// A streamed answer whose client reads nothing for this many seconds is
    /// cut and its processing slot given back. Default 30.
    /// TOML key `stream_write_timeout` (a duration such as `"30s"`; the older
    /// `stream_write_timeout_secs` still loads, with a warning).
    #[serde(rename = "stream_write_timeout", default, deserialize_with = "de_secs")]
    pub stream_write_timeout_secs: Option<u64>,
}

impl LimitsConfig {
    pub(super) fn overlay(self, top: LimitsConfig) -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: top.max_body_bytes.or(self.max_body_bytes),
            max_concurrency: top.max_concurrency.or(self.max_concurrency),
            max_queue: top.max_queue.or(self.max_queue),
            queue_timeout_secs: top.queue_timeout_secs.or(self.queue_timeout_secs),
            request_timeout_secs: top.request_timeout_secs.or(self.request_timeout_secs),
            body_timeout_secs: top.body_timeout_secs.or(self.body_timeout_secs),
            max_buffered_body_bytes: top.max_buffered_body_bytes.or(self.max_buffered_body_bytes),
            rate_limit_per_minute: top.rate_limit_per_minute.or(self.rate_limit_per_minute),
            rate_limit_burst: top.rate_limit_burst.or(self.rate_limit_burst),
            replay_window_secs: top.replay_window_secs.or(self.replay_window_secs),
            replay_max_entries: top.replay_max_entries.or(self.replay_max_entries),
            replay_share_percent: top.replay_share_percent.or(self.replay_share_percent),
            replay_journal: top.replay_journal.or(self.replay_journal),
            stream_idle_timeout_secs: top
                .stream_idle_timeout_secs
                .or(self.stream_idle_timeout_secs),
            stream_write_timeout_secs: top
                .stream_write_timeout_secs
                .or(self.stream_write_timeout_secs),
        }
    }

    pub(super) fn resolve(&self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let secs = |v: Option<u64>, def: Duration, name: &str| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(def),
                Some(0) => Err(invalid(format!("limits.{name} must be at least 1"))),
                // Far beyond any sane setting, and far from overflowing a
                // deadline (`Instant` + window) or Redis's millisecond TTLs.
                Some(s) if s > MAX_LIMIT_SECS => Err(invalid(format!(
                    "limits.{name} must be at most 7d ({MAX_LIMIT_SECS} seconds)"
                ))),
                Some(s) => Ok(Duration::from_secs(s)),
            }
        };
        let l = Limits {
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_concurrency: self.max_concurrency.unwrap_or(d.max_concurrency),
            max_queue: self.max_queue.unwrap_or(d.max_queue),
            queue_timeout: secs(self.queue_timeout_secs, d.queue_timeout, "queue_timeout")?,
            request_timeout: secs(
                self.request_timeout_secs,
                d.request_timeout,
                "request_timeout",
            )?,
            body_timeout: secs(self.body_timeout_secs, d.body_timeout, "body_timeout")?,
            max_buffered_body_bytes: self.max_buffered_body_bytes.unwrap_or(
                d.max_buffered_body_bytes
                    .max(self.max_body_bytes.unwrap_or(0).saturating_mul(4)),
            ),
            rate_per_minute: self.rate_limit_per_minute.unwrap_or(d.rate_per_minute),
            rate_burst: self.rate_limit_burst.unwrap_or(d.rate_burst),
            replay_window: secs(self.replay_window_secs, d.replay_window, "replay_window")?,
            replay_capacity: self.replay_max_entries.unwrap_or(d.replay_capacity),
            replay_share_percent: self.replay_share_percent.unwrap_or(d.replay_share_percent),
            stream_idle_timeout: secs(
                self.stream_idle_timeout_secs,
                d.stream_idle_timeout,
                "stream_idle_timeout",
            )?,
            stream_write_timeout: secs(
                self.stream_write_timeout_secs,
                d.stream_write_timeout,
                "stream_write_timeout",
            )?,
        };
        if !(1..=100).contains(&l.replay_share_percent) {
            return Err(invalid("limits.replay_share_percent must be 1 to 100"));
        }
        if l.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes must be at least 1024"));
        }
        if l.max_buffered_body_bytes < l.max_body_bytes {
            return Err(invalid(
                "limits.max_buffered_body_bytes must be at least limits.max_body_bytes",
            ));
        }
        if l.max_concurrency == 0 {
            return Err(invalid("limits.max_concurrency must be at least 1"));
        }
        if l.replay_capacity < 2 {
            return Err(invalid("limits.replay_max_entries must be at least 2"));
        }
        Ok(l)
    }
}

/// The longest time any `[limits]` setting in seconds may be.
pub(super) const MAX_LIMIT_SECS: u64 = 7 * 24 * 3600;
