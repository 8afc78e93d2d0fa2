//! The upstream's server-sent events turned into chat chunks: the
//! incremental [`SseParser`] and the stream that yields each
//! `chat.completion.chunk` as it arrives and ends cleanly only after
//! `data: [DONE]`.

use futures::StreamExt;
use secrecy::zeroize::Zeroizing;
use serde_json::Value;

use super::{describe, map_send_error, MAX_RESPONSE_BYTES};
use crate::backend::{BackendError, ChunkStream};

/// Largest single server-sent event (one chunk is a few hundred bytes).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The chunks of an upstream's `text/event-stream` answer, as they arrive.
pub(super) fn chunks(resp: reqwest::Response) -> ChunkStream {
    let state = SseStream {
        body: Box::pin(resp.bytes_stream()),
        parser: SseParser::new(MAX_EVENT_BYTES),
        pending: std::collections::VecDeque::new(),
        received: 0,
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, SseStream::next))
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An upstream event stream being turned into chunks.
struct SseStream {
    body: ByteStream,
    parser: SseParser,
    pending: std::collections::VecDeque<Result<Value, BackendError>>,
    received: usize,
    /// `[DONE]` seen, or an error yielded: nothing more.
    finished: bool,
}

impl SseStream {
    async fn next(mut self) -> Option<(Result<Value, BackendError>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if item.is_err() {
                    self.finished = true;
                    self.pending.clear();
                }
                return Some((item, self));
            }
            if self.finished {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.received += bytes.len();
                    if self.received > MAX_RESPONSE_BYTES {
                        self.pending.push_back(Err(BackendError::Upstream(
                            "upstream stream exceeds the size limit".into(),
                        )));
                        continue;
                    }
                    let mut events = Vec::new();
                    if let Err(e) = self.parser.push(&bytes, &mut events) {
                        self.pending.push_back(Err(e));
                        continue;
                    }
                    for data in events {
                        if self.parser_done(&data) {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %describe(&e), "upstream stream failed mid-way");
                    self.pending.push_back(Err(map_send_error(e)));
                }
                None => {
                    // EOF. A final event without its blank line still counts.
                    if let Some(data) = self.parser.finish() {
                        self.parser_done(&data);
                    }
                    if !self.finished {
                        // Yield what came, then report the missing [DONE].
                        self.pending.push_back(Err(BackendError::Upstream(
                            "upstream stream ended before data: [DONE]".into(),
                        )));
                    }
                }
            }
        }
    }

    /// Queues one event's data; returns true once the stream is over (`[DONE]`
    /// or an error).
    fn parser_done(&mut self, data: &str) -> bool {
        if self.finished || self.pending.back().is_some_and(Result::is_err) {
            return true;
        }
        if data.trim() == "[DONE]" {
            self.finished = true;
            return true;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(v) if v.get("error").is_some() && v.get("choices").is_none() => {
                // Its message may quote the prompt: not logged.
                self.pending.push_back(Err(BackendError::Upstream(
                    "upstream reported an error mid-stream".into(),
                )));
                true
            }
            Ok(v) if v.is_object() => {
                self.pending.push_back(Ok(v));
                false
            }
            _ => {
                self.pending.push_back(Err(BackendError::Upstream(
                    "upstream stream event is not a JSON object".into(),
                )));
                true
            }
        }
    }
}

/// An incremental parser of `text/event-stream` (the WHATWG server-sent
/// events grammar, as far as chat streams use it): lines end in LF, CRLF or
/// CR; a blank line dispatches the event; `data:` lines are joined with LF;
/// comments (`:`) and the `event`, `id` and `retry` fields are ignored. Bytes
/// are buffered only up to the end of the current line; an event larger than
/// the limit is an error. Buffers are zeroed on drop (they hold plaintext).
pub struct SseParser {
    line: Zeroizing<Vec<u8>>,
    data: Zeroizing<Vec<u8>>,
    has_data: bool,
    /// The previous byte was a CR: an LF right after it ends nothing more.
    after_cr: bool,
    max_event: usize,
}

impl std::fmt::Debug for SseParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseParser").finish_non_exhaustive()
    }
}

impl SseParser {
    /// A parser refusing events over `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            line: Zeroizing::new(Vec::new()),
            data: Zeroizing::new(Vec::new()),
            has_data: false,
            after_cr: false,
            max_event,
        }
    }

    /// Feeds bytes; appends the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8], events: &mut Vec<String>) -> Result<(), BackendError> {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(events)?;
                }
                _ => {
                    if self.line.len() + self.data.len() >= self.max_event {
                        return Err(BackendError::Upstream(
                            "upstream stream event exceeds the size limit".into(),
                        ));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    /// At end of input: the data of an event left without its blank line.
    pub fn finish(&mut self) -> Option<String> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let _ = self.end_line(&mut events);
        }
        let _ = self.end_line(&mut events);
        events.pop()
    }

    fn end_line(&mut self, events: &mut Vec<String>) -> Result<(), BackendError> {
        if self.line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let data = std::mem::take(&mut *self.data);
                let text = String::from_utf8(data).map_err(|e| {
                    let mut bytes = e.into_bytes();
                    secrecy::zeroize::Zeroize::zeroize(&mut bytes);
                    BackendError::Upstream("upstream stream event is not UTF-8".into())
                })?;
                events.push(text);
            }
            return Ok(());
        }
        let line = std::mem::take(&mut *self.line);
        let line = Zeroizing::new(line);
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(0) => return Ok(()), // comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> (Vec<String>, Option<String>) {
        let mut p = SseParser::new(1024);
        let mut events = Vec::new();
        for part in input.chunks(piece) {
            p.push(part, &mut events).unwrap();
        }
        let rest = p.finish();
        (events, rest)
    }

    #[test]
    fn sse_events_whatever_the_split_and_line_endings() {
        let input = b": comment\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\nid: 7\ndata:{\"b\":\ndata: 2}\n \n\n\rdata: x\r\rdata: [DONE]\n\n";
        for piece in 1..input.len() {
            let (events, rest) = parse_in_pieces(input, piece);
            assert_eq!(
                events,
                vec!["{\"a\":1}", "{\"b\":\n2}", "x", "[DONE]"],
                "split every {piece} bytes"
            );
            assert_eq!(rest, None);
        }
        // CR LF split across two pushes is one line end, not two.
        let (events, _) = parse_in_pieces(b"data: a\r\ndata: b\r\n\r\n", 8);
        assert_eq!(events, vec!["a\nb"]);
        // An event without its blank line is returned by finish().
        let (events, rest) = parse_in_pieces(b"data: [DONE]", 3);
        assert!(events.is_empty());
        assert_eq!(rest.as_deref(), Some("[DONE]"));
    }

    #[test]
    fn sse_oversized_event_and_bad_utf8_are_errors() {
        let mut p = SseParser::new(16);
        let mut events = Vec::new();
        assert!(p.push(b"data: 0123456789abcdef\n", &mut events).is_err());
        let mut p = SseParser::new(16);
        assert!(p.push(b"data: \xff\xfe\n\n", &mut events).is_err());
        assert!(events.is_empty());
    }
}
