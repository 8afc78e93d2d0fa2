//! `nomyo completions SHELL` and `nomyo man [COMMAND]`: generated from the
//! clap definitions, so they never disagree with `--help`.

use std::io::Write;

use clap::Args as ClapArgs;
use clap_complete::Shell;

use crate::exit::{CliError, CliResult, Code};

const COMPLETIONS_AFTER_HELP: &str = "\
Examples:
  nomyo completions bash > ~/.local/share/bash-completion/completions/nomyo
  nomyo completions zsh > \"${fpath[1]}/_nomyo\"
  nomyo completions fish > ~/.config/fish/completions/nomyo.fish

Exit codes: 0 ok; 2 usage (an unknown shell); 1 anything else (stdout closed).";

const MAN_AFTER_HELP: &str = "\
Examples:
  nomyo man > nomyo.1 && man ./nomyo.1
  nomyo man chat > nomyo-chat.1

Exit codes: 0 ok; 2 usage (an unknown command); 1 anything else (stdout closed).";

/// Print a shell completion script on stdout.
#[derive(ClapArgs, Debug)]
#[command(after_help = COMPLETIONS_AFTER_HELP)]
pub struct Args {
    /// The shell.
    #[arg(value_name = "SHELL", value_enum)]
    shell: Shell,
}

/// Print a man page (roff) on stdout.
#[derive(ClapArgs, Debug)]
#[command(after_help = MAN_AFTER_HELP)]
pub struct ManArgs {
    /// A command's own page (nomyo-COMMAND) instead of the page of nomyo.
    #[arg(value_name = "COMMAND")]
    command: Option<String>,
}

fn write_failed(e: std::io::Error) -> CliError {
    CliError::new(Code::Other, format!("cannot write to stdout: {e}"))
}

/// Writes the completion script of `cli` for the chosen shell.
pub fn run(args: Args, mut cli: clap::Command) -> CliResult {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "nomyo", &mut out);
    std::io::stdout().write_all(&out).map_err(write_failed)
}

/// Writes the man page of `cli`, or of one of its commands.
pub fn man(args: ManArgs, cli: clap::Command) -> CliResult {
    let page = match args.command.as_deref() {
        None => cli,
        Some(name) => {
            let names: Vec<String> = cli
                .get_subcommands()
                .map(|c| c.get_name().to_owned())
                .collect();
            let Some(sub) = cli.find_subcommand(name) else {
                return Err(CliError::usage(format!(
                    "no command `{name}`; the commands are {}",
                    names.join(", ")
                )));
            };
            let bin = format!("nomyo-{}", sub.get_name());
            sub.clone()
                .display_name(bin.clone())
                .bin_name(bin)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(write_failed)?;
    std::io::stdout().write_all(&out).map_err(write_failed)
}
