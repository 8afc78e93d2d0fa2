//! Measures the engine: prompt and generation tokens/s and peak RSS, through
//! the same `Backend` API the server uses.
//!
//! ```text
//! cargo run --release -p nomyo-engine --example bench -- MODEL.gguf \
//!     [--threads N] [--tokens 128] [--prompt-words 300] [--runs 3] [--ctx 2048] [--json]
//! ```
//!
//! Each run is one streamed, greedy request whose end-of-turn token is banned
//! (`logit_bias`), so exactly `--tokens` tokens are generated, as llama-bench's
//! `tg` does. Prompt time is from submitting to the first streamed chunk (the
//! prompt evaluated); generation time is from there to the end of the stream.
//! Peak RSS is the process's VmHWM after all runs (Linux).

use std::time::Instant;

use futures::StreamExt;
use nomyo_engine::{Engine, EngineConfig};
use nomyo_server::backend::{Backend, ChatRequest};
use serde_json::{json, Value};

mod common;
use common::{arg, story_prompt};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(model) = args.first().filter(|a| !a.starts_with("--")) else {
        return Err("usage: bench MODEL.gguf [--threads N] [--tokens N] [--prompt-words N] [--runs N] [--json]".into());
    };
    let threads = arg(&args, "--threads", nomyo_engine::DEFAULT_THREADS);
    let tokens = arg(&args, "--tokens", 128);
    let words = arg(&args, "--prompt-words", 300);
    let runs = arg(&args, "--runs", 3).max(1);
    let as_json = args.iter().any(|a| a == "--json");
    let ctx = arg(&args, "--ctx", nomyo_engine::DEFAULT_CONTEXT as usize) as u32;

    let mut config = EngineConfig::new(model);
    config.threads = Some(threads);
    config.context_size = Some(ctx);
    let t_load = Instant::now();
    let engine = Engine::start(config)?;
    engine.wait_ready().await?;
    let load_s = t_load.elapsed().as_secs_f64();

    let body = json!({
        "model": engine.model_id(),
        "messages": [{"role": "user", "content": story_prompt(words)}],
        "temperature": 0,
        "max_tokens": tokens,
        // Ban the end-of-turn token (SmolLM2's <|im_end|> is id 2) so that
        // every run generates exactly `tokens` tokens.
        "logit_bias": {"2": -100},
        "stream_options": {"include_usage": true},
    });

    let mut results = Vec::new();
    // Run 0 is a warm-up and is not counted.
    for run in 0..=runs {
        let request = ChatRequest {
            body: body.as_object().cloned().unwrap_or_default(),
            tier: nomyo_core::SecurityTier::Standard,
            request_id: format!("bench-{run}"),
        };
        let t0 = Instant::now();
        let mut stream = engine.chat_stream(request).await?;
        let t_prompt = t0.elapsed().as_secs_f64();
        let mut usage = Value::Null;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if !chunk["usage"].is_null() {
                usage = chunk["usage"].clone();
            }
        }
        let t_total = t0.elapsed().as_secs_f64();
        let pt = usage["prompt_tokens"].as_f64().unwrap_or(0.0);
        let ct = usage["completion_tokens"].as_f64().unwrap_or(0.0);
        if run > 0 {
            results.push((pt, ct, t_prompt, t_total - t_prompt));
        }
    }

    let n = results.len() as f64;
    let pp: f64 = results.iter().map(|(pt, _, tp, _)| pt / tp).sum::<f64>() / n;
    let tg: f64 = results.iter().map(|(_, ct, _, tg)| ct / tg).sum::<f64>() / n;
    let tg_min = results
        .iter()
        .map(|(_, ct, _, tg)| ct / tg)
        .fold(f64::INFINITY, f64::min);
    let tg_max = results
        .iter()
        .map(|(_, ct, _, tg)| ct / tg)
        .fold(0.0, f64::max);
    let rss_mib = peak_rss_kib().map(|k| k as f64 / 1024.0);
    let (pt, ct) = (results[0].0, results[0].1);
    if as_json {
        println!(
            "{}",
            json!({
                "threads": threads, "context": ctx, "runs": runs, "prompt_tokens": pt, "completion_tokens": ct,
                "prompt_tok_s": pp, "gen_tok_s": tg, "gen_tok_s_min": tg_min, "gen_tok_s_max": tg_max,
                "peak_rss_mib": rss_mib, "load_s": load_s,
            })
        );
    } else {
        println!(
            "threads {threads}, context {ctx}: prompt {pt} tokens at {pp:.0} tok/s; generation {ct} tokens at {tg:.1} tok/s \
             (min {tg_min:.1}, max {tg_max:.1}, {runs} runs); peak RSS {:.0} MiB; load {load_s:.2} s",
            rss_mib.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
