//! `nomyo serve`: the secure endpoint.
//!
//! Flags are turned into the same typed configuration as the TOML file
//! (`nomyo_server::config::FileConfig`), laid over the file (flags win), then
//! resolved once; everything else happens in `nomyo_server`.
//!
//! This file holds the flags; [`config`] turns them into a configuration
//! layer and [`start`] runs the server from the resolved settings.

mod config;
mod start;

use std::path::PathBuf;

use clap::Args as ClapArgs;

pub use start::run;

/// Run the secure endpoint (protocols v1 and v2) in front of
/// OpenAI-compatible upstreams or the embedded model.
///
/// Prints `listening on http(s)://ADDR` on stdout once it accepts
/// connections. SIGHUP rotates the server key (the old key still opens
/// requests for --key-grace seconds) and the v2 HPKE keys (--hpke-grace); SIGTERM or ctrl-c stops accepting and
/// lets in-flight requests finish (--shutdown-grace). Every flag has a config
/// key (see nomyo.example.toml); flags win over the file, the file over the
/// defaults.
#[derive(ClapArgs, Debug)]
#[command(
    next_help_heading = "Server",
    after_help = "\
Prints `listening on http(s)://ADDR` on stdout once it accepts connections.
Signals: SIGHUP rotates the server key (reloads --key-dir, or generates and saves a
new key if the directory still holds the current one; the old key keeps opening
requests for --key-grace) and the protocol v2 HPKE keys (new key ids; the
old ones open requests for --hpke-grace, then are erased). The HPKE keys also rotate
every --hpke-rotate-every. SIGTERM / ctrl-c stop accepting and let in-flight
requests finish (--shutdown-grace).
Routes (docs/CLI.md §11.1):
  v1: GET /pki/public_key, POST /v1/chat/secure_completion
  v2: GET /.well-known/hpke-keys, POST /v1/chat/completions (EHBP-sealed; streams)
  with --tpm: GET /.well-known/nomyo-attestation?nonce=HEX,
  POST /.well-known/nomyo-attestation/activate
  GET /v1/models, GET /health, GET /metrics (loopback only by default)
Errors are JSON {\"detail\": ...}; a reused X-Payload-ID (or the same package
again) gets 409 within --replay-window.
Durations: 500ms, 30s, 10m, 24h, 7d (a bare number is seconds).
Config: every flag has a key in the TOML file (see nomyo.example.toml); flags win.

Examples:
  nomyo serve                                   # embedded model, http://127.0.0.1:12434
  nomyo serve --model ./models/other.gguf --threads 4
  nomyo serve --upstream http://127.0.0.1:8080/v1 --api-key-file keys.txt
  nomyo serve --config nomyo.toml --listen 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem

Exit codes: 0 stopped by SIGTERM or ctrl-c; 2 usage (a bad flag or value, an
invalid configuration file, an unreachable replay store at start, a key to
generate off a terminal with neither a key password nor --no-password); 4 a refused
server key file (wrong or missing password, readable by others); 1 anything else
(a model that cannot be loaded, an address that cannot be bound, TLS files that
cannot be read)."
)]
pub struct Args {
    /// TOML configuration file (annotated example: nomyo.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on: IP:PORT or localhost:PORT; port 0 picks a free
    /// port (the real one is printed). [default: 127.0.0.1:12434]
    #[arg(long, value_name = "ADDR", value_parser = super::connect::listen_value)]
    listen: Option<String>,
    /// Listen on this port of 127.0.0.1 (short for --listen 127.0.0.1:N).
    #[arg(long, value_name = "N", conflicts_with = "listen")]
    port: Option<u16>,
    /// How long in-flight requests get to finish on SIGTERM/ctrl-c. [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_secs)]
    shutdown_grace: Option<u64>,
    /// Do not serve GET /metrics. Without this flag and without a metrics
    /// token, /metrics answers loopback peers only (404 for others).
    #[arg(long)]
    no_metrics: bool,

    /// Directory of the server key (private_key.pem, public_key.pem); a key is
    /// generated and saved there (0600) on first start, encrypted with a key
    /// password (asked for twice on a terminal), or unencrypted with
    /// --no-password. [default: server_keys]
    #[arg(long, value_name = "DIR", help_heading = "Server key")]
    key_dir: Option<PathBuf>,
    /// File whose first line is the password of the server key file.
    #[arg(long, value_name = "F", group = "keypw", help_heading = "Server key")]
    key_password_file: Option<PathBuf>,
    /// Environment variable holding the password of the server key file.
    #[arg(long, value_name = "VAR", group = "keypw", help_heading = "Server key")]
    key_password_env: Option<String>,
    /// Save a server key generated in --key-dir unencrypted. Off a terminal,
    /// generating a key needs this or a key password; an existing
    /// unencrypted key loads without it.
    #[arg(long, conflicts_with_all = ["key_password_file", "key_password_env"], help_heading = "Server key")]
    no_password: bool,
    /// Size of a generated server key: 4096, 3072 or 2048 (tests). [default: 4096]
    #[arg(long, value_name = "BITS", help_heading = "Server key")]
    key_bits: Option<u32>,
    /// Use a fresh in-memory key, never saved (tests, benchmarks).
    #[arg(long, conflicts_with_all = ["key_dir", "key_password_file", "key_password_env"], help_heading = "Server key")]
    ephemeral_key: bool,
    /// How long a rotated-out key still opens requests. [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_secs, help_heading = "Server key")]
    key_grace: Option<u64>,
    /// Rotate the protocol v2 HPKE keys this often (e.g. 24h, 30m, 90s, 500ms),
    /// or "off" (SIGHUP only). Rotation is what makes v2 forward secret. [default: 24h]
    #[arg(long, value_name = "DURATION", help_heading = "Server key")]
    hpke_rotate_every: Option<String>,
    /// How long a rotated-out HPKE key still opens requests before it is
    /// erased; shorter than --hpke-rotate-every. [default: 10m]
    #[arg(long, value_name = "DURATION", help_heading = "Server key")]
    hpke_grace: Option<String>,

    /// OpenAI-compatible upstream base URL, e.g. http://127.0.0.1:8080/v1
    /// (POST {URL}/chat/completions). Repeatable: several URLs serving the
    /// same models form one pool (least busy healthy endpoint, failover);
    /// replaces the config's backends.
    #[arg(long, value_name = "URL", help_heading = "Backends")]
    upstream: Vec<String>,
    /// Model an --upstream serves (repeatable). Without it the upstream's
    /// GET {URL}/models is read at start-up, else any model name is forwarded.
    #[arg(
        long,
        value_name = "NAME",
        requires = "upstream",
        help_heading = "Backends"
    )]
    upstream_model: Vec<String>,
    /// File whose first line is the API key sent to the --upstream servers.
    #[arg(
        long,
        value_name = "F",
        group = "upkey",
        requires = "upstream",
        help_heading = "Backends"
    )]
    upstream_api_key_file: Option<PathBuf>,
    /// Environment variable holding the API key sent to the --upstream servers.
    #[arg(
        long,
        value_name = "VAR",
        group = "upkey",
        requires = "upstream",
        help_heading = "Backends"
    )]
    upstream_api_key_env: Option<String>,
    /// Timeout of one upstream request. [default: 5m]
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = crate::parse_secs,
        requires = "upstream",
        help_heading = "Backends"
    )]
    upstream_timeout: Option<u64>,
    /// Requests in flight per --upstream endpoint; beyond every endpoint's
    /// cap requests get 503. Makes the upstreams a pool. [default: no cap]
    #[arg(
        long,
        value_name = "N",
        requires = "upstream",
        help_heading = "Backends"
    )]
    upstream_max_concurrency: Option<usize>,
    /// Time between health probes (GET {URL}/models) of the --upstream
    /// endpoints; 0 = none. Makes the upstreams a pool. [default: 5s]
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = crate::parse_secs,
        requires = "upstream",
        help_heading = "Backends"
    )]
    upstream_health_interval: Option<u64>,
    /// GGUF model for the embedded engine (used when no --upstream and no
    /// config backend is given). Default: $NOMYO_MODEL_FILE, else
    /// ./models/SmolLM2-135M-Instruct.Q4_1.gguf, else the same file under
    /// $XDG_DATA_HOME/nomyo/models (scripts/fetch-model.sh fetches it).
    #[arg(long, value_name = "FILE.gguf", help_heading = "Backends")]
    model: Option<PathBuf>,
    /// Inference threads of the embedded engine.
    #[arg(long, value_name = "N", help_heading = "Backends")]
    threads: Option<usize>,
    /// Tokens one request may use with the embedded model, prompt plus
    /// answer: the context per sequence (64 to the context the model was
    /// trained for). The KV cache holds context x parallel tokens. Default:
    /// the model's trained context (n_ctx_train), the whole cache bounded by
    /// 1 GiB: at most 1 GiB / (parallel x layers x KV heads x (key + value
    /// head dims) x 2 bytes, f16 cache) tokens. SmolLM2-135M: 30 x 3 x (64 +
    /// 64) x 2 = 23,040 bytes per token, so its full 8192 tokens with 4
    /// sequences (720 MiB).
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_context,
        help_heading = "Backends"
    )]
    context: Option<u32>,
    /// Requests the embedded model decodes at once, continuously batched
    /// (1 to 64): each decode step gives every running request its next
    /// token, and a new request's prompt joins between steps. Each request
    /// is a sequence of its own (it attends to its own tokens only; nothing
    /// is cached from one request to another). Requests beyond it wait in
    /// the queue (8), then get 503. Default 4: measured on 2 cores with one
    /// inference thread, 4 streams at once make 1.28x the tokens/s of one
    /// in aggregate (65 against 51), each at about a third of one stream's
    /// speed (BENCHMARKS.md): users are served side by side rather than
    /// after one another.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=64),
        help_heading = "Backends"
    )]
    parallel: Option<u16>,

    /// TPM attestation (docs/PROTOCOL.md §14): the TPM's TCTI, e.g.
    /// device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321. Every answer
    /// then carries a quote, and GET /.well-known/nomyo-attestation serves
    /// the TPM's evidence; the attestation key is created once and saved in
    /// --key-dir (ak.pub, ak.priv). Without it, tiers with
    /// require_attestation (maximum by default) answer 503. [default: none]
    #[arg(
        long,
        value_name = "TCTI",
        env = "NOMYO_TPM",
        help_heading = "Attestation"
    )]
    tpm: Option<String>,
    /// The source of attestation evidence: none; tpm (the TPM of --tpm,
    /// which implies it); tsm: a confidential VM's reports (AMD SEV-SNP or
    /// Intel TDX) through Linux's configfs-tsm (docs/PROTOCOL.md §15),
    /// bound to the server's keys at GET /.well-known/nomyo-attestation
    /// and to each answer (_metadata.attestation). [default: none, or tpm
    /// with --tpm]
    #[arg(
        long,
        value_name = "SOURCE",
        value_parser = ["none", "tpm", "tsm"],
        help_heading = "Attestation"
    )]
    attestation: Option<String>,
    /// The configfs-tsm report directory (with --attestation tsm).
    /// [default: /sys/kernel/config/tsm/report]
    #[arg(long, value_name = "DIR", help_heading = "Attestation")]
    tsm_dir: Option<PathBuf>,

    /// TLS certificate chain (PEM); serves https with --tls-key.
    #[arg(long, value_name = "F", requires = "tls_key", help_heading = "TLS")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "F", requires = "tls_cert", help_heading = "TLS")]
    tls_key: Option<PathBuf>,

    /// Limits (boxed: keeps the `Command` enum small).
    #[command(flatten)]
    limits: Box<LimitsArgs>,

    /// Replicas (boxed: keeps the `Command` enum small).
    #[command(flatten)]
    cluster: Box<ClusterArgs>,

    /// Access: API keys, rate limit, /metrics, loopback host names, trusted
    /// proxies (boxed: keeps the `Command` enum small).
    #[command(flatten)]
    exposure: Box<ExposureArgs>,
}

/// The `nomyo serve` access flags: API keys, rate limit, /metrics, loopback
/// host names and trusted proxies (secrets are only named, by file or
/// variable, never given on the command line).
#[derive(ClapArgs, Debug)]
struct ExposureArgs {
    /// File of accepted API keys, one per line (kept only as SHA-256 hashes).
    /// Without keys (here or in the config) every caller is accepted.
    #[arg(long, value_name = "F", help_heading = "Access")]
    api_key_file: Option<PathBuf>,
    /// An accepted API key given as sha256:HEX (repeatable).
    #[arg(long, value_name = "SHA256", help_heading = "Access")]
    api_key_hash: Vec<String>,
    /// Requests per minute per API key; 0 = unlimited (then 429). [default: 0]
    #[arg(long, value_name = "N", help_heading = "Access")]
    rate_limit: Option<u32>,
    /// Burst allowance of the rate limit. [default: the rate]
    #[arg(long, value_name = "N", help_heading = "Access")]
    rate_burst: Option<u32>,
    /// File whose first line is a bearer token: GET /metrics then answers
    /// whoever sends Authorization: Bearer TOKEN (401 for others).
    #[arg(
        long,
        value_name = "F",
        group = "metricstoken",
        conflicts_with = "no_metrics",
        help_heading = "Access"
    )]
    metrics_token_file: Option<PathBuf>,
    /// Environment variable holding that metrics token.
    #[arg(
        long,
        value_name = "VAR",
        group = "metricstoken",
        conflicts_with = "no_metrics",
        help_heading = "Access"
    )]
    metrics_token_env: Option<String>,
    /// On a loopback --listen address, a host name to answer besides
    /// localhost and loopback addresses (repeatable); any other Host gets 403
    /// (DNS-rebinding guard).
    #[arg(long, value_name = "NAME", help_heading = "Access")]
    allowed_host: Vec<String>,
    /// A reverse proxy (address or CIDR network, repeatable) whose
    /// X-Forwarded-For names the client: anonymous callers' rate limit and
    /// replay share then count per client address, not per proxy.
    #[arg(long, value_name = "ADDR[/PREFIX]", help_heading = "Access")]
    trusted_proxy: Vec<String>,
}

/// The replica flags of `nomyo serve` (`Debug` leaves out the store URL,
/// which may hold a password).
#[derive(ClapArgs)]
struct ClusterArgs {
    /// Replica mode: re-read --key-dir this often (e.g. 10s) and use the keys
    /// another replica or an operator wrote there; SIGHUP then reloads instead
    /// of rotating, and the HPKE keys rotate on a schedule only with an explicit
    /// --hpke-rotate-every (give it to exactly one replica). "off" = never.
    /// [default: off]
    #[arg(long, value_name = "DURATION", help_heading = "Replicas")]
    key_reload_every: Option<String>,
    /// Keep the replay window in this Redis/Valkey, shared by every replica, so
    /// that a request accepted by one is refused (409) by all:
    /// redis://HOST:PORT[/DB] (rediss:// for TLS). Unreachable at start: exit;
    /// later: 503 until it is back. Prefer --replay-redis-url-env when the URL
    /// holds a password. [default: in this process only]
    #[arg(
        long,
        value_name = "URL",
        group = "replay_store",
        help_heading = "Replicas"
    )]
    replay_redis_url: Option<String>,
    /// Environment variable holding the --replay-redis-url.
    #[arg(
        long,
        value_name = "VAR",
        group = "replay_store",
        help_heading = "Replicas"
    )]
    replay_redis_url_env: Option<String>,
}

/// The `Limits` flags of `nomyo serve`.
#[derive(ClapArgs, Debug)]
struct LimitsArgs {
    /// Largest request body in bytes (then 413). [default: 16777216]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    max_body_bytes: Option<usize>,
    /// Secure requests processed at once. [default: 64]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_concurrency: Option<usize>,
    /// Secure requests that may wait for a slot; beyond, 503. [default: 256]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_queue: Option<usize>,
    /// Longest wait for a slot (then 503). [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_secs, help_heading = "Limits")]
    queue_timeout: Option<u64>,
    /// Longest a whole secure request may take (then 504). [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_secs, help_heading = "Limits")]
    request_timeout: Option<u64>,
    /// How long an X-Payload-ID (and its package) stays used; reuse gets 409. [default: 15m]
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_secs, help_heading = "Limits")]
    replay_window: Option<u64>,
    /// File that keeps the replay window across restarts (a restart must not
    /// make captured requests valid again), or "off". [default:
    /// replay_window.log in --key-dir; off with --ephemeral-key, a shared
    /// replay store or --key-reload-every]
    #[arg(long, value_name = "FILE|off", help_heading = "Limits")]
    replay_journal: Option<String>,
}

impl std::fmt::Debug for ClusterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterArgs")
            .field("key_reload_every", &self.key_reload_every)
            .field(
                "replay_redis_url",
                &self.replay_redis_url.as_ref().map(|_| "[REDACTED]"),
            )
            .field("replay_redis_url_env", &self.replay_redis_url_env)
            .finish()
    }
}

/// `--context N`: a token count of at least 64 (the model's upper bound is
/// checked when it is opened).
fn parse_context(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 64 => Ok(n),
        Ok(_) => Err("the context must be at least 64 tokens (prompt plus answer)".into()),
        Err(_) => Err("expected a number of tokens, e.g. 4096".into()),
    }
}
