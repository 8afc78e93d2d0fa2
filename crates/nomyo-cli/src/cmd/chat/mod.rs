//! `nomyo chat`: one end-to-end encrypted chat completion (docs/CLI.md §8).
//!
//! Arguments are resolved once into [`Settings`]; [`run`] then drives the
//! client library: one answer, or with no prompt on a terminal a
//! conversation ([`session`]). No protocol logic lives here.
//!
//! Beside this file: [`input`] (the prompt or `--messages` file),
//! [`setup`](mod@setup) (everything before the first request),
//! [`answer`](mod@answer) (one request and its printed answer). Client
//! errors get their exit codes from [`client_error`](fn@client_error),
//! shared with the other client commands.

mod answer;
mod input;
mod session;
mod setup;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, ValueEnum};
use nomyo_client::attest::AttestOptions;
use nomyo_client::{ChatMessage, ChatRequest, KeySource};
use nomyo_core::SecurityTier;
use zeroize::Zeroizing;

use super::client_error;
use super::connect::{ConnectArgs, Connection};
use crate::exit::{CliError, CliResult};
use crate::input::optional_secret;
use answer::answer;
use input::{read_messages, read_prompt};
pub(crate) use setup::pick_model;
use setup::setup;
#[cfg(feature = "proxy")]
pub(crate) use setup::warn_v1_once;

const AFTER_HELP: &str = "\
The server is --base-url, else $NOMYO_BASE_URL. With neither, chat talks to a
local `nomyo serve` at its default address, http://127.0.0.1:12434: loopback,
so its plain HTTP never leaves the machine. Any other http:// URL needs
--allow-http: chat never downgrades to an unprotected connection on its own.

The server's key is verified against --pin, or else trusted on first use and
recorded in the known-servers file (--known-servers, default
$XDG_CONFIG_HOME/nomyo/known_servers, else ~/.config/nomyo/known_servers; like
ssh's known_hosts); a changed key is refused until you forget it
(`nomyo known-servers remove ORIGIN`). The file also records that a server
speaks protocol v2 and signs its key lists: an unsigned key list from such a
server, or its falling back to v1, is refused (exit 4).

The protocol is auto by default: v2 when the server publishes its HPKE keys,
else v1, but never the high or maximum tier over v1, and never v1 for a server
recorded as speaking v2. --protocol v1 chooses v1 explicitly (v1 answers are only
as safe as the TLS path: said once per server on a terminal).

The API key comes from --api-key-file, --api-key-env, or $NOMYO_API_KEY.

With no PROMPT on a terminal, chat opens a conversation: type a message after
the `>>> ` marker; each answer is streamed as it arrives (printed whole over
v1). The history is kept in memory only and wiped on exit. Commands:
/system TEXT (set the system message), /clear (forget the history), /help,
/exit (or Ctrl-D). Ctrl-C stops an answer; at the marker it ends the conversation.

Examples:
  nomyo chat                                        # a conversation (on a terminal)
  nomyo chat 'Why is the sky blue?'                 # the local `nomyo serve`
  echo 'Summarise this' | nomyo chat -m MODEL       # the prompt from stdin
  nomyo chat --messages conversation.json           # a whole conversation
  nomyo chat --stream --tier high --base-url https://api.example.org 'Hello'
  nomyo chat --json --max-tokens 64 'Hello' | jq .choices[0].message.content

Exit codes: 0 ok; 2 usage; 3 refused by the server (401/403); 4 security failure
(decryption, pin mismatch, changed server key, unsigned or badly signed v2 keys,
refused downgrade, refused key file); 5 server or network failure after
retries; 1 anything else.";

/// Which protocol to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// v2 when the server publishes /.well-known/hpke-keys, else v1 (with
    /// the downgrade guards of the client library).
    Auto,
    /// NOMYO v1: AES-256-GCM + RSA-OAEP (docs/PROTOCOL.md).
    V1,
    /// EHBP with a post-quantum suite (X-Wing preferred, else X25519).
    V2,
}

impl Protocol {
    pub(crate) fn to_client(self) -> nomyo_client::Protocol {
        match self {
            Protocol::Auto => nomyo_client::Protocol::Auto,
            Protocol::V1 => nomyo_client::Protocol::V1,
            Protocol::V2 => nomyo_client::Protocol::V2,
        }
    }
}

/// One end-to-end encrypted chat completion.
#[derive(ClapArgs, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The prompt. `-` reads it from standard input, as does none when
    /// standard input is not a terminal; none on a terminal opens a
    /// conversation. Note that arguments are visible to other local users
    /// (ps); pipe sensitive text.
    #[arg(value_name = "PROMPT")]
    prompt: Option<String>,
    /// Send a whole conversation: a JSON array of messages,
    /// `[{"role": "system"|"user"|"assistant", "content": "..."}]`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "system"])]
    messages: Option<PathBuf>,
    /// The server and how its key is trusted.
    #[command(flatten)]
    connect: ConnectArgs,
    /// Security tier requested (X-Security-Tier); default: the server's choice.
    #[arg(long, value_name = "TIER", value_parser = tier_parser())]
    tier: Option<SecurityTier>,
    /// The model. Default: $NOMYO_MODEL, else the server's only model (GET /v1/models).
    #[arg(
        short = 'm',
        long,
        value_name = "MODEL",
        env = "NOMYO_MODEL",
        hide_env_values = true
    )]
    model: Option<String>,
    /// Use the client key pair in DIR (private_key.pem, public_key.pem) instead
    /// of a fresh in-memory key. With a password and no key in DIR, a new
    /// encrypted key is saved there. Existing keys are never overwritten.
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// The key directory's password, from the first line of this file.
    #[arg(
        long,
        value_name = "F",
        requires = "key_dir",
        conflicts_with = "password_env"
    )]
    password_file: Option<PathBuf>,
    /// The key directory's password, from this environment variable.
    #[arg(long, value_name = "VAR", requires = "key_dir")]
    password_env: Option<String>,
    /// Protocol: auto (v2 when the server publishes its HPKE keys, else v1;
    /// never high/maximum over v1, never v1 for a server known to speak v2),
    /// v1 (explicitly), or v2 (EHBP, post-quantum X-Wing preferred).
    #[arg(long, value_enum, default_value = "auto")]
    protocol: Protocol,
    /// Print the answer's tokens as they arrive (needs protocol v2; with
    /// --json, one chunk JSON per line).
    #[arg(long)]
    stream: bool,
    /// Print the whole response JSON, `_metadata` included, instead of the text.
    #[arg(long)]
    json: bool,
    /// Maximum tokens to generate.
    #[arg(long, value_name = "N")]
    max_tokens: Option<u32>,
    /// Sampling temperature (0-2).
    #[arg(long, value_name = "X")]
    temperature: Option<f64>,
    /// Seed for reproducible sampling.
    #[arg(long, value_name = "N")]
    seed: Option<i64>,
    /// A system message before the prompt.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Retries after 429/5xx answers and network errors.
    #[arg(long, value_name = "N", default_value_t = 2)]
    max_retries: u32,
    /// How long to wait for an answer (e.g. 90s, 15m).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = crate::parse_secs)]
    timeout: u64,
    #[command(flatten)]
    attestation: super::attest::RequireArgs,
}

/// The `--tier` values, listed in `--help` and completions.
pub(crate) fn tier_parser() -> impl clap::builder::TypedValueParser<Value = SecurityTier> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["standard", "high", "maximum"])
        .try_map(|s| s.parse::<SecurityTier>())
}

/// The resolved command line.
struct Settings {
    connection: Connection,
    tier: Option<SecurityTier>,
    model: Option<String>,
    key_source: KeySource,
    /// Set when chat is about to create a key pair in this directory.
    creating_key_in: Option<PathBuf>,
    json: bool,
    request: ChatRequest,
    max_retries: u32,
    timeout: Duration,
    protocol: Protocol,
    stream: bool,
    /// No prompt on a terminal: a conversation, starting with this system
    /// message (if any).
    session: Option<Option<Zeroizing<String>>>,
    /// `--require-attestation`, with its trust inputs.
    attestation: Option<AttestOptions>,
}

const V1_CANNOT_STREAM: &str =
    "--stream is not supported by protocol v1 (v1 cannot stream): use --protocol v2 or auto";

fn resolve(args: Args) -> CliResult<Settings> {
    if args.stream && args.protocol == Protocol::V1 {
        return Err(CliError::usage(V1_CANNOT_STREAM));
    }
    let attestation = args.attestation.options()?;
    if attestation.is_some() && args.protocol == Protocol::V1 {
        return Err(CliError::usage(super::attest::NEEDS_V2));
    }
    let connection = args.connect.resolve()?;
    let password = optional_secret(
        args.password_file.as_deref(),
        args.password_env.as_deref(),
        "password",
    )?;
    let mut creating_key_in = None;
    let key_source = match args.key_dir {
        None => KeySource::Ephemeral,
        Some(dir) => {
            let has_key = dir.join(nomyo_core::keys::PRIVATE_KEY_FILE).exists();
            if !has_key {
                if password.is_none() {
                    return Err(CliError::usage(format!(
                        "{} holds no key: create one with `nomyo keygen --out {}`, or give \
                         --password-file/--password-env to have chat create an encrypted one",
                        dir.display(),
                        dir.display()
                    )));
                }
                creating_key_in = Some(dir.clone());
            }
            KeySource::Directory {
                dir,
                password,
                create: true,
            }
        }
    };

    let mut request = ChatRequest::new(args.model.clone().unwrap_or_default());
    let mut session = None;
    if let Some(file) = &args.messages {
        request.messages = read_messages(file)?;
    } else if args.prompt.is_none() && std::io::stdin().is_terminal() {
        if args.json {
            return Err(CliError::usage(
                "--json needs a PROMPT or --messages (a conversation prints text)",
            ));
        }
        session = Some(args.system.map(Zeroizing::new));
    } else {
        let prompt = read_prompt(args.prompt)?;
        if let Some(system) = args.system {
            request = request.message(ChatMessage::system(system));
        }
        request = request.message(ChatMessage::user(prompt.as_str()));
    }
    request.max_tokens = args.max_tokens;
    request.temperature = args.temperature;
    request.seed = args.seed;
    Ok(Settings {
        connection,
        tier: args.tier,
        model: args.model.filter(|m| !m.is_empty()),
        key_source,
        creating_key_in,
        json: args.json,
        request,
        max_retries: args.max_retries,
        timeout: Duration::from_secs(args.timeout.max(1)),
        protocol: args.protocol,
        stream: args.stream,
        session,
        attestation,
    })
}

pub fn run(args: Args) -> CliResult {
    let settings = resolve(args)?;
    let runtime = crate::cmd::runtime(false)?;
    let result = runtime.block_on(chat(settings));
    // A conversation ended by Ctrl-C leaves a thread blocked reading the
    // terminal: do not wait for it.
    runtime.shutdown_background();
    result
}

async fn chat(mut s: Settings) -> CliResult {
    let mut builder = s
        .connection
        .client_builder()
        .max_retries(s.max_retries)
        .timeout(s.timeout)
        .key_source(s.key_source.clone())
        .protocol(s.protocol.to_client());
    if let Some(t) = s.tier {
        builder = builder.security_tier(t);
    }
    if let Some(options) = s.attestation.take() {
        builder = builder.require_attestation(options);
    }
    let client = builder.build().map_err(client_error)?;
    let spin = std::io::stderr().is_terminal();
    let v2 = setup(&client, &mut s, spin).await?;
    if let Some(system) = s.session.take() {
        return session::run(&client, &s, system, v2, spin).await;
    }
    let stream = v2 && s.stream;
    answer(&client, &mut s.request, stream, s.json, spin)
        .await
        .map(drop)
}
