//! A streamed v2 completion: the sealed response frames decrypted as they
//! arrive, parsed into `chat.completion.chunk` events, and the stream ended
//! only by a decrypted `data: [DONE]`.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::response::ResponseOpener;
use nomyo_core::SecurityTier;
use zeroize::Zeroizing;

use crate::attest::Required;
use crate::error::{Error, Result};
use crate::request::{serialise, RequestOptions};
use crate::server_keys::ServerKeys;
use crate::transport::{describe_network_error, Transport};
use crate::types::ChatRequest;

use super::{v2_err, ChatCompletionChunk, ChunkStream, MAX_EVENT_BYTES, MAX_FRAME, V2};

impl V2 {
    /// A streamed v2 chat completion: `"stream": true` is set, the request
    /// sealed and sent, and each sealed response frame decrypted as it
    /// arrives. The stream is complete only when `data: [DONE]` was
    /// decrypted; a body that ends before it, or any frame that fails,
    /// yields an error (and then nothing more). With an attestation
    /// requirement, the quote in the last event is checked before it ends.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn stream(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        attestation: Option<&Required>,
        request: &ChatRequest,
        options: &RequestOptions,
        requested_tier: Option<SecurityTier>,
    ) -> Result<ChunkStream> {
        let mut r = request.clone();
        r.stream = Some(true);
        r.extra.remove("stream");
        let plaintext = serialise(&r)?;
        zeroize::Zeroize::zeroize(&mut r);
        let (resp, opener, _kem, payload_id) = self.exchange(t, keys, &plaintext, options).await?;
        let quote_unchecked = attestation
            .map(|required| required.answer_check(t, keys, &payload_id))
            .transpose()?;
        drop(plaintext);
        let state = StreamState {
            body: resp.bytes_stream().boxed(),
            frames: FrameDecoder::new(MAX_FRAME),
            opener,
            text: Zeroizing::new(Vec::new()),
            ready: VecDeque::new(),
            done: false,
            finished: false,
            tier_unchecked: requested_tier.filter(|t| *t > SecurityTier::Standard),
            quote_unchecked,
        };
        Ok(futures::stream::unfold(state, next_chunk).boxed())
    }
}

struct StreamState {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    frames: FrameDecoder,
    opener: ResponseOpener,
    /// Decrypted bytes not yet parsed into events.
    text: Zeroizing<Vec<u8>>,
    ready: VecDeque<Result<ChatCompletionChunk>>,
    /// `data: [DONE]` was decrypted.
    done: bool,
    /// Nothing more is yielded.
    finished: bool,
    /// A tier above `standard` was requested and the first chunk's sealed
    /// `_metadata` has not been checked against it yet.
    tier_unchecked: Option<SecurityTier>,
    /// Attestation is required and the first chunk's quote has not been
    /// checked yet.
    quote_unchecked: Option<crate::attest::AnswerCheck>,
}

impl StreamState {
    fn fail(&mut self, e: Error) {
        self.ready.push_back(Err(e));
    }

    /// Decrypts the frames buffered so far and parses complete events.
    fn drain_frames(&mut self) -> Result<()> {
        while let Some(frame) = self.frames.next_frame().map_err(v2_err)? {
            let p = self.opener.open_chunk(&frame).map_err(v2_err)?;
            if self.done {
                return Err(Error::InvalidResponse(
                    "the stream continued after data: [DONE]".into(),
                ));
            }
            self.text.extend_from_slice(p.expose_secret());
            self.parse_events()?;
        }
        if self.text.len() > MAX_EVENT_BYTES {
            return Err(Error::InvalidResponse(
                "a stream event is larger than the limit".into(),
            ));
        }
        Ok(())
    }

    fn parse_events(&mut self) -> Result<()> {
        while let Some(end) = self.text.windows(2).position(|w| w == b"\n\n") {
            let event: Zeroizing<Vec<u8>> = Zeroizing::new(self.text[..end].to_vec());
            self.text.drain(..end + 2);
            let event = std::str::from_utf8(&event)
                .map_err(|_| Error::InvalidResponse("a stream event is not UTF-8".into()))?;
            for line in event.lines() {
                let line = line.trim_end_matches('\r');
                let Some(data) = line.strip_prefix("data:") else {
                    continue; // comments, event names, ids
                };
                let data = data.trim_start();
                if self.done {
                    return Err(Error::InvalidResponse(
                        "the stream continued after data: [DONE]".into(),
                    ));
                }
                if data == "[DONE]" {
                    self.done = true;
                    continue;
                }
                let chunk: ChatCompletionChunk = serde_json::from_str(data).map_err(|e| {
                    Error::InvalidResponse(format!(
                        "a decrypted stream event is not a chat.completion.chunk (JSON error at column {})",
                        e.column()
                    ))
                })?;
                if chunk.object != "chat.completion.chunk" {
                    return Err(Error::InvalidResponse(
                        "a decrypted stream event is not a chat.completion.chunk".into(),
                    ));
                }
                if let Some(requested) = self.tier_unchecked.take() {
                    let served = chunk
                        .metadata
                        .as_ref()
                        .and_then(|m| m.get("security_tier"))
                        .and_then(|t| t.as_str());
                    crate::request::check_served_tier(Some(requested), served)?;
                }
                if let Some(check) = self.quote_unchecked.take() {
                    let block =
                        |name: &str| chunk.metadata.as_ref().and_then(|m| m.get(name)).cloned();
                    let tpm: Option<nomyo_core::chat::TpmAttestation> =
                        block("tpm_attestation").and_then(|b| serde_json::from_value(b).ok());
                    let cvm: Option<nomyo_core::chat::CvmAttestation> =
                        block("attestation").and_then(|b| serde_json::from_value(b).ok());
                    check.check_stream(tpm.as_ref(), cvm.as_ref())?;
                }
                self.ready.push_back(Ok(chunk));
            }
        }
        Ok(())
    }
}

async fn next_chunk(mut s: StreamState) -> Option<(Result<ChatCompletionChunk>, StreamState)> {
    loop {
        if let Some(item) = s.ready.pop_front() {
            if item.is_err() {
                s.ready.clear();
                s.finished = true;
            }
            return Some((item, s));
        }
        if s.finished {
            return None;
        }
        match s.body.next().await {
            Some(Ok(bytes)) => {
                s.frames.push(&bytes);
                if let Err(e) = s.drain_frames() {
                    s.fail(e);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %describe_network_error(&e), "v2 stream interrupted");
                s.fail(Error::InvalidResponse(
                    "the encrypted stream was interrupted before data: [DONE]".into(),
                ));
            }
            None => {
                if let Err(e) = s.frames.finish() {
                    s.fail(v2_err(e));
                } else if !s.done {
                    s.fail(Error::InvalidResponse(
                        "the encrypted stream ended before data: [DONE]: the answer is incomplete"
                            .into(),
                    ));
                } else if !s.text.iter().all(u8::is_ascii_whitespace) {
                    s.fail(Error::InvalidResponse(
                        "the stream ended inside an event".into(),
                    ));
                }
                if s.ready.is_empty() {
                    s.finished = true;
                }
            }
        }
    }
}
