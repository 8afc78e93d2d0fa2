//! `nomyo chat`: one end-to-end encrypted chat completion (docs/CLI.md §8).
//!
//! Arguments are resolved once into [`Settings`]; [`run`] then drives the
//! client library: one answer, or with no prompt on a terminal a
//! conversation ([`session`]). No protocol logic lives here.

mod session;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args as ClapArgs, ValueEnum};
use nomyo_client::attest::AttestOptions;
use nomyo_client::{
    ChatMessage, ChatRequest, Client, Error as ClientError, KeySource, TrustDecision, Zeroize,
};
use nomyo_core::{SecretBuf, SecurityTier};
use zeroize::Zeroizing;

use super::connect::{ConnectArgs, Connection};
use crate::exit::{CliError, CliResult, Code};
use crate::input::optional_secret;
use crate::spinner::Spinner;

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

/// The roles a `--messages` file may use.
const FILE_ROLES: [&str; 3] = ["system", "user", "assistant"];

/// A `--messages` file: a JSON array of `{"role", "content"}` objects.
/// Errors name the problem and where it is, never the file's text.
fn read_messages(path: &Path) -> CliResult<Vec<ChatMessage>> {
    let shown = path.display();
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!("cannot read the --messages file {shown}: {e}"))
        })?);
    let shape = "a JSON array of messages, [{\"role\": \"user\", \"content\": \"...\"}]";
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "the --messages file {shown} is not valid JSON (line {}, column {}); it must be {shape}",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Array(items) = value else {
        return Err(CliError::usage(format!(
            "the --messages file {shown} is not an array; it must be {shape}"
        )));
    };
    if items.is_empty() {
        return Err(CliError::usage(format!(
            "the --messages file {shown} holds no messages"
        )));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(items.len()));
    for (i, item) in items.into_iter().enumerate() {
        let n = i + 1;
        let serde_json::Value::Object(mut m) = item else {
            return Err(CliError::usage(format!(
                "{shown}: message {n} is not an object; it must be {shape}"
            )));
        };
        let role = match m.get("role").and_then(serde_json::Value::as_str) {
            Some(r) if FILE_ROLES.contains(&r) => r.to_owned(),
            Some(_) => {
                return Err(CliError::usage(format!(
                    "{shown}: message {n} has a role other than system, user or assistant"
                )))
            }
            None => {
                return Err(CliError::usage(format!(
                    "{shown}: message {n} has no \"role\" string"
                )))
            }
        };
        let content = match m.get_mut("content") {
            Some(serde_json::Value::String(s)) => std::mem::take(s),
            _ => {
                return Err(CliError::usage(format!(
                    "{shown}: message {n} has no \"content\" string"
                )))
            }
        };
        out.push(ChatMessage::new(role, content));
    }
    tracing::debug!(messages = out.len(), "read the --messages file");
    Ok(std::mem::take(&mut *out))
}

/// The prompt from the argument, or from standard input for `-` or none.
fn read_prompt(arg: Option<String>) -> CliResult<Zeroizing<String>> {
    let mut text = match arg {
        Some(p) if p != "-" => Zeroizing::new(p),
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("nomyo: reading the prompt from standard input (end it with Ctrl-D)");
            }
            let mut s = Zeroizing::new(String::new());
            stdin.lock().read_to_string(&mut s).map_err(|e| {
                CliError::new(
                    Code::Other,
                    format!("cannot read the prompt from standard input: {e}"),
                )
            })?;
            s
        }
    };
    let trimmed = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(trimmed);
    if text.trim().is_empty() {
        return Err(CliError::usage("the prompt is empty"));
    }
    Ok(text)
}

/// Maps a client error to the documented exit codes.
pub(crate) fn client_error(e: ClientError) -> CliError {
    let code = if e.is_security() {
        Code::Security
    } else if e.is_auth() {
        Code::Auth
    } else if e.is_server_or_network() {
        Code::Server
    } else {
        match e {
            ClientError::Config(_)
            | ClientError::InsecureUrl { .. }
            | ClientError::InvalidInput(_) => Code::Usage,
            _ => Code::Other,
        }
    };
    let mut message = e.to_string();
    match &e {
        ClientError::ServerKeyChanged { origin, .. } => {
            message.push_str(&format!(
                "\nnomyo: to see the key the server presents now: nomyo fingerprint --server {origin}"
            ));
        }
        ClientError::InsecureUrl { .. } => message.push_str(" (--allow-http)"),
        // The server said why (the whole reason over v2, the kind over v1).
        ClientError::InvalidRequest(api) if api.code() == Some("context_length_exceeded") => {
            message.push_str(
                "\nnomyo: shorten the prompt (or the --system message); the server's model \
                 cannot read this much at once",
            );
        }
        ClientError::Connection { origin, .. }
            if origin.as_str() == super::connect::LOCAL_SERVER =>
        {
            message.push_str(
                "\nnomyo: is `nomyo serve` running? (it listens there by default; name another \
                 server with --base-url or $NOMYO_BASE_URL)",
            );
        }
        _ => {}
    }
    CliError::new(code, message)
}

pub fn run(args: Args) -> CliResult {
    let settings = resolve(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Code::Other, format!("cannot start the runtime: {e}")))?;
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

/// Everything before the first request: which protocol, the server's keys
/// (trusted on first use or checked), the v1 guards, and the model.
/// Returns whether the server is spoken to over v2.
async fn setup(client: &Client, s: &mut Settings, spin: bool) -> CliResult<bool> {
    let spinner = Spinner::start(
        "contacting the server",
        spin && s.protocol == Protocol::Auto,
    );
    let v2 = client.uses_v2().await;
    spinner.stop();
    let v2 = v2.map_err(client_error)?;
    if v2 {
        fetch_v2_keys(client, spin).await?;
        let spinner = Spinner::start("verifying the server's attestation", spin);
        let attested = client.ensure_attested().await;
        spinner.stop();
        attested.map_err(client_error)?;
    } else {
        client
            .refuse_v1_if_attestation_required()
            .map_err(client_error)?;
        if s.stream {
            return Err(CliError::usage(format!(
                "{} does not publish protocol v2 keys; {V1_CANNOT_STREAM}",
                client.origin()
            )));
        }
        prepare_v1(client, s, spin).await?;
    }
    if s.model.is_none() {
        s.request.model = pick_model(client).await?;
    }
    Ok(v2)
}

/// Protocol v1: the guards, the client key and the server's key.
async fn prepare_v1(client: &Client, s: &Settings, spin: bool) -> CliResult {
    // Protocol auto never sends high or maximum over v1: refused before
    // anything is fetched or recorded.
    client
        .check_v1_allowed(&nomyo_client::RequestOptions::default())
        .map_err(client_error)?;

    let label = match s.key_source {
        KeySource::Ephemeral => "generating a key and fetching the server key",
        _ => "loading the key and fetching the server key",
    };
    let spinner = Spinner::start(label, spin);
    let prepared = client.prepare().await;
    spinner.stop();
    let server_key = prepared.map_err(client_error)?;
    if let Some(dir) = &s.creating_key_in {
        eprintln!(
            "nomyo: created a new client key pair in {} (private key encrypted with your password)",
            dir.display()
        );
    }
    if let TrustDecision::FirstUse { file } = server_key.trust() {
        eprintln!(
            "nomyo: first contact with {}: trusting its key {} (recorded in {})",
            client.origin(),
            server_key.fingerprint(),
            file.display()
        );
    }
    warn_v1_once(client, spin)
}

/// On a terminal, once per server (recorded as `warned=v1` in the
/// known-servers file): what protocol v1 does not protect.
pub(crate) fn warn_v1_once(client: &Client, terminal: bool) -> CliResult {
    if terminal && client.take_v1_warning().map_err(client_error)? {
        eprintln!(
            "nomyo: warning: {} is answered over protocol v1, whose answers are only as safe as \
             the TLS path: a middleman who terminates TLS can swap X-Public-Key and read the \
             answer. Use --protocol v2 where the server offers it. (Said once for this server.)",
            client.origin()
        );
    }
    Ok(())
}

/// Prints a complete answer: its text, or with `--json` the whole JSON.
fn print_completion(completion: &nomyo_client::ChatCompletion, json: bool) -> CliResult {
    let mut out = std::io::stdout().lock();
    let written = if json {
        let json = completion.to_json(true);
        out.write_all(json.expose_secret())
            .and_then(|()| out.write_all(b"\n"))
    } else {
        match completion.text() {
            Some(text) => out.write_all(text.as_bytes()).and_then(|()| {
                if text.ends_with('\n') {
                    Ok(())
                } else {
                    out.write_all(b"\n")
                }
            }),
            None => {
                eprintln!("nomyo: the answer has no text (tool calls or empty); use --json to see all of it");
                Ok(())
            }
        }
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `nomyo chat ... | head -1`: the reader left; not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(
            Code::Other,
            format!("cannot write the answer: {e}"),
        )),
    }
}

/// Protocol v2: verify the server's key configs.
async fn fetch_v2_keys(client: &Client, spin: bool) -> CliResult {
    let spinner = Spinner::start("fetching the server's keys", spin);
    let keys = client.hpke_keys().await;
    spinner.stop();
    let keys = keys.map_err(client_error)?;
    if let TrustDecision::FirstUse { file } = keys.trust() {
        // A signed key list is trusted through the server's v1 key, which is
        // what was recorded; an unsigned one through the config itself.
        match keys.signed_by() {
            Some(v1) => eprintln!(
                "nomyo: first contact with {}: trusting its server key {v1}, which signs its v2 keys (recorded in {})",
                client.origin(),
                file.display()
            ),
            None => eprintln!(
                "nomyo: first contact with {} (v2): trusting its {} key {} (recorded in {})",
                client.origin(),
                keys.config().kem,
                keys.fingerprint(),
                file.display()
            ),
        }
    }
    Ok(())
}

/// An answer as printed: its text (in memory that is wiped) and why it ended.
struct Answer {
    /// The text printed (empty with `--json`).
    text: SecretBuf,
    /// `stop`, `length`, ...
    finish_reason: Option<String>,
}

/// Sends `request` (wiping it once sent), prints the answer (streamed as it
/// arrives when `stream`; the text, or with `json` the JSON), and in text
/// mode says on stderr when `max_tokens` cut it off.
async fn answer(
    client: &Client,
    request: &mut ChatRequest,
    stream: bool,
    json: bool,
    spin: bool,
) -> CliResult<Answer> {
    let max_tokens = request.max_tokens;
    let answer = if stream {
        stream_answer(client, request, json, spin).await?
    } else {
        let spinner = Spinner::start("waiting for the answer", spin);
        let completion = client.create(request).await;
        spinner.stop();
        request.zeroize();
        let completion = completion.map_err(client_error)?;
        print_completion(&completion, json)?;
        Answer {
            text: SecretBuf::from_slice(completion.text().unwrap_or_default().as_bytes()),
            finish_reason: completion
                .choices
                .first()
                .and_then(|c| c.finish_reason.clone()),
        }
    };
    if !json && answer.finish_reason.as_deref() == Some("length") {
        match max_tokens {
            Some(n) => eprintln!("[answer cut off at --max-tokens {n}; raise it for more]"),
            None => eprintln!(
                "[answer cut off at the server's token limit; give --max-tokens N for more]"
            ),
        }
    }
    Ok(answer)
}

/// Protocol v2, streamed: prints each chunk as it arrives.
async fn stream_answer(
    client: &Client,
    request: &mut ChatRequest,
    json: bool,
    spin: bool,
) -> CliResult<Answer> {
    let spinner = Spinner::start("waiting for the first token", spin);
    let stream = client.create_stream(request).await;
    spinner.stop();
    request.zeroize();
    let mut stream = stream.map_err(client_error)?;
    let mut answer = Answer {
        text: SecretBuf::with_capacity(4096),
        finish_reason: None,
    };
    let mut out = std::io::stdout().lock();
    let mut ends_with_newline = true;
    let write_err =
        |e: std::io::Error| CliError::new(Code::Other, format!("cannot write the answer: {e}"));
    while let Some(item) = futures::StreamExt::next(&mut stream).await {
        let chunk = match item {
            Ok(c) => c,
            Err(e) => {
                if !ends_with_newline {
                    let _ = out.write_all(b"\n");
                    let _ = out.flush();
                }
                return Err(client_error(e));
            }
        };
        if let Some(reason) = chunk.choices.first().and_then(|c| c.finish_reason.as_ref()) {
            answer.finish_reason = Some(reason.clone());
        }
        let written = if json {
            let line = Zeroizing::new(serde_json::to_string(&chunk).unwrap_or_default());
            out.write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
        } else {
            match chunk.text() {
                Some(t) if !t.is_empty() => {
                    ends_with_newline = t.ends_with('\n');
                    answer.text.extend_from_slice(t.as_bytes());
                    out.write_all(t.as_bytes())
                }
                _ => Ok(()),
            }
        };
        match written.and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(answer),
            Err(e) => return Err(write_err(e)),
        }
    }
    if !ends_with_newline && !json {
        match out.write_all(b"\n").and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(write_err(e)),
        }
    }
    Ok(answer)
}

/// Without -m: the server's only model.
pub(crate) async fn pick_model(client: &Client) -> CliResult<String> {
    let models = client.models().await.map_err(|e| {
        let mut err = client_error(e);
        if err.code == Code::Other {
            err.message = format!("no model given (-m MODEL or NOMYO_MODEL), and the server's model list is unavailable: {}", err.message);
        }
        err
    })?;
    match models.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => Err(CliError::usage(
            "no model given and the server lists none: use -m MODEL (or set NOMYO_MODEL)",
        )),
        several => {
            let names: Vec<&str> = several.iter().take(10).map(|m| m.id.as_str()).collect();
            Err(CliError::usage(format!(
                "the server offers several models; choose one with -m: {}{}",
                names.join(", "),
                if several.len() > 10 { ", ..." } else { "" }
            )))
        }
    }
}
