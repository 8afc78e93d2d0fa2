//! `nomyo known-servers list|remove`: what trust on first use has recorded,
//! and forgetting one server (like `ssh-keygen -R`). The client library owns
//! the file's format and lock; this only presents it.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use nomyo_client::trust;

use crate::exit::{CliError, CliResult, Code};

const FILE_HELP: &str = "\
The file is --known-servers FILE, else $XDG_CONFIG_HOME/nomyo/known_servers,
else ~/.config/nomyo/known_servers (docs/CLI.md §4.2).

Examples:
  nomyo known-servers list
  nomyo known-servers remove https://api.example.org

Exit codes: 0 ok; 1 not on record, or a file that cannot be read, written or
parsed; 2 usage.";

const LIST_AFTER_HELP: &str = "\
Prints one line per server: its origin and what is recorded (v1=sha256:KEY,
v2=signed|unsigned, v2-key=KEM:sha256:KEY, warned=v1).
The file is --known-servers FILE, else $XDG_CONFIG_HOME/nomyo/known_servers,
else ~/.config/nomyo/known_servers (docs/CLI.md §4.2).

Examples:
  nomyo known-servers list
  nomyo known-servers list --known-servers ./known_servers

Exit codes: 0 ok (also for a missing file: nothing on record); 1 a file that
cannot be read or is malformed.";

const REMOVE_AFTER_HELP: &str = "\
Forget a server after checking its new key with its operator: the next
contact records whatever key it presents (trust on first use again). ORIGIN
is scheme://host[:port]; a URL with a path is reduced to its origin.
The line is removed under the same lock `nomyo chat` takes to record a server.
The file is --known-servers FILE, else $XDG_CONFIG_HOME/nomyo/known_servers,
else ~/.config/nomyo/known_servers (docs/CLI.md §4.2).

Examples:
  nomyo fingerprint --server https://api.example.org   # the key it presents now
  nomyo known-servers remove https://api.example.org

Exit codes: 0 removed; 1 not on record, or a file that cannot be read,
written or parsed; 2 usage.";

/// The `known-servers` commands.
#[derive(Subcommand, Debug)]
#[command(after_help = FILE_HELP)]
pub enum Command {
    /// List the servers on record and what is recorded for each.
    #[command(after_help = LIST_AFTER_HELP)]
    List(FileArg),
    /// Forget one server (its key, its protocols): the next contact is a first use.
    #[command(after_help = REMOVE_AFTER_HELP)]
    Remove(RemoveArgs),
}

/// Which known-servers file.
#[derive(ClapArgs, Debug)]
pub struct FileArg {
    /// The known-servers file (default $XDG_CONFIG_HOME/nomyo/known_servers,
    /// else ~/.config/nomyo/known_servers).
    #[arg(long, value_name = "FILE")]
    known_servers: Option<PathBuf>,
}

/// `known-servers remove`.
#[derive(ClapArgs, Debug)]
pub struct RemoveArgs {
    /// The server to forget: scheme://host or scheme://host:port, as `list` shows it.
    #[arg(value_name = "ORIGIN")]
    origin: String,
    #[command(flatten)]
    file: FileArg,
}

impl FileArg {
    fn path(&self) -> CliResult<PathBuf> {
        match &self.known_servers {
            Some(p) => Ok(p.clone()),
            None => trust::default_path().ok_or_else(|| {
                CliError::usage(
                    "cannot locate the known-servers file: neither XDG_CONFIG_HOME nor HOME is set; give --known-servers FILE",
                )
            }),
        }
    }
}

fn client_error(e: nomyo_client::Error) -> CliError {
    CliError::new(Code::Other, e.to_string())
}

/// Runs `known-servers list` or `known-servers remove`.
pub fn run(command: Command) -> CliResult {
    match command {
        Command::List(f) => {
            let path = f.path()?;
            for k in trust::list_known_servers(&path).map_err(client_error)? {
                println!("{} {}", k.origin, k.fields);
            }
            Ok(())
        }
        Command::Remove(a) => {
            let path = a.file.path()?;
            let origin = trust::origin_of(&a.origin);
            if trust::remove_known_server(&path, &origin).map_err(client_error)? {
                println!("removed {origin} from {}", path.display());
                Ok(())
            } else {
                Err(CliError::new(
                    Code::Other,
                    format!(
                        "{origin} is not on record in {} (`nomyo known-servers list` shows what is)",
                        path.display()
                    ),
                ))
            }
        }
    }
}
