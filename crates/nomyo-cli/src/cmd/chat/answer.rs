//! Sending one request and printing its answer: whole, or streamed as it
//! arrives (protocol v2), as text or JSON.

use std::io::Write;

use nomyo_client::{ChatRequest, Client, Zeroize};
use nomyo_core::SecretBuf;
use zeroize::Zeroizing;

use super::client_error;
use crate::exit::{CliError, CliResult, Code};
use crate::spinner::Spinner;

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
    reader_stayed(written.and_then(|()| out.flush())).map(drop)
}

/// The outcome of writing (and flushing) part of the answer to stdout:
/// whether the reader is still there. A reader that left (`nomyo chat ... |
/// head -1`) is not an error; any other failure is.
fn reader_stayed(written: std::io::Result<()>) -> CliResult<bool> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::new(
            Code::Other,
            format!("cannot write the answer: {e}"),
        )),
    }
}

/// An answer as printed: its text (in memory that is wiped) and why it ended.
pub(super) struct Answer {
    /// The text printed (empty with `--json`).
    pub(super) text: SecretBuf,
    /// `stop`, `length`, ...
    pub(super) finish_reason: Option<String>,
}

/// Sends `request` (wiping it once sent), prints the answer (streamed as it
/// arrives when `stream`; the text, or with `json` the JSON), and in text
/// mode says on stderr when `max_tokens` cut it off.
pub(super) async fn answer(
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
        if !reader_stayed(written.and_then(|()| out.flush()))? {
            return Ok(answer);
        }
    }
    if !ends_with_newline && !json {
        reader_stayed(out.write_all(b"\n").and_then(|()| out.flush()))?;
    }
    Ok(answer)
}
