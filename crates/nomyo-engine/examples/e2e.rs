//! What end-to-end encryption adds to a real answer: the same greedy
//! 128-token chat asked of the engine directly, and through a `nomyo_server`
//! (on a real TCP socket) by the `nomyo_client` library over protocol v1, v2
//! and v2 streamed, alternating request by request.
//!
//! ```text
//! cargo run --release -p nomyo-engine --example e2e -- MODEL.gguf \
//!     [--threads 1] [--tokens 128] [--prompt-words 300] [--runs 5] [--json]
//! ```
//!
//! Every request has the same body, with the end-of-turn token banned
//! (`logit_bias`) so that exactly `--tokens` tokens are generated, so the
//! answers are identical and the times comparable. Reported: the median total
//! time of each path, the overhead of each encrypted path over the engine's
//! own time, and for the streamed answer the median time to the first content
//! token as a fraction of its total.
//!
//! Generation speed on a shared machine varies by several percent from one
//! request to the next, more than encryption costs, so the totals alone
//! cannot show a small overhead. The server's backend is therefore wrapped in
//! [`Timed`], which records how long the engine itself took inside each
//! encrypted request: `total - engine time of that same request` is what the
//! encrypted path added (sealing, opening, HTTP, JSON), paired request by
//! request, and is reported as `*_added_ms` and as a share of the engine time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nomyo_client::{ChatMessage, ChatRequest as ClientRequest, Client, KnownServers, Protocol};
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_engine::{Engine, EngineConfig};
use nomyo_server::backend::{Backend, BackendError, ChatRequest, ChunkStream};
use serde_json::{json, Value};

mod common;
use common::{arg, story_prompt};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The engine as the server sees it, recording the time the engine spent on
/// the last request (for a stream: from the call until its last chunk).
struct Timed {
    inner: Arc<Engine>,
    last: Arc<Mutex<Option<Duration>>>,
}

impl Timed {
    fn take(last: &Mutex<Option<Duration>>) -> Result<Duration, Box<dyn std::error::Error>> {
        last.lock()
            .map_err(|_| "timer lock poisoned")?
            .take()
            .ok_or_else(|| "the server did not ask the engine".into())
    }
}

#[async_trait::async_trait]
impl Backend for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn models(&self) -> Vec<String> {
        self.inner.models()
    }
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }
    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
        let t0 = Instant::now();
        let out = self.inner.chat(request).await;
        if let Ok(mut last) = self.last.lock() {
            *last = Some(t0.elapsed());
        }
        out
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        let t0 = Instant::now();
        let inner = self.inner.chat_stream(request).await?;
        let last = Arc::clone(&self.last);
        // Chain a marker after the engine's last chunk: when the server polls
        // past the end, the engine's part of this request is over.
        let end = futures::stream::once(async move {
            if let Ok(mut l) = last.lock() {
                *l = Some(t0.elapsed());
            }
            None
        });
        Ok(Box::pin(
            inner
                .map(Some)
                .chain(end)
                .filter_map(futures::future::ready),
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(model) = args.first().filter(|a| !a.starts_with("--")) else {
        return Err("usage: e2e MODEL.gguf [--threads N] [--tokens N] [--prompt-words N] [--runs N] [--json]".into());
    };
    let threads = arg(&args, "--threads", nomyo_engine::DEFAULT_THREADS);
    let tokens = arg(&args, "--tokens", 128);
    let words = arg(&args, "--prompt-words", 300);
    let runs = arg(&args, "--runs", 5).max(1);
    let as_json = args.iter().any(|a| a == "--json");

    let mut config = EngineConfig::new(model);
    config.threads = Some(threads);
    let engine = Arc::new(Engine::start(config)?);
    engine.wait_ready().await?;
    let model_id = engine.model_id().to_owned();

    // The secure endpoint, in this process, on a real socket.
    let server_key = PrivateKey::generate(RsaBits::B4096)?;
    let last = Arc::new(Mutex::new(None));
    let timed = Timed {
        inner: Arc::clone(&engine),
        last: Arc::clone(&last),
    };
    let state =
        nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key))
            .backend("embedded", Arc::new(timed) as Arc<dyn Backend>)
            .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, nomyo_server::app(state)).await });

    let known = std::env::temp_dir().join(format!("nomyo-e2e-known-{}", std::process::id()));
    let client_for = |protocol| {
        Client::builder()
            .base_url(&url)
            .allow_http(true)
            .known_servers(KnownServers::File(known.clone()))
            .protocol(protocol)
            .timeout(Duration::from_secs(600))
            .build()
    };
    let v1 = client_for(Protocol::V1)?;
    let v2 = client_for(Protocol::V2)?;

    let content = story_prompt(words);
    let body = json!({
        "model": model_id,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": tokens,
        "logit_bias": {"2": -100},
    });
    let request = ClientRequest::new(&model_id)
        .message(ChatMessage::user(content.as_str()))
        .temperature(0.0)
        .max_tokens(tokens as u32)
        .with("logit_bias", json!({"2": -100}));

    let (mut direct, mut t_v1, mut t_v2, mut t_v2s, mut ttft) =
        (vec![], vec![], vec![], vec![], vec![]);
    // Paired: what each encrypted request added over the engine's own time
    // inside that request (ms), and that as a share of the engine time (%).
    let (mut add_v1, mut add_v2, mut add_v2s) = (vec![], vec![], vec![]);
    let (mut pct_v1, mut pct_v2, mut pct_v2s) = (vec![], vec![], vec![]);
    let mut completion_tokens = 0;
    // Round 0 warms every path up (keys fetched, connections open) and is not counted.
    for round in 0..=runs {
        let t0 = Instant::now();
        let answer = engine
            .chat(ChatRequest {
                body: body.as_object().cloned().unwrap_or_default(),
                tier: nomyo_core::SecurityTier::Standard,
                request_id: format!("e2e-{round}"),
            })
            .await?;
        let d_direct = t0.elapsed();
        completion_tokens = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);

        let t0 = Instant::now();
        let a1 = v1.create(&request).await?;
        let d_v1 = t0.elapsed();
        let e_v1 = Timed::take(&last)?;
        let t0 = Instant::now();
        let a2 = v2.create(&request).await?;
        let d_v2 = t0.elapsed();
        let e_v2 = Timed::take(&last)?;
        for a in [&a1, &a2] {
            if a.text() != answer["choices"][0]["message"]["content"].as_str() {
                return Err("the encrypted answer differs from the engine's own".into());
            }
        }

        let t0 = Instant::now();
        let mut stream = v2.create_stream(&request).await?;
        let mut first = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let has_text = chunk
                .choices
                .iter()
                .any(|c| c.delta.content.as_deref().is_some_and(|s| !s.is_empty()));
            if first.is_none() && has_text {
                first = Some(t0.elapsed());
            }
        }
        let d_v2s = t0.elapsed();
        let e_v2s = Timed::take(&last)?;
        if round > 0 {
            for ((d, e), (add, pct)) in [(d_v1, e_v1), (d_v2, e_v2), (d_v2s, e_v2s)]
                .into_iter()
                .zip([
                    (&mut add_v1, &mut pct_v1),
                    (&mut add_v2, &mut pct_v2),
                    (&mut add_v2s, &mut pct_v2s),
                ])
            {
                add.push(ms(d) - ms(e));
                pct.push((ms(d) / ms(e) - 1.0) * 100.0);
            }
            direct.push(ms(d_direct));
            t_v1.push(ms(d_v1));
            t_v2.push(ms(d_v2));
            t_v2s.push(ms(d_v2s));
            ttft.push(ms(first.ok_or("the stream carried no content")?));
        }
    }
    let _ = std::fs::remove_file(&known);

    let (d, a, b, c, f) = (
        median(direct),
        median(t_v1),
        median(t_v2),
        median(t_v2s),
        median(ttft),
    );
    let out: Value = json!({
        "threads": threads, "runs": runs, "completion_tokens": completion_tokens,
        "engine_ms": d, "v1_ms": a, "v2_ms": b, "v2_stream_ms": c, "v2_stream_ttft_ms": f,
        "v1_overhead_pct": (a / d - 1.0) * 100.0, "v2_overhead_pct": (b / d - 1.0) * 100.0,
        "v2_stream_overhead_pct": (c / d - 1.0) * 100.0, "ttft_fraction": f / c,
        "v1_added_ms": median(add_v1), "v2_added_ms": median(add_v2),
        "v2_stream_added_ms": median(add_v2s),
        "v1_added_pct_max": max(&pct_v1), "v2_added_pct_max": max(&pct_v2),
        "v2_stream_added_pct_max": max(&pct_v2s),
        "v1_added_pct": median(pct_v1), "v2_added_pct": median(pct_v2),
        "v2_stream_added_pct": median(pct_v2s),
    });
    if as_json {
        println!("{out}");
    } else {
        println!(
            "{completion_tokens} tokens, {threads} thread(s), median of {runs}: engine {d:.0} ms; \
             v1 {a:.0} ms ({:+.1}%); v2 {b:.0} ms ({:+.1}%); v2 streamed {c:.0} ms ({:+.1}%), \
             first token after {f:.0} ms ({:.1}% of the answer); added over the engine's own \
             time in the same request (median): v1 {} ms ({}%), v2 {} ms ({}%), v2 streamed {} ms ({}%)",
            (a / d - 1.0) * 100.0,
            (b / d - 1.0) * 100.0,
            (c / d - 1.0) * 100.0,
            f / c * 100.0,
            out["v1_added_ms"],
            out["v1_added_pct"],
            out["v2_added_ms"],
            out["v2_added_pct"],
            out["v2_stream_added_ms"],
            out["v2_stream_added_pct"],
        );
    }
    Ok(())
}
