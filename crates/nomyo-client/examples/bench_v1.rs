//! Per-request latency of this client against a v1 server, sequential, for
//! BENCHMARKS.md (run by `benches/compare_v1.py`, which also times the
//! Python client against the same server).
//!
//! ```text
//! cargo run --release -p nomyo-client --example bench_v1 -- \
//!     --base-url http://127.0.0.1:12434 --allow-http --model M --requests 200 --first 10
//! ```
//!
//! Prints one JSON object: `first_ms` (each fresh client's first request,
//! RSA-4096 key generation and server-key fetch included), `keygen_ms` (the
//! RSA-4096 key generation alone, as many times) and, for one warmed-up
//! client, `median_ms`, `p95_ms`, `mean_ms` over `--requests`.

use std::time::Instant;

use nomyo_client::{ChatMessage, ChatRequest, Client, KnownServers};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut base_url = None;
    let mut allow_http = false;
    let mut model = "small-model".to_owned();
    let mut requests = 200usize;
    let mut first = 10usize;
    let mut keygen_only = None;
    let mut crypto_only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--base-url" => base_url = args.next(),
            "--allow-http" => allow_http = true,
            "--model" => model = args.next().ok_or("--model needs a value")?,
            "--requests" => requests = args.next().ok_or("--requests needs a value")?.parse()?,
            "--first" => first = args.next().ok_or("--first needs a value")?.parse()?,
            // Only time N v1 seal + open with RSA-4096 keys (the crypto floor).
            "--crypto" => {
                crypto_only = Some(
                    args.next()
                        .ok_or("--crypto needs a value")?
                        .parse::<usize>()?,
                )
            }
            // Only time N RSA-4096 key generations.
            "--keygen" => {
                keygen_only = Some(
                    args.next()
                        .ok_or("--keygen needs a value")?
                        .parse::<usize>()?,
                )
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if let Some(n) = crypto_only {
        use nomyo_core::v1;
        let key = nomyo_core::PrivateKey::generate(nomyo_core::keys::RsaBits::B4096)?;
        let body = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"}}]}"#;
        let (mut seal_ms, mut open_ms) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            let p = v1::seal(body, key.public_key())?;
            let wire = p.to_json();
            seal_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            v1::open(&v1::Package::from_json(&wire)?, &key)?;
            open_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        seal_ms.sort_by(f64::total_cmp);
        open_ms.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({"seal_median_ms": percentile(&seal_ms, 50.0), "open_median_ms": percentile(&open_ms, 50.0)})
        );
        return Ok(());
    }
    if let Some(n) = keygen_only {
        let mut ms: Vec<f64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                nomyo_core::PrivateKey::generate(nomyo_core::keys::RsaBits::B4096)
                    .map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        ms.sort_by(f64::total_cmp);
        println!(
            "{}",
            serde_json::json!({"keygen_median_ms": percentile(&ms, 50.0), "keygen_ms": ms})
        );
        return Ok(());
    }
    let base_url = base_url.ok_or("--base-url is required")?;
    let build = || {
        Client::builder()
            .base_url(&base_url)
            .allow_http(allow_http)
            .known_servers(KnownServers::Off)
            .build()
    };
    let request = ChatRequest::new(model).message(ChatMessage::user("Say hello."));

    // First requests of fresh clients: key generation + key fetch + request.
    let mut first_ms = Vec::with_capacity(first);
    for _ in 0..first {
        let client = build()?;
        let t = Instant::now();
        client.create(&request).await?;
        first_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // RSA-4096 key generation alone (the part of the first request that
    // dominates it).
    let mut keygen_ms = Vec::with_capacity(first);
    for _ in 0..first {
        let t = Instant::now();
        nomyo_core::PrivateKey::generate(nomyo_core::keys::RsaBits::B4096)?;
        keygen_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    keygen_ms.sort_by(f64::total_cmp);

    // Steady state: one client, sequential requests.
    let client = build()?;
    client.create(&request).await?;
    let mut ms = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        client.create(&request).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    ms.sort_by(f64::total_cmp);
    let mut first_sorted = first_ms.clone();
    first_sorted.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "client": "nomyo-client (Rust)",
        "requests": requests,
        "median_ms": percentile(&ms, 50.0),
        "p95_ms": percentile(&ms, 95.0),
        "mean_ms": mean,
        "first_ms": first_ms,
        "first_median_ms": percentile(&first_sorted, 50.0),
        "keygen_median_ms": percentile(&keygen_ms, 50.0),
    });
    println!("{out}");
    Ok(())
}
