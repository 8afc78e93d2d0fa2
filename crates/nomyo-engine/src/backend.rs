//! The engine as a [`Backend`]: a request is checked, queued for the
//! inference thread, and the thread's events become a `chat.completion` or
//! a stream of `chat.completion.chunk`s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use std::sync::mpsc::TrySendError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use zeroize::Zeroizing;

use nomyo_backend::chat::Delta;
use nomyo_backend::{Backend, BackendError, ChatRequest, ChunkStream, TokenTimings};

use crate::response::{self, FinishReason, ResponseMeta};
use crate::worker::{Event, Job};
use crate::{params, Engine, State};

impl Engine {
    fn submit(
        &self,
        request: params::GenerationRequest,
        request_id: &str,
    ) -> Result<UnboundedReceiver<Event>, BackendError> {
        if self.shared.state() == State::Failed {
            return Err(BackendError::Internal(
                "embedded model failed to load".into(),
            ));
        }
        let (events, rx) = unbounded_channel();
        let job = Job {
            request,
            events,
            request_id: request_id.to_owned(),
            queued_at: Instant::now(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => {
                tracing::debug!(request_id, "embedded model queue full");
                Err(BackendError::Unavailable {
                    retry_after: Some(Duration::from_secs(1)),
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(BackendError::Internal("inference thread stopped".into()))
            }
        }
    }
}

fn worker_gone() -> BackendError {
    BackendError::Internal("inference thread stopped".into())
}

#[async_trait::async_trait]
impl Backend for Engine {
    fn name(&self) -> &str {
        "embedded"
    }

    fn models(&self) -> Vec<String> {
        vec![self.model_id.clone()]
    }

    fn is_ready(&self) -> bool {
        self.shared.state() == State::Ready
    }

    fn observe_tokens(&self, timings: Arc<dyn TokenTimings>) {
        let _ = self.shared.timings.set(timings);
    }

    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
        let req = params::parse_with_defaults(&request.body, false, &self.sampling)?;
        let n = req.n as usize;
        let mut rx = self.submit(req, &request.request_id)?;
        let meta = ResponseMeta::new(&self.model_id);
        let mut texts: Vec<Zeroizing<String>> =
            (0..n).map(|_| Zeroizing::new(String::new())).collect();
        let mut finishes = vec![FinishReason::Stop; n];
        while let Some(event) = rx.recv().await {
            match event {
                Event::Started => {}
                Event::Delta(i, d) => {
                    if let Some(t) = texts.get_mut(i as usize) {
                        t.push_str(&d);
                    }
                }
                Event::ChoiceDone(i, f) => {
                    if let Some(slot) = finishes.get_mut(i as usize) {
                        *slot = f;
                    }
                }
                Event::Done(usage) => {
                    let choices: Vec<(String, FinishReason)> = texts
                        .iter()
                        .zip(&finishes)
                        .map(|(t, f)| (t.as_str().to_owned(), *f))
                        .collect();
                    return Ok(meta.completion(&choices, usage));
                }
                Event::Failed(e) => return Err(e),
            }
        }
        Err(worker_gone())
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        let req = params::parse_with_defaults(&request.body, true, &self.sampling)?;
        let include_usage = req.include_usage;
        let mut rx = self.submit(req, &request.request_id)?;
        // Wait until the prompt is accepted and evaluated, so that a bad request
        // gets its own status instead of a stream that fails at once.
        match rx.recv().await {
            Some(Event::Started) => {}
            Some(Event::Failed(e)) => return Err(e),
            _ => return Err(worker_gone()),
        }
        let meta = ResponseMeta::new(&self.model_id);
        let first = meta.chunk(response::start_delta(), None, include_usage);

        struct St {
            rx: UnboundedReceiver<Event>,
            meta: ResponseMeta,
            include_usage: bool,
            done: bool,
        }
        let rest = futures::stream::unfold(
            St {
                rx,
                meta,
                include_usage,
                done: false,
            },
            |mut st| async move {
                if st.done {
                    return None;
                }
                loop {
                    let item = match st.rx.recv().await {
                        Some(Event::Started) => continue,
                        Some(Event::Delta(_, d)) => {
                            Ok(st
                                .meta
                                .chunk(response::text_delta(d), None, st.include_usage))
                        }
                        Some(Event::ChoiceDone(_, f)) => {
                            Ok(st.meta.chunk(Delta::default(), Some(f), st.include_usage))
                        }
                        Some(Event::Done(usage)) => {
                            st.done = true;
                            if st.include_usage {
                                Ok(st.meta.usage_chunk(usage))
                            } else {
                                return None;
                            }
                        }
                        Some(Event::Failed(e)) => {
                            st.done = true;
                            Err(e)
                        }
                        None => {
                            st.done = true;
                            Err(worker_gone())
                        }
                    };
                    return Some((item, st));
                }
            },
        );
        Ok(futures::stream::once(async move { Ok(first) })
            .chain(rest)
            .boxed())
    }
}
