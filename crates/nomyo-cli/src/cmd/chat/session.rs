//! `nomyo chat` with no prompt on a terminal: a conversation (docs/CLI.md §8).
//!
//! Each line typed after the `>>> ` marker is sent with the conversation so
//! far; the answer is streamed as it arrives over protocol v2 and printed
//! whole over v1. The history lives in this process only, in [`SecretBuf`]s
//! (locked where possible, zeroed on growth, on `/clear` and on exit).
//! Ctrl-C stops an answer (the conversation stays as it was before that
//! message), and at the marker ends the conversation as `/exit` does, so
//! that the history is wiped then too.

use std::io::{BufRead, Write};

use nomyo_client::{ChatMessage, ChatRequest, Client};
use nomyo_core::SecretBuf;
use zeroize::{Zeroize, Zeroizing};

use super::{answer, Settings};
use crate::exit::{CliError, CliResult, Code};

/// Printed (on stderr) before each message is read.
pub(super) const MARKER: &str = ">>> ";

const HELP: &str = "\
  /system TEXT   set the system message (/system alone removes it)
  /clear         forget the conversation (the system message stays)
  /exit, /bye    end the conversation (as does Ctrl-D)
  /help          this list";

/// One message of the history.
struct Turn {
    role: &'static str,
    text: SecretBuf,
}

impl Turn {
    fn new(role: &'static str, text: &str) -> Self {
        Self {
            role,
            text: SecretBuf::from_slice(text.as_bytes()),
        }
    }
    fn message(&self) -> ChatMessage {
        // The history holds only text read as UTF-8 or decrypted as a string.
        let text = std::str::from_utf8(self.text.expose_secret()).unwrap_or_default();
        ChatMessage::new(self.role, text)
    }
}

/// What a line starting with `/` asks for.
enum Command<'a> {
    System(Option<&'a str>),
    Clear,
    Exit,
    Help,
    Unknown,
}

fn command(line: &str) -> Command<'_> {
    let (name, rest) = match line.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (line, ""),
    };
    match name {
        "/system" => Command::System(Some(rest).filter(|r| !r.is_empty())),
        "/clear" => Command::Clear,
        "/exit" | "/bye" | "/quit" => Command::Exit,
        "/help" | "/?" => Command::Help,
        _ => Command::Unknown,
    }
}

/// Runs the conversation until `/exit` or end of input.
pub(super) async fn run(
    client: &Client,
    s: &Settings,
    system: Option<Zeroizing<String>>,
    v2: bool,
    spin: bool,
) -> CliResult {
    // One listener for the whole conversation, made before the first
    // marker: a Ctrl-C that arrives while no select is waiting (between
    // printing the marker and reading) is kept for the next wait, not lost.
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| CliError::new(Code::Other, format!("cannot listen for Ctrl-C: {e}")))?;
    let mut system = system.map(|t| Turn::new("system", &t));
    let mut history: Vec<Turn> = Vec::new();
    eprintln!(
        "nomyo: a conversation with {} at {}{}; /help for commands, /exit or Ctrl-D to end it",
        s.request.model,
        client.origin(),
        if v2 {
            ""
        } else {
            " (protocol v1: each answer arrives whole)"
        }
    );
    // Room for long lines up front, so that reading rarely reallocates (a
    // reallocation would leave the old copy unwiped).
    let mut line = Zeroizing::new(String::with_capacity(64 * 1024));
    loop {
        eprint!("{MARKER}");
        let _ = std::io::stderr().flush();
        line.zeroize();
        // Read on a blocking thread, so that Ctrl-C can end the wait.
        let reading = tokio::task::spawn_blocking(move || {
            let read = std::io::stdin().lock().read_line(&mut line);
            (line, read)
        });
        let read;
        (line, read) = tokio::select! {
            done = reading => done.map_err(|e| {
                CliError::new(Code::Other, format!("cannot read from the terminal: {e}"))
            })?,
            _ = interrupt.recv() => {
                eprintln!();
                break;
            }
        };
        let read = read.map_err(|e| {
            CliError::new(Code::Other, format!("cannot read from the terminal: {e}"))
        })?;
        if read == 0 {
            eprintln!();
            break;
        }
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if input.starts_with('/') {
            match command(input) {
                Command::System(text) => {
                    system = text.map(|t| Turn::new("system", t));
                    eprintln!(
                        "{}",
                        if system.is_some() {
                            "(system message set)"
                        } else {
                            "(system message removed)"
                        }
                    );
                }
                Command::Clear => {
                    history.clear();
                    eprintln!("(conversation cleared)");
                }
                Command::Exit => break,
                Command::Help => eprintln!("{HELP}"),
                Command::Unknown => eprintln!("unknown command; /help lists them"),
            }
            continue;
        }
        history.push(Turn::new("user", input));
        line.zeroize();

        let mut request = ChatRequest {
            messages: system.iter().chain(&history).map(Turn::message).collect(),
            ..s.request.clone()
        };
        tracing::debug!(messages = request.messages.len(), "conversation turn");
        let answered = tokio::select! {
            a = answer(client, &mut request, v2, false, spin) => a,
            _ = interrupt.recv() => {
                request.zeroize();
                history.pop();
                println!();
                eprintln!("(answer stopped; that message is not part of the conversation)");
                continue;
            }
        };
        match answered {
            Ok(a) => history.push(Turn {
                role: "assistant",
                text: a.text,
            }),
            // A changed key, a failed decryption or a refused login ends
            // the conversation; anything else leaves it as it was.
            Err(e) if matches!(e.code, Code::Security | Code::Auth | Code::Usage) => return Err(e),
            Err(e) => {
                request.zeroize();
                history.pop();
                eprintln!("nomyo: {e}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert!(matches!(
            command("/system  be brief "),
            Command::System(Some("be brief"))
        ));
        assert!(matches!(command("/system"), Command::System(None)));
        assert!(matches!(command("/clear"), Command::Clear));
        assert!(matches!(command("/exit"), Command::Exit));
        assert!(matches!(command("/bye"), Command::Exit));
        assert!(matches!(command("/nope"), Command::Unknown));
    }
}
