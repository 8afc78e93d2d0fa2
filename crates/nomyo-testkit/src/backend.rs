//! The backend double of the tests (feature `backend`): one type, [`Double`],
//! whose models and answers a test gives as closures, and the OpenAI shapes
//! it answers with ([`completion`], [`chunk`], [`words`]). A test states
//! only the behaviour it is about (refuse, stall, stream forever, record
//! what it was asked) instead of writing a `Backend` of its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use nomyo_backend::{Backend, BackendError, ChatRequest, ChunkStream};
use serde_json::{json, Value};

/// A chat completion of `model` whose answer is `content`.
pub fn completion(model: &str, content: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
}

/// A `chat.completion.chunk` of `model` with one choice: `delta` and
/// `finish_reason`.
pub fn chunk(model: &str, delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

/// A chunk of `model` whose delta is the text `content`, not finished.
pub fn text_chunk(model: &str, content: &str) -> Value {
    chunk(model, json!({ "content": content }), Value::Null)
}

/// The content of the request's last user message ("" when there is none).
pub fn prompt_of(request: &ChatRequest) -> String {
    request
        .body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// The prompt streamed back word by word (`"w "` a chunk); model `cut` sends
/// its first word and then fails, as a backend that dies mid-stream.
pub fn words(request: &ChatRequest) -> Result<ChunkStream, BackendError> {
    let model = request.model().to_owned();
    let mut items: Vec<Result<Value, BackendError>> = prompt_of(request)
        .split(' ')
        .map(|w| Ok(text_chunk(&model, &format!("{w} "))))
        .collect();
    if model == "cut" {
        items.truncate(1);
        items.push(Err(BackendError::Upstream("died".into())));
    }
    Ok(futures::stream::iter(items).boxed())
}

/// A stream of the chunks a test sends into the returned [`Feed`], one at a
/// time, for tests that control when each chunk is produced.
pub fn channel_stream() -> (Feed, ChunkStream) {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Value>();
    (Feed(tx), rx.map(Ok).boxed())
}

/// The sending side of [`channel_stream`]; dropping it ends the stream.
pub struct Feed(futures::channel::mpsc::UnboundedSender<Value>);

impl Feed {
    /// Sends one chunk.
    pub fn send(&self, chunk: Value) {
        self.0.unbounded_send(chunk).unwrap();
    }
}

type ChatFn =
    dyn Fn(ChatRequest) -> BoxFuture<'static, Result<Value, BackendError>> + Send + Sync + 'static;
type StreamFn = dyn Fn(ChatRequest) -> Result<ChunkStream, BackendError> + Send + Sync + 'static;

/// The backend double: serves `models` under `name`; by default answers
/// `"echo: <prompt>"` and refuses to stream, as the [`Backend`] trait does.
/// [`Double::answer`], [`Double::answer_async`] and [`Double::stream`] give
/// it other behaviour; errors queued in [`Double::fail_first`] come first. It
/// counts and records every request it is given.
pub struct Double {
    name: String,
    models: Vec<String>,
    chat: Box<ChatFn>,
    stream: Option<Box<StreamFn>>,
    /// Chat and stream calls received.
    pub calls: AtomicUsize,
    /// The bodies of every request, in arrival order.
    pub bodies: Mutex<Vec<Value>>,
    /// Errors to answer with, one a call, before the behaviour runs.
    pub fail_first: Mutex<VecDeque<BackendError>>,
}

impl Double {
    /// A double named `name` serving `models` that echoes the prompt.
    pub fn new(name: &str, models: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            models: models.iter().map(|m| m.to_string()).collect(),
            chat: Box::new(|r: ChatRequest| {
                let answer = completion(r.model(), &format!("echo: {}", prompt_of(&r)));
                async move { Ok(answer) }.boxed()
            }),
            stream: None,
            calls: AtomicUsize::new(0),
            bodies: Mutex::new(Vec::new()),
            fail_first: Mutex::new(VecDeque::new()),
        }
    }

    /// Answers whole completions with `f`.
    pub fn answer(
        mut self,
        f: impl Fn(&ChatRequest) -> Result<Value, BackendError> + Send + Sync + 'static,
    ) -> Self {
        self.chat = Box::new(move |r| {
            let out = f(&r);
            async move { out }.boxed()
        });
        self
    }

    /// Answers whole completions with the future `f` returns (a delay, a
    /// wait on something the test holds).
    pub fn answer_async(
        mut self,
        f: impl Fn(ChatRequest) -> BoxFuture<'static, Result<Value, BackendError>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.chat = Box::new(f);
        self
    }

    /// Streams with `f`.
    pub fn stream(
        mut self,
        f: impl Fn(&ChatRequest) -> Result<ChunkStream, BackendError> + Send + Sync + 'static,
    ) -> Self {
        self.stream = Some(Box::new(move |r| f(&r)));
        self
    }

    /// This double behind an `Arc`, as `AppState::builder().backend()` takes it.
    pub fn arc(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// The bodies received so far.
    pub fn seen(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Counts and records `r`; the queued failure to answer with, if any.
    fn record(&self, r: &ChatRequest) -> Result<(), BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.bodies
            .lock()
            .unwrap()
            .push(Value::Object(r.body.clone()));
        self.fail_first
            .lock()
            .unwrap()
            .pop_front()
            .map_or(Ok(()), Err)
    }
}

#[async_trait::async_trait]
impl Backend for Double {
    fn name(&self) -> &str {
        &self.name
    }
    fn models(&self) -> Vec<String> {
        self.models.clone()
    }
    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
        self.record(&request)?;
        (self.chat)(request).await
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        self.record(&request)?;
        match &self.stream {
            Some(f) => f(request),
            None => Err(BackendError::StreamingUnsupported),
        }
    }
}
