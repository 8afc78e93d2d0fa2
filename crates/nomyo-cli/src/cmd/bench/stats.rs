//! What `nomyo bench` collects and how it reports it: percentiles, rates,
//! the text summary and the client's own memory.

use std::collections::BTreeMap;
use std::time::Duration;

/// Everything the measured phase collected.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) latencies: Vec<Duration>,
    pub(super) cancelled: u64,
    pub(super) ttfts: Vec<Duration>,
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
            "time to first token ms: p50 {}  p95 {}  mean {}",
            ms("ttft_p50_ms"),
            ms("ttft_p95_ms"),
            ms("ttft_mean_ms")
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
