//! The latency `nomyo proxy` adds: the same chat request, one at a time, by
//! the Rust client straight to the server ("direct") and by a plain HTTP
//! caller through the proxy ("proxied"), against an in-process
//! `nomyo_server` with an instant backend, all on 127.0.0.1. The two are
//! interleaved so that drift hits both alike.
//!
//! ```text
//! cargo run --release -p nomyo-proxy --example proxy_latency -- [REQUESTS]
//! ```
//!
//! Prints, per protocol and mode, the median / p90 / p99 per-request time
//! of both paths and the difference of the medians (the proxy's cost).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nomyo_client::{ChatMessage, ChatRequest, Client, KnownServers, Protocol};
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_server::backend::{Backend, BackendError, ChatRequest as Plain, ChunkStream};
use serde_json::{json, Value};

struct Instant0;

fn completion(model: &str) -> Value {
    json!({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "The capital of France is Paris."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}})
}

#[async_trait::async_trait]
impl Backend for Instant0 {
    fn name(&self) -> &str {
        "instant"
    }
    fn models(&self) -> Vec<String> {
        vec!["m".into()]
    }
    async fn chat(&self, r: Plain) -> Result<Value, BackendError> {
        Ok(completion(r.model()))
    }
    async fn chat_stream(&self, r: Plain) -> Result<ChunkStream, BackendError> {
        let model = r.model().to_owned();
        let items: Vec<Result<Value, BackendError>> = ["The ", "capital ", "is ", "Paris."]
            .iter()
            .map(|w| {
                Ok(json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]}))
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Stats {
    p50: f64,
    p90: f64,
    p99: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        p50: percentile(&v, 0.5),
        p90: percentile(&v, 0.9),
        p99: percentile(&v, 0.99),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);

    let key = PrivateKey::generate(RsaBits::B4096).unwrap();
    let state = nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(key))
        .backend("instant", Arc::new(Instant0))
        .build()
        .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, nomyo_server::app(state)).await });

    let request = ChatRequest::new("m")
        .message(ChatMessage::system("Answer briefly."))
        .message(ChatMessage::user("What is the capital of France?"));
    let body = serde_json::to_vec(&request).unwrap();
    let mut stream_body: Value = serde_json::to_value(&request).unwrap();
    stream_body["stream"] = json!(true);
    let stream_body = serde_json::to_vec(&stream_body).unwrap();
    let caller = reqwest::Client::new();

    println!(
        "{n} sequential requests per path after 50 warm-up requests; instant backend; 127.0.0.1"
    );
    println!(
        "{:<12} {:>22} {:>22} {:>12}",
        "case", "direct p50/p90/p99 ms", "proxied p50/p90/p99 ms", "added p50 ms"
    );
    for (label, protocol, stream) in [
        ("v1 plain", Protocol::V1, false),
        ("v2 plain", Protocol::V2, false),
        ("v2 stream", Protocol::V2, true),
    ] {
        let client = Client::builder()
            .base_url(&server)
            .allow_http(true)
            .known_servers(KnownServers::Off)
            .protocol(protocol)
            .max_retries(0)
            .build()
            .unwrap();
        client.prepare().await.unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = format!("http://{}/v1/chat/completions", l.local_addr().unwrap());
        tokio::spawn(nomyo_proxy::serve(
            l,
            nomyo_proxy::ProxyState::new(client.clone()),
            std::future::pending(),
        ));

        let direct = || async {
            let t = Instant::now();
            if stream {
                let mut s = client.create_stream(&request).await.unwrap();
                while let Some(c) = s.next().await {
                    c.unwrap();
                }
            } else {
                let c = client.create(&request).await.unwrap();
                assert!(c.text().is_some());
            }
            t.elapsed()
        };
        let proxied = || async {
            let t = Instant::now();
            let resp = caller
                .post(&proxy)
                .header("content-type", "application/json")
                .body(if stream {
                    stream_body.clone()
                } else {
                    body.clone()
                })
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = resp.bytes().await.unwrap();
            if stream {
                assert!(bytes.ends_with(b"data: [DONE]\n\n"));
            }
            t.elapsed()
        };
        for _ in 0..50 {
            direct().await;
            proxied().await;
        }
        let (mut d, mut p) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            if i % 2 == 0 {
                d.push(direct().await);
                p.push(proxied().await);
            } else {
                p.push(proxied().await);
                d.push(direct().await);
            }
        }
        let (d, p) = (stats(d), stats(p));
        println!(
            "{:<12} {:>22} {:>22} {:>12.3}",
            label,
            format!("{:.3}/{:.3}/{:.3}", d.p50, d.p90, d.p99),
            format!("{:.3}/{:.3}/{:.3}", p.p50, p.p90, p.p99),
            p.p50 - d.p50
        );
    }
}
