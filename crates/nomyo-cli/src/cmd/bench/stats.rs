//! What `nomyo bench` collects and how it reports it: percentiles, rates,
//! the text summary and the client's own memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Everything the measured phase collected.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) latencies: Vec<Duration>,
    pub(super) cancelled: u64,
    pub(super) ttfts: Vec<Duration>,
    /// Every gap between consecutive content chunks of a stream, pooled
    /// over all the measured streams (the inter-token latency).
    pub(super) itls: Vec<Duration>,
    /// Generated tokens summed over the answers that reported them.
    pub(super) tokens: u64,
    /// How many answers reported their generated tokens.
    pub(super) answers_with_tokens: u64,
    /// Per stream that generated more than one token: tokens after the
    /// first per second after the first (the decoding rate).
    pub(super) decode_rates: Vec<f64>,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) first_error: Option<String>,
}

/// When one stream's content chunks arrived: the time to the first, and
/// the gap before each later one.
pub(super) struct StreamClock {
    start: Instant,
    last: Option<Instant>,
    /// Time from the request to the first content chunk.
    pub(super) ttft: Option<Duration>,
    /// The gap before each content chunk after the first.
    pub(super) gaps: Vec<Duration>,
    /// Content chunks seen.
    pub(super) chunks: u64,
}

impl StreamClock {
    /// A clock for a request sent at `start`.
    pub(super) fn new(start: Instant) -> Self {
        Self {
            start,
            last: None,
            ttft: None,
            gaps: Vec::new(),
            chunks: 0,
        }
    }

    /// A content chunk arrived at `at`.
    pub(super) fn content(&mut self, at: Instant) {
        match self.last {
            None => self.ttft = Some(at.saturating_duration_since(self.start)),
            Some(prev) => self.gaps.push(at.saturating_duration_since(prev)),
        }
        self.last = Some(at);
        self.chunks += 1;
    }
}

/// The decoding rate of one stream: the tokens after the first, per second
/// after the first token arrived; `None` for one token or no time.
pub(super) fn decode_rate(tokens: u64, ttft: Duration, latency: Duration) -> Option<f64> {
    let after = latency.checked_sub(ttft)?.as_secs_f64();
    (tokens > 1 && after > 0.0).then(|| (tokens - 1) as f64 / after)
}

/// The mean of some values; `None` for none.
pub(super) fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u64), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Nearest-rank percentile of sorted values, in ms.
pub(super) fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[i].as_secs_f64() * 1e3)
}

/// The human-readable summary.
pub(super) fn print_text(o: &serde_json::Value) {
    let ms = |k: &str| o[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.2}"));
    let cancelled = match o["cancelled"].as_u64() {
        Some(n) if n > 0 => format!(", {n} cancelled"),
        _ => String::new(),
    };
    println!(
        "{} requests ({} ok{cancelled}) in {:.2} s at concurrency {}: {:.1} req/s",
        o["requests"],
        o["ok"],
        o["elapsed_s"].as_f64().unwrap_or(0.0),
        o["concurrency"],
        o["requests_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "latency ms: p50 {}  p95 {}  p99 {}  mean {}  max {}",
        ms("p50_ms"),
        ms("p95_ms"),
        ms("p99_ms"),
        ms("mean_ms"),
        ms("max_ms")
    );
    if let Some(n) = o["generated_tokens"].as_u64() {
        println!(
            "generated tokens: {n} in {} answers, {:.1} tokens/s",
            o["answers_with_tokens"],
            o["generated_tokens_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    if o.get("ttft_p50_ms").is_some() {
        println!(
            "time to first token ms: p50 {}  p95 {}  p99 {}  mean {}",
            ms("ttft_p50_ms"),
            ms("ttft_p95_ms"),
            ms("ttft_p99_ms"),
            ms("ttft_mean_ms")
        );
        println!(
            "inter-token latency ms: p50 {}  p99 {}  ({} gaps between content chunks)",
            ms("itl_p50_ms"),
            ms("itl_p99_ms"),
            o["itl_gaps"].as_u64().unwrap_or(0)
        );
        if let Some(r) = o["decode_tokens_per_s_mean"].as_f64() {
            println!("decoding after the first token: {r:.1} tokens/s per stream (mean)");
        }
    }
    if let Some(e) = o["errors"].as_object().filter(|e| !e.is_empty()) {
        let list: Vec<String> = e.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("errors: {}", list.join(", "));
    }
}

/// This process's resident set and its peak (Linux `/proc/self/status`), KiB.
pub(super) fn self_memory_kib() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_clock_times_the_first_chunk_and_the_gaps_after_it() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut clock = StreamClock::new(start);
        assert_eq!(clock.ttft, None);
        for at in [120, 150, 150, 190] {
            clock.content(start + ms(at));
        }
        assert_eq!(clock.ttft, Some(ms(120)));
        assert_eq!(clock.gaps, vec![ms(30), ms(0), ms(40)]);
        assert_eq!(clock.chunks, 4);
        // One chunk: a time to first token, no gap.
        let mut one = StreamClock::new(start);
        one.content(start + ms(5));
        assert_eq!(one.ttft, Some(ms(5)));
        assert!(one.gaps.is_empty());
    }

    #[test]
    fn pooled_gaps_give_the_inter_token_percentiles() {
        let ms = Duration::from_millis;
        // Two streams: 98 gaps of 10 ms and 2 slow gaps of 500 ms and 900 ms.
        let mut pooled: Vec<Duration> = vec![ms(10); 49];
        pooled.push(ms(900));
        pooled.extend(vec![ms(10); 49]);
        pooled.push(ms(500));
        pooled.sort_unstable();
        assert_eq!(percentile_ms(&pooled, 50.0), Some(10.0));
        // Nearest rank: the 99th of 100 is the 500 ms gap, the 100th the 900 ms.
        assert_eq!(percentile_ms(&pooled, 99.0), Some(500.0));
        assert_eq!(percentile_ms(&pooled, 100.0), Some(900.0));
    }
}
