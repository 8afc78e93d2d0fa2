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

//!
//! This file holds the flags and their checks; [`request`] builds the chat
//! that is sent, [`measure`] runs the warm-up and the measured phase and
//! reports them, [`send`] sends one request and [`stats`] sums them up.

use std::time::Duration;

use clap::{Args as ClapArgs, ValueEnum};
use nomyo_core::SecurityTier;

mod measure;
mod request;
mod send;
mod stats;

use measure::bench;
use send::parse_fraction;

use super::chat::tier_parser;
use super::connect::ConnectArgs;
use crate::exit::{CliError, CliResult};

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
    let runtime = crate::cmd::runtime(true)?;
    runtime.block_on(bench(args, bound))
}

#[cfg(test)]
mod tests {
    use super::request::{build_request, prompt_text};
    use super::send::{cancel_this, completion_tokens};
    use super::stats::{decode_rate, mean, percentile_ms};
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
