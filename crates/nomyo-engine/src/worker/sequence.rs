//! One running request, a sequence of the context: its prompt tokens, one
//! sampler per choice, its answer text and timings; and the [`Generator`]
//! that prepares it from a request and advances it by each sampled token
//! (stop sequences, budget, the rewind to the prompt between choices).

use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use zeroize::Zeroize;

use nomyo_backend::{BackendError, Rejection, TokenTimings};

use crate::params::GenerationRequest;
use crate::response::{FinishReason, Usage};
use crate::template::ChatTemplate;
use crate::text::TextAssembler;

use super::sampler::{sampler, seed_for_choice};
use super::Event;

pub(super) struct Generator<'m> {
    pub(super) model: &'m LlamaModel,
    pub(super) template: &'m ChatTemplate,
    /// Tokens one request may use (its sequence's share of the context).
    pub(super) context: usize,
}

pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(format!("{what}: {e}"))
}

/// Overwrites token ids (prompt tokens encode the prompt) before they are freed.
fn wipe(tokens: &mut [LlamaToken]) {
    for t in tokens.iter_mut() {
        t.0.zeroize();
    }
}

/// One running request: a sequence of the context.
pub(super) struct Sequence {
    pub(super) request_id: String,
    pub(super) events: UnboundedSender<Event>,
    /// Arrival order (prompts are evaluated first come, first served).
    pub(super) arrival: u64,
    pub(super) queued_at: Instant,
    pub(super) prompt: Vec<LlamaToken>,
    /// Prompt tokens in the cache.
    pub(super) fed: usize,
    /// One sampler per choice; `choice` is the one running.
    pub(super) samplers: Vec<LlamaSampler>,
    pub(super) choice: usize,
    pub(super) stop: Vec<String>,
    pub(super) text: TextAssembler,
    /// Position of the next token in the cache.
    pub(super) pos: i32,
    /// The token sampled last, to be decoded in the next step.
    pub(super) next: Option<LlamaToken>,
    /// Where this sequence's logits are in the batch just decoded.
    pub(super) logits: Option<i32>,
    pub(super) generated: u32,
    pub(super) budget: u32,
    pub(super) usage: Usage,
    pub(super) started: bool,
    pub(super) first_token: Option<Duration>,
    pub(super) last_token: Option<Instant>,
    pub(super) gaps: Vec<Duration>,
}

impl Drop for Sequence {
    fn drop(&mut self) {
        wipe(&mut self.prompt);
    }
}

/// What became of a sequence after a step.
pub(super) enum Outcome {
    Running,
    Done,
    Cancelled,
    Failed(BackendError),
}

impl Generator<'_> {
    /// Renders and tokenises a request and builds its samplers: the prompt
    /// tokens, one sampler per choice, and the token budget per choice.
    pub(super) fn prepare(
        &self,
        req: &GenerationRequest,
    ) -> Result<(Vec<LlamaToken>, Vec<LlamaSampler>, u32), BackendError> {
        let prompt = self.template.render(&req.messages).map_err(|e| {
            tracing::debug!(error = %e, "chat template failed");
            BackendError::InvalidRequest(Rejection::invalid_value(
                "messages",
                "the model's chat template does not accept these messages",
            ))
        })?;
        let vocab = self.model.vocab();
        let bos_text = vocab.token_to_piece(vocab.bos(), true, None);
        let add_bos = vocab.should_add_bos()
            && !(bos_text.is_empty() || prompt.as_bytes().starts_with(&bos_text));
        let mut tokens = vocab.tokenize(prompt.as_bytes(), add_bos, true);
        drop(prompt);
        let checked = self.check(req, &tokens);
        match checked {
            Ok((samplers, budget)) => Ok((tokens, samplers, budget)),
            Err(e) => {
                wipe(&mut tokens);
                Err(e)
            }
        }
    }

    fn check(
        &self,
        req: &GenerationRequest,
        prompt: &[LlamaToken],
    ) -> Result<(Vec<LlamaSampler>, u32), BackendError> {
        let n_ctx = self.context;
        if prompt.is_empty() {
            return Err(BackendError::InvalidRequest(Rejection::invalid_value(
                "messages",
                "the prompt is empty",
            )));
        }
        // At least one token must be generated after the prompt.
        if prompt.len() >= n_ctx {
            return Err(BackendError::InvalidRequest(Rejection::context_length(
                format!(
                    "the conversation is {} tokens long; the embedded model's context holds {n_ctx}",
                    prompt.len()
                ),
            )));
        }
        let room = (n_ctx - prompt.len()) as u32;
        let budget = req.max_tokens.map_or(room, |m| m.min(room));
        // Samplers first: a bad schema fails before any compute.
        let samplers = (0..req.n)
            .map(|i| sampler(self.model, req, seed_for_choice(req.sampling.seed, i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((samplers, budget))
    }

    /// Samples sequence `id`'s next token from the logits at batch index
    /// `idx`, and sends what it adds to the answer.
    pub(super) fn advance(
        &self,
        ctx: &mut LlamaContext<'_>,
        id: usize,
        seq: &mut Sequence,
        idx: i32,
        timings: Option<&Arc<dyn TokenTimings>>,
    ) -> Outcome {
        if !seq.started {
            seq.started = true;
            if seq.events.send(Event::Started).is_err() {
                return Outcome::Cancelled;
            }
        }
        let vocab = self.model.vocab();
        let finish = 'choice: {
            if seq.generated >= seq.budget {
                break 'choice FinishReason::Length;
            }
            let Some(sampler) = seq.samplers.get_mut(seq.choice) else {
                return Outcome::Failed(internal("sampler", "missing"));
            };
            let token = sampler.sample(ctx, idx);
            let now = Instant::now();
            match seq.last_token.replace(now) {
                // A later choice's first token follows a rewind, not a gap
                // a reader waits through between tokens: neither is counted.
                None if seq.first_token.is_some() => {}
                None => {
                    let after = now - seq.queued_at;
                    seq.first_token = Some(after);
                    if let Some(t) = timings {
                        t.first_token(after);
                    }
                }
                Some(prev) => {
                    let gap = now - prev;
                    seq.gaps.push(gap);
                    if let Some(t) = timings {
                        t.inter_token(gap);
                    }
                }
            }
            if vocab.is_eog(token) {
                break 'choice FinishReason::Stop;
            }
            seq.generated += 1;
            let mut piece = Vec::with_capacity(32);
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let stopped = seq.text.push(&piece);
            piece.zeroize();
            if let Some(delta) = seq.text.take_delta() {
                if seq
                    .events
                    .send(Event::Delta(seq.choice as u32, delta))
                    .is_err()
                {
                    return Outcome::Cancelled;
                }
            }
            if stopped {
                break 'choice FinishReason::Stop;
            }
            if seq.generated >= seq.budget {
                break 'choice FinishReason::Length;
            }
            seq.next = Some(token);
            return Outcome::Running;
        };
        // The choice ended.
        let choice = seq.choice as u32;
        if let Some(delta) = seq.text.finish() {
            if seq.events.send(Event::Delta(choice, delta)).is_err() {
                return Outcome::Cancelled;
            }
        }
        seq.usage.completion_tokens += seq.generated;
        if seq.events.send(Event::ChoiceDone(choice, finish)).is_err() {
            return Outcome::Cancelled;
        }
        seq.choice += 1;
        if seq.choice >= seq.samplers.len() {
            return Outcome::Done;
        }
        // The next choice: back to the end of the prompt. The answer's cells
        // are removed and the prompt's last token is evaluated again (in the
        // next step) for its logits.
        let last = seq.prompt.len() - 1;
        match ctx.clear_kv_cache_seq(Some(id as u32), Some(last as u32), None) {
            Ok(true) => {}
            _ => return Outcome::Failed(internal("kv", "could not rewind to the prompt")),
        }
        seq.fed = last;
        seq.pos = seq.prompt.len() as i32;
        seq.generated = 0;
        seq.next = None;
        seq.last_token = None;
        seq.text = TextAssembler::new(seq.stop.clone());
        Outcome::Running
    }
}
