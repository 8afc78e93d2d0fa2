//! One `nomyo bench` run: the sender for the protocol, the warm-up, the
//! measured phase, and the report (text or JSON) with its exit code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nomyo_core::v2::keys::Kem;

use super::request::build_request;
use super::send::{cancel_this, Failure, PlainSender, SampledV1, Sender};
use super::stats::{decode_rate, mean, percentile_ms, print_text, self_memory_kib, Collected};
use super::{Args, BenchProtocol, Bound, KemChoice};
use crate::cmd::chat::pick_model;
use crate::cmd::client_error;
use crate::exit::{CliError, CliResult, Code};

pub(super) async fn bench(args: Args, bound: Bound) -> CliResult {
    if args.protocol == BenchProtocol::Plain && !args.connect.has_base_url() {
        return Err(CliError::usage(
            "no server given: use --base-url URL or set NOMYO_BASE_URL (with --protocol plain: the upstream's URL)",
        ));
    }
    let conn = args.connect.clone().resolve()?;
    let base_url = conn.base_url().to_owned();
    let timeout = Duration::from_secs(args.timeout.max(1));

    let (sender, model) = if args.protocol == BenchProtocol::Plain {
        let model = args
            .model
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| CliError::usage("--protocol plain needs --model (or NOMYO_MODEL)"))?;
        if base_url.starts_with("http://") && !conn.allow_http() {
            return Err(CliError::usage(format!(
                "refusing the plain-HTTP URL {base_url} without --allow-http"
            )));
        }
        // Streams each get a connection of their own: llama-server closes
        // the connection after a streamed answer although it announces
        // keep-alive, and a POST sent on such a pooled connection fails
        // (reqwest does not resend it). A loopback connect costs well under
        // a millisecond of the time to first token.
        let idle = if args.stream {
            0
        } else {
            args.concurrency.max(8)
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(idle)
            .build()
            .map_err(|e| CliError::new(Code::Other, format!("cannot build HTTP client: {e}")))?;
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let sender = Sender::Plain(PlainSender {
            http,
            url,
            api_key: conn.api_key().cloned(),
            body: bytes::Bytes::new(),
            stream: args.stream,
        });
        (sender, model)
    } else {
        let mut builder = conn
            .client_builder()
            .max_retries(0)
            .timeout(timeout)
            .protocol(match args.protocol {
                BenchProtocol::V2 => nomyo_client::Protocol::V2,
                _ => nomyo_client::Protocol::V1,
            });
        match args.kem {
            KemChoice::Auto => {}
            KemChoice::X25519 => builder = builder.v2_kem(Kem::X25519),
            KemChoice::Xwing => builder = builder.v2_kem(Kem::XWing),
        }
        if let Some(t) = args.tier {
            builder = builder.security_tier(t);
        }
        let client = builder.build().map_err(client_error)?;
        let model = match args.model.clone().filter(|m| !m.is_empty()) {
            Some(m) => m,
            None => pick_model(&client).await?,
        };
        let sender = if args.open_every > 1 {
            Sender::Sampled(SampledV1 {
                client,
                every: args.open_every,
                sent: AtomicU64::new(0),
                opened: AtomicU64::new(0),
            })
        } else {
            Sender::Secure {
                client,
                stream: args.stream,
            }
        };
        (sender, model)
    };
    let (request, body_bytes) = build_request(&args, &model);
    let sender = Arc::new(match sender {
        Sender::Plain(mut p) => {
            let json = serde_json::to_vec(&request)
                .map_err(|e| CliError::new(Code::Other, format!("cannot encode request: {e}")))?;
            p.body = bytes::Bytes::from(json);
            Sender::Plain(p)
        }
        s => s,
    });
    let request = Arc::new(request);

    // Warm-up: key fetches, connections, first-request costs. A failure here
    // is reported as `nomyo chat` would report it.
    let warmup = args.warmup.unwrap_or(args.concurrency as u64);
    let mut tasks = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..args.concurrency.min(warmup.max(1) as usize) {
        let (sender, request, next) = (sender.clone(), request.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < warmup {
                sender.one(&request, false).await?;
            }
            Ok::<(), Failure>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(f)) = r {
            tasks.abort_all();
            return Err(CliError::new(
                f.exit,
                format!("warm-up request failed ({}): {}", f.kind, f.message),
            ));
        }
    }

    // The measured phase.
    let collected = Arc::new(Mutex::new(Collected::default()));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cancel_fraction = args.cancel_streams.unwrap_or(0.0);
    let deadline = match bound {
        Bound::Duration(d) => Some(started + d),
        Bound::Requests(_) => None,
    };
    for _ in 0..args.concurrency {
        let (sender, request, next, collected) = (
            sender.clone(),
            request.clone(),
            next.clone(),
            collected.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let done = match (bound, deadline) {
                    (Bound::Requests(n), _) => i >= n,
                    (_, Some(d)) => Instant::now() >= d,
                    _ => false,
                };
                if done {
                    break;
                }
                let outcome = sender.one(&request, cancel_this(i, cancel_fraction)).await;
                let mut c = collected.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    Ok(s) if s.cancelled => c.cancelled += 1,
                    Ok(s) => {
                        c.latencies.push(s.latency);
                        if let Some(t) = s.ttft {
                            c.ttfts.push(t);
                        }
                        c.itls.extend_from_slice(&s.gaps);
                        if let Some(n) = s.tokens {
                            c.tokens += n;
                            c.answers_with_tokens += 1;
                            if let Some(rate) = s.ttft.and_then(|t| decode_rate(n, t, s.latency)) {
                                c.decode_rates.push(rate);
                            }
                        }
                    }
                    Err(f) => {
                        *c.errors.entry(f.kind.clone()).or_default() += 1;
                        if c.first_error.is_none() {
                            c.first_error = Some(format!("{}: {}", f.kind, f.message));
                        }
                    }
                }
            }
            Ok(())
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let mut c = std::mem::take(&mut *collected.lock().unwrap_or_else(|e| e.into_inner()));
    c.latencies.sort_unstable();
    c.ttfts.sort_unstable();
    c.itls.sort_unstable();
    let ok = c.latencies.len() as u64;
    let failed: u64 = c.errors.values().sum();
    let total = ok + c.cancelled + failed;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mean_ms = if ok == 0 {
        None
    } else {
        Some(c.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / ok as f64)
    };
    let (rss, hwm) = self_memory_kib();
    let mut out = serde_json::json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "kem": match (args.protocol, args.kem) {
            (BenchProtocol::V2, KemChoice::X25519) => "x25519",
            (BenchProtocol::V2, KemChoice::Xwing) => "xwing",
            (BenchProtocol::V2, KemChoice::Auto) => "auto",
            _ => "none",
        },
        "concurrency": args.concurrency,
        "warmup": warmup,
        "body_bytes": body_bytes,
        "requests": total,
        "ok": ok,
        "cancelled": c.cancelled,
        "errors": c.errors,
        "elapsed_s": secs,
        "requests_per_s": total as f64 / secs,
        "ok_per_s": ok as f64 / secs,
        "p50_ms": percentile_ms(&c.latencies, 50.0),
        "p95_ms": percentile_ms(&c.latencies, 95.0),
        "p99_ms": percentile_ms(&c.latencies, 99.0),
        "mean_ms": mean_ms,
        "max_ms": c.latencies.last().map(|d| d.as_secs_f64() * 1e3),
        "client_rss_kib": rss,
        "client_hwm_kib": hwm,
        "answers_with_tokens": c.answers_with_tokens,
        "generated_tokens": (c.answers_with_tokens > 0).then_some(c.tokens),
        "generated_tokens_per_s": (c.answers_with_tokens > 0).then(|| c.tokens as f64 / secs),
    });
    if let Sender::Sampled(v) = &*sender {
        out["open_every"] = serde_json::json!(v.every);
        out["answers_opened"] = serde_json::json!(v.opened.load(Ordering::Relaxed));
    }
    if args.stream {
        out["ttft_p50_ms"] = serde_json::json!(percentile_ms(&c.ttfts, 50.0));
        out["ttft_p95_ms"] = serde_json::json!(percentile_ms(&c.ttfts, 95.0));
        out["ttft_p99_ms"] = serde_json::json!(percentile_ms(&c.ttfts, 99.0));
        out["ttft_mean_ms"] =
            serde_json::json!(mean(c.ttfts.iter().map(|d| d.as_secs_f64() * 1e3)));
        out["decode_tokens_per_s_mean"] = serde_json::json!(mean(c.decode_rates.iter().copied()));
        out["itl_p50_ms"] = serde_json::json!(percentile_ms(&c.itls, 50.0));
        out["itl_p99_ms"] = serde_json::json!(percentile_ms(&c.itls, 99.0));
        out["itl_gaps"] = serde_json::json!(c.itls.len());
    }
    if args.json {
        println!("{out}");
    } else {
        print_text(&out);
    }
    if failed > 0 {
        let first = c.first_error.unwrap_or_default();
        return Err(CliError::new(
            Code::Server,
            format!("{failed} of {total} requests failed (first: {first})"),
        ));
    }
    Ok(())
}
