//! `nomyo`: end-to-end encrypted LLM inference from the command line.
//!
//! Arguments are parsed once into typed settings; each subcommand then calls
//! the library crates. No protocol logic lives here.

mod cmd;
mod exit;
mod input;
mod spinner;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

// Every allocation of the process is wiped before it is freed (prompts and
// answers pass through many buffers after decryption; SECURITY.md, "Memory").
#[global_allocator]
static ALLOC: nomyo_core::wipe_alloc::WipeOnFree = nomyo_core::wipe_alloc::WipeOnFree;

// The help names only the commands this build has (features `serve`,
// `proxy`; docs/CLI.md, "Builds").
#[cfg(all(feature = "serve", feature = "proxy"))]
const ABOUT: &str = "End-to-end encrypted LLM inference: serve a model, chat with it, \
put an OpenAI SDK behind it (protocols v1 and v2)";
#[cfg(all(feature = "serve", not(feature = "proxy")))]
const ABOUT: &str = "End-to-end encrypted LLM inference: serve a model, chat with it \
(protocols v1 and v2)";
#[cfg(all(not(feature = "serve"), feature = "proxy"))]
const ABOUT: &str = "End-to-end encrypted LLM inference: chat with a NOMYO server, \
put an OpenAI SDK behind it (protocols v1 and v2)";
#[cfg(not(any(feature = "serve", feature = "proxy")))]
const ABOUT: &str = "End-to-end encrypted LLM inference: chat with a NOMYO server \
(protocols v1 and v2)";

/// The examples of `nomyo --help`, each line with the feature it needs
/// (`!serve`: only in a build without it).
const EXAMPLES: &[(Option<&str>, &str)] = &[
    (
        Some("serve"),
        "nomyo models pull                    # the default model, where `serve` looks for it",
    ),
    (
        Some("serve"),
        "nomyo serve                          # the embedded model on http://127.0.0.1:12434",
    ),
    (
        Some("serve"),
        "nomyo chat 'Why is the sky blue?'    # one encrypted chat with that server",
    ),
    (
        Some("!serve"),
        "nomyo chat 'Why is the sky blue?'    # one encrypted chat with http://127.0.0.1:12434",
    ),
    (
        Some("!serve"),
        "nomyo chat --base-url https://api.example.org 'Hello'",
    ),
    (
        Some("proxy"),
        "nomyo proxy                          # an OpenAI-compatible API for SDKs, sealed to the server",
    ),
    (None, "nomyo fingerprint --server https://api.example.org"),
    (None, "nomyo known-servers list"),
    (
        None,
        "nomyo completions bash > ~/.local/share/bash-completion/completions/nomyo",
    ),
];

const EXIT_CODES: &str = "\
Exit codes: 0 ok; 1 anything else; 2 usage; 3 refused by the server (401/403);
4 security failure; 5 server or network failure after retries.
`nomyo COMMAND --help` shows each command's flags, examples and exit codes.";

/// Whether this build has `feature` (of the ones the help speaks of), or
/// lacks it (`!feature`).
fn has_feature(feature: &str) -> bool {
    if let Some(lacked) = feature.strip_prefix('!') {
        return !has_feature(lacked);
    }
    let built = [
        ("serve", cfg!(feature = "serve")),
        ("proxy", cfg!(feature = "proxy")),
    ];
    built.contains(&(feature, true))
}

/// The text after `nomyo --help`'s options: examples of this build's
/// commands, then the exit codes.
fn after_help() -> String {
    let mut text = String::from("Examples:\n");
    for (feature, line) in EXAMPLES {
        if feature.is_none_or(has_feature) {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push('\n');
    text.push_str(EXIT_CODES);
    text
}

/// The `nomyo` command line (docs/CLI.md).
#[derive(Parser, Debug)]
#[command(
    name = "nomyo",
    version,
    about = ABOUT,
    after_help = after_help(),
    propagate_version = true
)]
pub(crate) struct Cli {
    /// More log output on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log lines on stderr as text, or json (one object per line).
    #[arg(
        long,
        value_name = "text|json",
        value_enum,
        default_value_t = LogFormat::Text,
        hide_possible_values = true,
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    // Its line names --server only in a build that has it.
    #[command(about = cmd::keygen::ABOUT)]
    Keygen(cmd::keygen::Args),
    /// Print the fingerprint of a key file, or of the keys a server publishes (--server URL).
    Fingerprint(cmd::fingerprint::Args),
    /// Run the secure endpoint (v1 and v2), in front of an upstream or the embedded model.
    #[cfg(feature = "serve")]
    Serve(cmd::serve::Args),
    /// One end-to-end encrypted chat completion.
    Chat(cmd::chat::Args),
    /// Serve a local OpenAI-compatible API that forwards every request end-to-end encrypted.
    #[cfg(feature = "proxy")]
    Proxy(cmd::proxy::Args),
    /// Verify a server's attestation (TPM, AMD SEV-SNP, Intel TDX) bound to its keys, or evidence in files (`attest verify`).
    Attest(cmd::attest::Args),
    /// Load the secure endpoint: requests/s, latency percentiles, tokens/s, errors by kind.
    Bench(cmd::bench::Args),
    /// List or forget the servers recorded in the known-servers file (trust on first use).
    #[command(name = "known-servers", subcommand)]
    KnownServers(cmd::known_servers::Command),
    // Its line names `serve` only in a build that has it.
    #[command(subcommand, about = MODELS_ABOUT)]
    Models(cmd::models::Command),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Print the man page (roff) of nomyo and its commands.
    Man(cmd::completions::ManArgs),
}

/// `nomyo models`' line in `nomyo --help`.
#[cfg(feature = "serve")]
const MODELS_ABOUT: &str =
    "Download the default model (`models pull`) or list the models `serve` finds";
#[cfg(not(feature = "serve"))]
const MODELS_ABOUT: &str =
    "Download the default model (`models pull`) or list the model files on this machine";

/// Value parser of the flags that take a duration in whole seconds: the
/// syntax of every duration (`30s`, `10m`, `24h`, `7d`; a bare number is
/// seconds), refused when it is not a whole number of seconds.
pub(crate) fn parse_secs(text: &str) -> Result<u64, String> {
    let d = nomyo_core::duration::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 30s, 10m, 24h, 7d)"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}`: this flag takes whole seconds (e.g. 1s, 30s, 5m)"
        ));
    }
    Ok(d.as_secs())
}

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    // One human-readable line per event.
    Text,
    // One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// The filter without `RUST_LOG`: warnings, plus the server's access lines
/// and start line (info); `-v` debug, `-vv` trace (llama.cpp's own lines
/// only then).
fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn,nomyo::access=info,nomyo::serve=info",
        1 => "debug",
        _ => "trace",
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(verbose)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match format {
        LogFormat::Text => builder
            // No colour codes in files and pipes (logs are often collected).
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // `span`: the innermost span, e.g. the request id.
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

impl Command {
    /// Whether the command handles prompts or answers in clear (it seals,
    /// opens or serves them), so that what C and C++ code frees must be
    /// wiped too.
    fn handles_content(&self) -> bool {
        match self {
            #[cfg(feature = "serve")]
            Command::Serve(_) => true,
            #[cfg(feature = "proxy")]
            Command::Proxy(_) => true,
            Command::Chat(_) | Command::Bench(_) => true,
            Command::Attest(_)
            | Command::Keygen(_)
            | Command::Fingerprint(_)
            | Command::KnownServers(_)
            | Command::Models(_)
            | Command::Completions(_)
            | Command::Man(_) => false,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    // glibc wipes what C and C++ code frees, for the commands that handle
    // content: re-executes once with its settings, before any thread or
    // secret exists (parsing the arguments made neither).
    if cli.command.handles_content() {
        nomyo_core::wipe_alloc::wipe_c_heap();
        // Measure it now, while this is the only thread: the probe frees a
        // chunk and reads it back, which another thread's allocation could
        // take first.
        let _ = nomyo_core::wipe_alloc::freed_memory_wiped();
    }
    init_logging(cli.verbose, cli.log_format);
    // Core dumps off and the process undumpable before any secret exists.
    let hardening = nomyo_core::secure_memory::harden_process();
    tracing::debug!(
        core_dump_prevention = hardening.protection.core_dump_prevention,
        memory_locking = hardening.protection.memory_locking,
        memlock_limit = ?hardening.memlock_limit,
        "process hardened"
    );
    let result = match cli.command {
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Fingerprint(a) => cmd::fingerprint::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => cmd::serve::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        #[cfg(feature = "proxy")]
        Command::Proxy(a) => cmd::proxy::run(a),
        Command::Attest(a) => cmd::attest::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::KnownServers(c) => cmd::known_servers::run(c),
        Command::Models(c) => cmd::models::run(c),
        Command::Completions(a) => cmd::completions::run(a, Cli::command()),
        Command::Man(a) => cmd::completions::man(a, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nomyo: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{after_help, parse_secs, Cli};
    use clap::CommandFactory;

    #[test]
    fn the_help_names_only_the_commands_of_this_build() {
        let cli = Cli::command();
        let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
        for (command, built) in [
            ("serve", cfg!(feature = "serve")),
            ("proxy", cfg!(feature = "proxy")),
        ] {
            assert_eq!(names.contains(&command), built, "{command}: {names:?}");
            let example = format!("  nomyo {command} ");
            assert_eq!(after_help().contains(&example), built, "{command}");
        }
        for command in [
            "keygen",
            "fingerprint",
            "chat",
            "bench",
            "known-servers",
            "models",
        ] {
            assert!(names.contains(&command), "{command}: {names:?}");
        }
        assert!(after_help().contains("  nomyo chat 'Why is the sky blue?'"));
        assert!(after_help().ends_with("flags, examples and exit codes."));
    }

    #[test]
    fn duration_flags_take_the_common_syntax_in_whole_seconds() {
        assert_eq!(parse_secs("10m"), Ok(600));
        assert_eq!(parse_secs("24h"), Ok(86_400));
        assert_eq!(parse_secs("30s"), Ok(30));
        assert_eq!(parse_secs("7"), Ok(7));
        assert_eq!(parse_secs("2000ms"), Ok(2));
        assert!(parse_secs("500ms").unwrap_err().contains("whole seconds"));
        assert!(parse_secs("soon").unwrap_err().contains("not a duration"));
        assert!(parse_secs("-5s").is_err());
    }
}
