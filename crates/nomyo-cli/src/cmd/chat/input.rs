//! What `nomyo chat` reads: the prompt, or a `--messages` file.

use std::io::{IsTerminal, Read};
use std::path::Path;

use nomyo_client::ChatMessage;
use zeroize::Zeroizing;

use crate::exit::{CliError, CliResult, Code};

/// The roles a `--messages` file may use.
const FILE_ROLES: [&str; 3] = ["system", "user", "assistant"];

/// A `--messages` file: a JSON array of `{"role", "content"}` objects.
/// Errors name the problem and where it is, never the file's text.
pub(super) fn read_messages(path: &Path) -> CliResult<Vec<ChatMessage>> {
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
pub(super) fn read_prompt(arg: Option<String>) -> CliResult<Zeroizing<String>> {
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
