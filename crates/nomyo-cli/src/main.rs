//! `nomyo`: end-to-end encrypted LLM inference from the command line.
//!
//! Arguments are parsed once into typed settings; each subcommand then calls
//! the library crates. No protocol logic lives here.

mod cmd;
mod exit;
mod input;
mod spinner;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// End-to-end encrypted LLM inference (NOMYO protocol).
#[derive(Parser, Debug)]
#[command(name = "nomyo", version, about, propagate_version = true)]
struct Cli {
    /// More log output on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a client key pair (RSA-4096) in a key directory.
    Keygen(cmd::keygen::Args),
    /// Print the fingerprint of a key file or of a server's published keys.
    Fingerprint(cmd::fingerprint::Args),
    /// Run the secure endpoint (v1 and v2), in front of an upstream or the embedded model.
    Serve(cmd::serve::Args),
    /// One end-to-end encrypted chat completion.
    Chat(cmd::chat::Args),
    /// Serve a local OpenAI-compatible API that forwards every request end-to-end encrypted.
    Proxy(cmd::proxy::Args),
    /// Load the secure endpoint: requests/s, latency percentiles, errors by kind.
    Bench(cmd::bench::Args),
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in files and pipes (logs are often collected).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
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
    init_logging(cli.verbose);
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
        Command::Serve(a) => cmd::serve::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Proxy(a) => cmd::proxy::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nomyo: {e}");
            e.exit_code()
        }
    }
}
