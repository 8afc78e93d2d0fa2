//! Turning generated token bytes into answer text: UTF-8 assembled across token
//! boundaries, stop sequences cut out, and streaming deltas that never show the
//! start of a stop sequence that might still complete.

use zeroize::Zeroizing;

/// Accumulates one choice's output.
pub struct TextAssembler {
    /// Bytes of an incomplete UTF-8 character split across tokens.
    pending: Vec<u8>,
    /// All text decoded so far (cut at a stop sequence once one is found).
    text: Zeroizing<String>,
    /// How much of `text` has been handed out as deltas.
    emitted: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl TextAssembler {
    /// A new assembler for these stop sequences (non-empty strings).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            pending: Vec::new(),
            text: Zeroizing::new(String::new()),
            emitted: 0,
            stops,
            stopped: false,
        }
    }

    /// Adds one token's bytes. Returns true when a stop sequence has appeared
    /// (generation should end; the text is cut before it).
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.stopped {
            return true;
        }
        self.pending.extend_from_slice(bytes);
        self.decode_pending(false);
        self.check_stops()
    }

    /// Decodes as much of `pending` as forms complete characters; invalid
    /// sequences become U+FFFD. With `flush`, an incomplete tail does too.
    fn decode_pending(&mut self, flush: bool) {
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.text.push_str(s);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by construction.
                    self.text
                        .push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // Incomplete character at the end: wait for more bytes.
                            self.pending.drain(..valid);
                            if flush && !self.pending.is_empty() {
                                self.text.push(char::REPLACEMENT_CHARACTER);
                                self.pending.clear();
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    fn check_stops(&mut self) -> bool {
        // A stop sequence cannot start before `emitted`: text is only handed out
        // once no stop sequence can begin in it (see `safe_end`).
        let from = self.emitted;
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            self.pending.clear();
            self.stopped = true;
        }
        self.stopped
    }

    /// The end of the text that can be shown: before any suffix that is the
    /// beginning of a stop sequence.
    fn safe_end(&self) -> usize {
        if self.stopped {
            return self.text.len();
        }
        let mut end = self.text.len();
        for stop in &self.stops {
            // The longest proper prefix of `stop` that ends the text.
            for (i, _) in stop.char_indices().skip(1) {
                let prefix = &stop[..i];
                if self.text.ends_with(prefix) {
                    end = end.min(self.text.len() - prefix.len());
                }
            }
        }
        end.max(self.emitted)
    }

    /// Text that can be sent now and has not been yet (for streaming).
    pub fn take_delta(&mut self) -> Option<String> {
        let end = self.safe_end();
        if end > self.emitted {
            let delta = self.text[self.emitted..end].to_owned();
            self.emitted = end;
            Some(delta)
        } else {
            None
        }
    }

    /// Ends the output (end of generation or length limit): any held-back text
    /// is released. Returns the remaining delta, if any.
    pub fn finish(&mut self) -> Option<String> {
        self.decode_pending(true);
        self.check_stops();
        let end = self.text.len();
        if end > self.emitted {
            let delta = self.text[self.emitted..].to_owned();
            self.emitted = end;
            Some(delta)
        } else {
            None
        }
    }

    /// The whole answer so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&[u8]], stops: &[&str]) -> (String, Vec<String>, bool) {
        let mut a = TextAssembler::new(stops.iter().map(|s| (*s).to_owned()).collect());
        let mut deltas = Vec::new();
        let mut stopped = false;
        for p in pieces {
            stopped = a.push(p);
            if let Some(d) = a.take_delta() {
                deltas.push(d);
            }
            if stopped {
                break;
            }
        }
        if let Some(d) = a.finish() {
            deltas.push(d);
        }
        (a.text().to_owned(), deltas, stopped)
    }

    #[test]
    fn plain_text_streams_token_by_token() {
        let (text, deltas, stopped) = run(&[b"Par", b"is", b"."], &[]);
        assert_eq!(text, "Paris.");
        assert_eq!(deltas, vec!["Par", "is", "."]);
        assert!(!stopped);
    }

    #[test]
    fn utf8_split_across_tokens() {
        let euro = "€".as_bytes(); // 3 bytes
        let (text, deltas, _) = run(&[b"5", &euro[..1], &euro[1..2], &euro[2..], b"!"], &[]);
        assert_eq!(text, "5€!");
        assert_eq!(deltas.concat(), "5€!");
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')));
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (text, _, _) = run(&[b"a", &[0xff], b"b", &[0xe2, 0x82]], &[]);
        assert_eq!(text, "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn stop_sequence_is_cut_and_never_streamed() {
        let (text, deltas, stopped) = run(&[b"Hello", b" EN", b"D tail"], &["END"]);
        assert!(stopped);
        assert_eq!(text, "Hello ");
        assert_eq!(deltas.concat(), "Hello ");
        assert!(deltas.iter().all(|d| !d.contains("EN")));
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_complete() {
        let (text, deltas, stopped) = run(&[b"a E", b"Nx", b"y"], &["END"]);
        assert!(!stopped);
        assert_eq!(text, "a ENxy");
        assert_eq!(deltas.concat(), "a ENxy");
        assert_eq!(deltas[0], "a ");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (text, _, stopped) = run(&[b"one two three"], &["three", "two"]);
        assert!(stopped);
        assert_eq!(text, "one ");
    }

    #[test]
    fn stop_inside_one_token_and_at_start() {
        let (text, deltas, stopped) = run(&[b"\n\nrest"], &["\n\n"]);
        assert!(stopped);
        assert_eq!(text, "");
        assert!(deltas.is_empty());
    }

    #[test]
    fn held_prefix_released_at_finish() {
        let (text, deltas, stopped) = run(&[b"abc E"], &["END"]);
        assert!(!stopped);
        assert_eq!(text, "abc E");
        assert_eq!(deltas, vec!["abc ", "E"]);
    }
}
