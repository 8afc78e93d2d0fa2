//! `nomyo bench`: a bounded load generator for the secure endpoint
//! (docs/CLI.md §10).
//!
//! One [`Client`](nomyo_client::Client) is shared by `--concurrency` tokio tasks. Warm-up requests
//! (key fetch, connection set-up, the server's first-request costs) run
//! first and are left out of the statistics. The run stops after
//! `--requests` requests or `--duration` seconds. `--protocol plain` sends
//! the same chat unencrypted to an OpenAI-compatible URL (`POST
//! {URL}/chat/completions`), to measure what the encryption costs.
//!
//! Retries are off: every failed request counts, by kind (`http_<status>`,
//! `network`, `timeout`, `security`, `other`), and any failure makes the
//! command exit non-zero. Prompts and answers are never printed.
//!
//! `--open-every N` (protocol v1) opens one answer in N instead of every one.
//! A v1 client pays an RSA-4096 private-key operation per answer, as much as
//! the server pays per request, so a load generator on one core that opens
//! every answer cannot drive a one-core server to its RSA ceiling (and its
//! RSA work on the neighbouring core slows the server's). With N > 1 the
//! requests go through the client library as `nomyo chat` sends them
//! ([`Client::create_unopened`](nomyo_client::Client::create_unopened): the server's work per request is unchanged)
//! and every answer is read whole and strictly parsed as a v1 package whose
//! `payload_id` must be the request's; every N-th one (the first included)
//! is also opened and checked as every answer is without the option. The
//! JSON output says how many were opened (`answers_opened`).
//!
//! `--stream` works with `--protocol v2` (through the client library) and
//! `--protocol plain` (the upstream's server-sent events, read here).
//!
//! `--cancel-streams F` (with `--stream`) drops that fraction of the measured
//! streams right after their first chunk, as a client that goes away would:
//! they are counted as `cancelled`, neither as answers nor as errors (a soak
//! test uses it to check that the server frees what a cancelled stream held).
//!
//! Generated tokens come from each answer's `usage.completion_tokens` (with
//! `--stream`, `stream_options.include_usage` asks for the usage chunk; a
//! stream without one counts its content chunks). `generated_tokens_per_s`
//! is their sum over the measured run's wall time; with `--stream`,
//! `ttft_*_ms` time the first content chunk and `decode_tokens_per_s_mean`
//! is the mean per stream of the tokens after the first per second after it;
//! `itl_*_ms` are percentiles of every gap between consecutive content
//! chunks of a stream, pooled over all the streams (the inter-token latency).
//! v1 answers not opened (`--open-every`) carry no count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, ValueEnum};
use nomyo_client::{ChatMessage, ChatRequest};
use nomyo_core::v2::keys::Kem;
use nomyo_core::SecurityTier;

mod send;
mod stats;

use send::{cancel_this, parse_fraction, Failure, PlainSender, SampledV1, Sender};
use stats::{decode_rate, mean, percentile_ms, print_text, self_memory_kib, Collected};

use super::chat::{client_error, pick_model, tier_parser};
use super::connect::ConnectArgs;
use crate::exit::{CliError, CliResult, Code};

const AFTER_HELP: &str = "\
The server is --base-url, else $NOMYO_BASE_URL, else the local `nomyo serve` at
http://127.0.0.1:12434 (loopback; any other http:// URL needs --allow-http).
With --protocol plain, --base-url is an OpenAI-compatible base URL (e.g.
http://127.0.0.1:8080/v1) and the chat goes to {URL}/chat/completions
unencrypted.

The server's key is checked as in `nomyo chat`: --pin, else the known-servers
file (--known-servers, default $XDG_CONFIG_HOME/nomyo/known_servers, else
~/.config/nomyo/known_servers).

Reports requests/s and latency percentiles; the generated tokens and tokens/s
from the answers' usage.completion_tokens; with --stream, time to first token
and the decoding rate per stream (docs/CLI.md §10.2).

Examples:
  nomyo bench -c 8 -n 200                         # the local `nomyo serve`, protocol v1
  nomyo bench --protocol v2 --stream --duration 30s --json
  nomyo bench --protocol plain --base-url http://127.0.0.1:8080/v1 -c 4

Exit codes: 0 every request succeeded; 2 usage; 3 refused during warm-up
(401/403); 4 security failure during warm-up; 5 a measured request failed, or
the server/network failed during warm-up; 1 anything else.";

/// Which protocol to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchProtocol {
    /// NOMYO v1 (RSA-OAEP + AES-GCM) on /v1/chat/secure_completion.
    V1,
    /// EHBP on /v1/chat/completions (X-Wing preferred; see --kem).
    V2,
    /// No encryption: the same chat to an OpenAI-compatible {URL}/chat/completions.
    Plain,
}

/// Which v2 key config to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KemChoice {
    /// X-Wing if the server offers it, else X25519.
    Auto,
    /// DHKEM(X25519, HKDF-SHA256).
    X25519,
    /// X-Wing (ML-KEM-768 + X25519).
    Xwing,
}

/// Load the secure endpoint and print latency and throughput.
#[derive(ClapArgs, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The server (with --protocol plain: the upstream) and how its key is
    /// trusted.
    #[command(flatten)]
    connect: ConnectArgs,
    /// Protocol: v1, v2, or plain (no encryption, straight to an
    /// OpenAI-compatible URL, for comparison).
    #[arg(long, value_enum, default_value = "v1")]
    protocol: BenchProtocol,
    /// v2 key config: auto (X-Wing preferred), x25519 or xwing.
    #[arg(long, value_enum, default_value = "auto")]
    kem: KemChoice,
    /// Requests in flight at once (tasks sharing one client).
    #[arg(short, long, value_name = "N", default_value_t = 1)]
    concurrency: usize,
    /// Stop after N measured requests. [default: 100, unless --duration]
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "duration")]
    requests: Option<u64>,
    /// Stop after this long a measurement (e.g. 30s, 5m; requests in flight finish).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration_secs)]
    duration: Option<f64>,
    /// Warm-up requests before measuring (not counted). [default: the concurrency]
    #[arg(long, value_name = "N")]
    warmup: Option<u64>,
    /// Stream the answers (protocol v2 or plain) and report time to first
    /// token and inter-token latency.
    #[arg(long)]
    stream: bool,
    /// With --stream: drop this fraction (0 to 1) of the measured streams
    /// after their first chunk, as a client going away would; counted as
    /// `cancelled`, not as errors.
    #[arg(long, value_name = "FRACTION", requires = "stream", value_parser = parse_fraction)]
    cancel_streams: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Size of the prompt in tokens (about one token per word).
    #[arg(long, value_name = "N", conflicts_with = "body_bytes")]
    prompt_tokens: Option<usize>,
    /// Size of the plaintext request body in bytes (the prompt is padded to it).
    #[arg(long, value_name = "BYTES")]
    body_bytes: Option<usize>,
    /// Maximum tokens to generate (max_tokens in the request).
    #[arg(long, value_name = "N")]
    max_tokens: Option<u32>,
    /// Sampling temperature (temperature in the request; 0 is greedy).
    #[arg(long, value_name = "T", value_parser = parse_temperature)]
    temperature: Option<f64>,
    /// Bias of one token id, -100 (banned) to 100 (logit_bias in the
    /// request; repeatable). E.g. ban the end-of-turn token so that every
    /// answer is --max-tokens long.
    #[arg(long, value_name = "ID=BIAS", value_parser = parse_logit_bias)]
    logit_bias: Vec<(u32, f64)>,
    /// The model. Default: $NOMYO_MODEL, else the server's only model.
    #[arg(
        short = 'm',
        long,
        value_name = "MODEL",
        env = "NOMYO_MODEL",
        hide_env_values = true
    )]
    model: Option<String>,
    /// Security tier requested (X-Security-Tier).
    #[arg(long, value_name = "TIER", value_parser = tier_parser())]
    tier: Option<SecurityTier>,
    /// How long one request may take before it counts as a timeout (e.g. 60s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::parse_secs)]
    timeout: u64,
    /// Protocol v1: open (decrypt and check) one answer in N; the others
    /// are read and parsed as v1 packages only. Lets one load-generator core
    /// drive a server to its RSA ceiling. Default 1: open every answer.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    open_every: u64,
}

/// `--duration`: the common duration syntax (`500ms`, `30s`, `5m`; a bare
/// number, here also a decimal one such as `0.5`, is seconds), as seconds.
fn parse_duration_secs(text: &str) -> Result<f64, String> {
    if let Ok(secs) = text.trim().parse::<f64>() {
        return Ok(secs);
    }
    nomyo_core::duration::parse_duration(text)
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 30s, 5m, 500ms)"))
}

/// `--temperature`: a number from 0 to 2.
fn parse_temperature(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(t) if (0.0..=2.0).contains(&t) => Ok(t),
        _ => Err(format!("`{text}` is not a temperature from 0 to 2")),
    }
}

/// `--logit-bias`: `ID=BIAS`, a token id and a bias from -100 to 100.
fn parse_logit_bias(text: &str) -> Result<(u32, f64), String> {
    let bad = || format!("`{text}` is not ID=BIAS (a token id, a bias from -100 to 100)");
    let (id, bias) = text.split_once('=').ok_or_else(bad)?;
    let id = id.trim().parse::<u32>().map_err(|_| bad())?;
    match bias.trim().parse::<f64>() {
        Ok(b) if (-100.0..=100.0).contains(&b) => Ok((id, b)),
        _ => Err(bad()),
    }
}

/// How the measured phase ends.
#[derive(Clone, Copy, Debug)]
enum Bound {
    Requests(u64),
    Duration(Duration),
}

/// The prompt for the requested size.
fn prompt_text(prompt_tokens: Option<usize>, body_bytes: Option<usize>, overhead: usize) -> String {
    const WORDS: [&str; 8] = [
        "alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ",
    ];
    if let Some(n) = prompt_tokens {
        let mut s = String::with_capacity(n * 7);
        for i in 0..n {
            s.push_str(WORDS[i % WORDS.len()]);
        }
        return s.trim_end().to_owned();
    }
    if let Some(b) = body_bytes {
        let want = b.saturating_sub(overhead).max(1);
        let mut s = String::with_capacity(want + 8);
        let mut i = 0;
        while s.len() < want {
            s.push_str(WORDS[i % WORDS.len()]);
            i += 1;
        }
        s.truncate(want);
        return s;
    }
    "Say hello.".to_owned()
}

/// Builds the request; with --body-bytes its JSON is that many bytes.
fn build_request(args: &Args, model: &str) -> (ChatRequest, usize) {
    let make = |prompt: String| {
        let mut r = ChatRequest::new(model).message(ChatMessage::user(prompt));
        r.max_tokens = args.max_tokens;
        r.temperature = args.temperature;
        if !args.logit_bias.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> = args
                .logit_bias
                .iter()
                .map(|(id, bias)| (id.to_string(), serde_json::json!(bias)))
                .collect();
            r = r.with("logit_bias", serde_json::Value::Object(map));
        }
        if args.stream {
            r = r.with("stream", serde_json::Value::Bool(true));
            // The last chunk then carries the generated tokens.
            r = r.with("stream_options", serde_json::json!({"include_usage": true}));
        }
        r
    };
    let size = |r: &ChatRequest| serde_json::to_vec(r).map_or(0, |v| v.len());
    // The JSON around an empty prompt (the padding is plain ASCII: no escaping).
    let overhead = size(&make(String::new()));
    let request = make(prompt_text(args.prompt_tokens, args.body_bytes, overhead));
    let bytes = size(&request);
    (request, bytes)
}

pub fn run(args: Args) -> CliResult {
    if args.concurrency == 0 {
        return Err(CliError::usage("--concurrency must be at least 1"));
    }
    if args.stream && args.protocol == BenchProtocol::V1 {
        return Err(CliError::usage(
            "--stream needs --protocol v2 or plain (v1 cannot stream)",
        ));
    }
    if args.open_every > 1 && args.protocol != BenchProtocol::V1 {
        return Err(CliError::usage(
            "--open-every applies to --protocol v1 only",
        ));
    }
    if args.kem != KemChoice::Auto && args.protocol != BenchProtocol::V2 {
        return Err(CliError::usage("--kem applies to --protocol v2 only"));
    }
    let bound = match (args.requests, args.duration) {
        (_, Some(d)) if !(d.is_finite() && d > 0.0 && d <= 86_400.0) => {
            return Err(CliError::usage(
                "--duration must be a number of seconds between 0 and 86400",
            ))
        }
        (_, Some(d)) => Bound::Duration(Duration::from_secs_f64(d)),
        (Some(0), None) => return Err(CliError::usage("--requests must be at least 1")),
        (Some(n), None) => Bound::Requests(n),
        (None, None) => Bound::Requests(100),
    };
    if args.body_bytes.is_some_and(|b| b > 64 * 1024 * 1024) {
        return Err(CliError::usage("--body-bytes is limited to 64 MiB"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Code::Other, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(bench(args, bound))
}

async fn bench(args: Args, bound: Bound) -> CliResult {
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

#[cfg(test)]
mod tests {
    use super::send::completion_tokens;
    use super::*;

    #[test]
    fn decode_rate_counts_the_tokens_after_the_first() {
        let ms = Duration::from_millis;
        // 11 tokens, the first at 100 ms, the last at 600 ms: 10 in 0.5 s.
        let r = decode_rate(11, ms(100), ms(600)).expect("a rate");
        assert!((r - 20.0).abs() < 1e-9, "{r}");
        assert_eq!(decode_rate(1, ms(100), ms(600)), None);
        assert_eq!(decode_rate(5, ms(600), ms(600)), None);
        assert_eq!(mean([1.0, 2.0, 6.0].into_iter()), Some(3.0));
        assert_eq!(mean(std::iter::empty()), None);
        let answer = serde_json::json!({"usage": {"completion_tokens": 7}});
        assert_eq!(completion_tokens(&answer), Some(7));
        assert_eq!(completion_tokens(&serde_json::json!({})), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&v[..1], 95.0), Some(1.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &str) -> Result<Args, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace())).map(|c| c.args)
    }

    #[test]
    fn the_request_carries_stream_max_tokens_and_temperature() {
        let a =
            args("--protocol plain --stream --max-tokens 64 --temperature 0 --logit-bias 2=-100")
                .expect("valid");
        let (request, bytes) = build_request(&a, "m");
        let json = serde_json::to_value(&request).expect("JSON");
        assert_eq!(json["stream"], true);
        assert_eq!(json["stream_options"]["include_usage"], true);
        assert_eq!(json["max_tokens"], 64);
        assert_eq!(json["temperature"], 0.0);
        assert_eq!(json["logit_bias"], serde_json::json!({"2": -100.0}));
        assert_eq!(bytes, serde_json::to_vec(&request).expect("JSON").len());
        let (request, _) = build_request(&args("").expect("valid"), "m");
        let json = serde_json::to_value(&request).expect("JSON");
        assert!(json.get("temperature").is_none() && json.get("stream").is_none());
        assert!(json.get("logit_bias").is_none());
        assert!(args("--logit-bias 2").is_err());
        assert!(args("--logit-bias 2=-101").is_err());
        assert!(args("--logit-bias x=1").is_err());
        assert!(args("--temperature 2.5").is_err());
        assert!(args("--temperature=-1").is_err());
    }

    #[test]
    fn body_bytes_sets_the_request_size() {
        for want in [1024usize, 65_536, 1 << 20] {
            let text = prompt_text(None, Some(want), 100);
            assert_eq!(text.len(), want - 100);
        }
        let words = prompt_text(Some(10), None, 0);
        assert_eq!(words.split_whitespace().count(), 10);
    }

    #[test]
    fn cancel_fraction_is_spread_evenly() {
        let count = |f: f64| (0..1000).filter(|&i| cancel_this(i, f)).count();
        assert_eq!(count(0.0), 0);
        assert_eq!(count(0.25), 250);
        assert_eq!(count(0.3), 300);
        assert_eq!(count(1.0), 1000);
        let quarter: Vec<u64> = (0..8).filter(|&i| cancel_this(i, 0.25)).collect();
        assert_eq!(quarter, vec![3, 7]);
        assert!(parse_fraction("0.5").is_ok());
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("NaN").is_err());
    }
}
