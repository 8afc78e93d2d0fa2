//! `nomyo proxy`: a plain OpenAI-compatible API on loopback, every request
//! forwarded end-to-end encrypted (docs/CLI.md §9; crate `nomyo-proxy`).
//!
//! Arguments are resolved once into [`Settings`]; [`run`] builds the client
//! exactly as `nomyo chat` does and serves `nomyo_proxy::app`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;
use nomyo_client::{Client, TrustDecision};
use nomyo_core::{SecretString, SecurityTier};

use super::chat::{tier_parser, Protocol};
use super::client_error;
use super::connect::{ConnectArgs, Connection};
use crate::exit::{CliError, CliResult, Code};
use crate::input::optional_secret;

const AFTER_HELP: &str = "\
Point any OpenAI SDK at it by changing only the base URL, e.g. in Python:
  client = openai.OpenAI(base_url=\"http://127.0.0.1:12436/v1\", api_key=\"unused\")
or: curl http://127.0.0.1:12436/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{\"model\": \"M\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'

Routes: POST /v1/chat/completions (with and without \"stream\": true), GET /v1/models,
GET /v1/models/MODEL, GET /health. Every other request field (tools, tool_choice, response_format, seed, ...)
is forwarded unchanged; the answer is the endpoint's, decrypted, with its _metadata.
Each request is sealed with protocol v2 when the server publishes its HPKE keys
(--protocol auto, the default), else v1; auto never serves the high or maximum
tier over v1 (those requests get 502 nomyo_security_error; --protocol v1 allows
them), and never falls back to v1 for a server recorded as speaking v2. Protocol
v1 CANNOT STREAM: a streamed request to a v1
server is answered as a well-formed event stream built from the complete answer
(everything arrives at once, then data: [DONE]).

Errors are OpenAI-shaped ({\"error\": {\"message\", \"type\", \"code\"}}) with the endpoint's
status (401, 403, 404, 429 with Retry-After, 400, 5xx), so SDKs raise their own
exception types; a pin mismatch or a changed server key is 502 nomyo_security_error.
The tier is --tier, or per request the X-Nomyo-Tier header.

Safe by default: listens on loopback only and answers only requests addressed to
localhost/127.0.0.1 with a JSON body (no DNS rebinding, no cross-site form posts).
Listening elsewhere needs --allow-remote AND an access token, which callers then
send as their API key (Authorization: Bearer TOKEN). The endpoint's API key comes
from --api-key-file, --api-key-env or $NOMYO_API_KEY and never leaves the proxy.
Nothing of a prompt or an answer is logged (-v logs ids, sizes, statuses, timings).

The server's key is verified as `nomyo chat` does: against --pin (the server's v1
key, which signs the v2 key list of a `nomyo serve`; for an unsigned third-party v2
server, the key `nomyo fingerprint --server URL` lists for v2), or else trusted on
first use and recorded in the known-servers file (--known-servers, default
$XDG_CONFIG_HOME/nomyo/known_servers, else ~/.config/nomyo/known_servers). An
unsigned key list from a server known to sign its lists is refused (exit 4).

Examples:
  nomyo proxy                                    # to the local `nomyo serve`
  nomyo proxy --base-url https://api.example.org --api-key-env NOMYO_API_KEY
  nomyo proxy --tier high --pin sha256:HEX --base-url https://api.example.org

Exit codes: 0 stopped by SIGTERM or ctrl-c; 2 usage (a bad --listen, a
non-loopback address without --allow-remote and an access token); 3 the server
refused the API key at start (401/403); 4 security failure at start (pin
mismatch, changed server key); 1 anything else (an address that cannot be
bound). An unreachable server at start is a warning: each request tries again.";

/// Serve a local OpenAI-compatible API that forwards end-to-end encrypted.
#[derive(ClapArgs, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Address to listen on: IP:PORT or localhost:PORT (loopback; port 0
    /// picks a free port, printed).
    #[arg(long, value_name = "ADDR", default_value = nomyo_proxy::DEFAULT_LISTEN, value_parser = super::connect::listen_value)]
    listen: String,
    /// Listen on this port of 127.0.0.1 (short for --listen 127.0.0.1:N).
    #[arg(long, value_name = "N", conflicts_with = "listen")]
    port: Option<u16>,
    /// Allow a non-loopback --listen address (needs an access token).
    #[arg(long)]
    allow_remote: bool,
    /// Callers must send this token (first line of F) as their API key.
    #[arg(long, value_name = "F", conflicts_with = "access_token_env")]
    access_token_file: Option<PathBuf>,
    /// Callers must send this token (from environment variable VAR) as their API key.
    #[arg(long, value_name = "VAR")]
    access_token_env: Option<String>,
    /// The endpoint and how its key is trusted.
    #[command(flatten)]
    connect: ConnectArgs,
    /// Security tier for requests without an X-Nomyo-Tier header; default:
    /// the server's choice.
    #[arg(long, value_name = "TIER", value_parser = tier_parser())]
    tier: Option<SecurityTier>,
    /// Protocol: auto (v2 when the server publishes its HPKE keys, else v1;
    /// never high/maximum over v1, never v1 for a server known to speak
    /// v2), v1 (explicitly) or v2.
    #[arg(long, value_enum, default_value = "auto")]
    protocol: Protocol,
    /// Retries after 429/5xx answers and network errors. Default 0: the
    /// caller's SDK retries (and honours Retry-After) itself.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_retries: u32,
    /// How long to wait for the endpoint's answer (e.g. 90s, 15m).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = crate::parse_secs)]
    timeout: u64,
    #[command(flatten)]
    attestation: super::attest::RequireArgs,
}

/// The resolved command line.
struct Settings {
    listen: SocketAddr,
    access_token: Option<SecretString>,
    connection: Connection,
    tier: Option<SecurityTier>,
    protocol: Protocol,
    max_retries: u32,
    timeout: Duration,
    /// `--require-attestation`, with its trust inputs.
    attestation: Option<nomyo_client::attest::AttestOptions>,
}

fn resolve(args: Args) -> CliResult<Settings> {
    let listen: SocketAddr = match args.port {
        Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        None => super::connect::parse_listen(&args.listen)
            .map_err(|e| CliError::usage(format!("--listen {e}")))?,
    };
    let access_token = optional_secret(
        args.access_token_file.as_deref(),
        args.access_token_env.as_deref(),
        "access token",
    )?;
    nomyo_proxy::check_listen(listen, args.allow_remote, access_token.is_some())
        .map_err(|e| CliError::usage(e.to_string()))?;
    let attestation = args.attestation.options()?;
    if attestation.is_some() && args.protocol == Protocol::V1 {
        return Err(CliError::usage(super::attest::NEEDS_V2));
    }
    Ok(Settings {
        listen,
        access_token,
        connection: args.connect.resolve()?,
        tier: args.tier,
        protocol: args.protocol,
        max_retries: args.max_retries,
        timeout: Duration::from_secs(args.timeout.max(1)),
        attestation,
    })
}

/// Runs the proxy until SIGTERM or ctrl-c.
pub fn run(args: Args) -> CliResult {
    let settings = resolve(args)?;
    let runtime = crate::cmd::runtime(true)?;
    runtime.block_on(proxy(settings))
}

async fn proxy(mut s: Settings) -> CliResult {
    let mut builder = s
        .connection
        .client_builder()
        .max_retries(s.max_retries)
        .timeout(s.timeout)
        .protocol(s.protocol.to_client());
    let require_attestation = s.attestation.is_some();
    if let Some(options) = s.attestation.take() {
        builder = builder.require_attestation(options);
    }
    let client = builder.build().map_err(client_error)?;
    verify_server(&client).await?;
    if require_attestation {
        // Before listening: an SDK never gets a port that would forward to
        // an unattested server.
        if !client.uses_v2().await.map_err(client_error)? {
            client
                .refuse_v1_if_attestation_required()
                .map_err(client_error)?;
        }
        client.ensure_attested().await.map_err(client_error)?;
        eprintln!("nomyo proxy: {} is attested", client.origin());
    }

    let mut state = nomyo_proxy::ProxyState::new(client);
    if let Some(t) = s.tier {
        state = state.default_tier(t);
    }
    if let Some(token) = s.access_token.take() {
        state = state.access_token(&token);
    }
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .map_err(|e| CliError::new(Code::Other, format!("cannot listen on {}: {e}", s.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new(Code::Other, format!("cannot listen on {}: {e}", s.listen)))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    }
    nomyo_proxy::serve(listener, state, super::shutdown_signal())
        .await
        .map_err(|e| CliError::new(Code::Other, format!("the proxy stopped: {e}")))
}

/// Checks the server's key before accepting callers, so that a pin
/// mismatch or a changed key stops the proxy at once (exit 4) instead of
/// failing every request. An unreachable server is only a warning: the
/// proxy tries again on each request.
async fn verify_server(client: &Client) -> CliResult {
    let checked = async {
        if client.uses_v2().await? {
            let keys = client.hpke_keys().await?;
            // A signed key list is trusted (and recorded) through the v1 key.
            let fingerprint = keys.signed_by().unwrap_or(keys.fingerprint());
            Ok::<_, nomyo_client::Error>(("v2", fingerprint, keys.trust().clone()))
        } else {
            let key = client.prepare().await?;
            Ok(("v1", key.fingerprint(), key.trust().clone()))
        }
    }
    .await;
    match checked {
        Ok((protocol, fingerprint, trust)) => {
            if let TrustDecision::FirstUse { file } = &trust {
                eprintln!(
                    "nomyo proxy: first contact with {}: trusting its key {fingerprint} (recorded in {})",
                    client.origin(),
                    file.display()
                );
            }
            eprintln!(
                "nomyo proxy: forwarding to {} with protocol {protocol} (server key {fingerprint})",
                client.origin()
            );
            if protocol == "v1" {
                super::chat::warn_v1_once(client, std::io::stderr().is_terminal())?;
            }
            Ok(())
        }
        Err(e) if e.is_security() || e.is_auth() || !e.is_server_or_network() => {
            Err(client_error(e))
        }
        Err(e) => {
            eprintln!("nomyo proxy: warning: {e}; starting anyway, each request will try again");
            Ok(())
        }
    }
}
