//! The batch loop: requests admitted into free slots in arrival order, one
//! `llama_decode` per step (every generating sequence's next token, then a
//! chunk of joining prompts), a sequence's cells removed as soon as it ends,
//! and the whole KV cache wiped when the engine has been idle for
//! [`IDLE_WIPE`].

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;

use nomyo_backend::{BackendError, TokenTimings};

use crate::response::Usage;
use crate::text::TextAssembler;

use super::sequence::{internal, Generator, Outcome, Sequence};
use super::{Event, Job, IDLE_WIPE, PREFILL_CHUNK};

pub(super) struct Scheduler<'m, 's> {
    pub(super) gen: Generator<'m>,
    /// Slot `i` runs sequence id `i`.
    pub(super) slots: Vec<Option<Sequence>>,
    pub(super) batch: LlamaBatch<'static>,
    pub(super) batch_size: usize,
    pub(super) arrivals: u64,
    pub(super) timings: &'s OnceLock<Arc<dyn TokenTimings>>,
    /// A sequence's cells could not be removed: end all and wipe.
    pub(super) poisoned: bool,
}

impl Scheduler<'_, '_> {
    fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Runs until every sender is gone and every running request has ended.
    pub(super) fn serve(&mut self, ctx: &mut LlamaContext<'_>, jobs: &Receiver<Job>) {
        let mut open = true;
        let mut wiped = true;
        loop {
            self.drop_cancelled(ctx);
            if self.running() == 0 {
                if !open {
                    return;
                }
                // Idle: wait for a request; wipe the cache if none comes soon.
                let job = if wiped {
                    jobs.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    jobs.recv_timeout(IDLE_WIPE)
                };
                match job {
                    Ok(job) => self.admit(job),
                    Err(RecvTimeoutError::Timeout) => {
                        ctx.clear_kv_cache();
                        wiped = true;
                        tracing::debug!("engine idle: KV cache wiped");
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while open && self.running() < self.slots.len() {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if self.running() == 0 {
                continue;
            }
            wiped = false;
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(ctx)));
            if step.is_err() || self.poisoned {
                if step.is_err() {
                    tracing::error!("inference panicked");
                }
                for slot in &mut self.slots {
                    if let Some(seq) = slot.take() {
                        let _ = seq.events.send(Event::Failed(BackendError::Internal(
                            "inference failed".into(),
                        )));
                    }
                }
                ctx.clear_kv_cache();
                self.poisoned = false;
                wiped = true;
            }
        }
    }

    /// Ends the sequences whose client went away.
    fn drop_cancelled(&mut self, ctx: &mut LlamaContext<'_>) {
        for id in 0..self.slots.len() {
            if self.slots[id]
                .as_ref()
                .is_some_and(|s| s.events.is_closed())
            {
                self.release(ctx, id, Outcome::Cancelled);
            }
        }
    }

    /// Checks and prepares a request (template, tokens, samplers) and gives
    /// it a free slot; a request that cannot run is answered at once.
    fn admit(&mut self, job: Job) {
        if job.events.is_closed() {
            tracing::debug!(request_id = %job.request_id, "request cancelled while queued");
            return;
        }
        let Some(id) = self.slots.iter().position(Option::is_none) else {
            // Never: a job is taken only when a slot is free.
            let _ = job.events.send(Event::Failed(BackendError::Unavailable {
                retry_after: Some(Duration::from_secs(1)),
            }));
            return;
        };
        let wait = job.queued_at.elapsed();
        if let Some(t) = self.timings.get() {
            t.queued(wait);
        }
        match self.gen.prepare(&job.request) {
            Ok((prompt, samplers, budget)) => {
                self.arrivals += 1;
                tracing::debug!(
                    request_id = %job.request_id,
                    sequence = id,
                    wait_ms = wait.as_millis() as u64,
                    prompt_tokens = prompt.len(),
                    "request joins the batch"
                );
                let usage = Usage {
                    prompt_tokens: prompt.len() as u32,
                    completion_tokens: 0,
                };
                self.slots[id] = Some(Sequence {
                    request_id: job.request_id,
                    events: job.events,
                    arrival: self.arrivals,
                    queued_at: job.queued_at,
                    pos: prompt.len() as i32,
                    prompt,
                    fed: 0,
                    samplers,
                    choice: 0,
                    text: TextAssembler::new(job.request.stop.clone()),
                    stop: job.request.stop,
                    next: None,
                    logits: None,
                    generated: 0,
                    budget,
                    usage,
                    started: false,
                    first_token: None,
                    last_token: None,
                    gaps: Vec::new(),
                });
            }
            Err(e) => {
                tracing::debug!(request_id = %job.request_id, error = %e, "request refused");
                let _ = job.events.send(Event::Failed(e));
            }
        }
    }

    /// One decode: every generating sequence's next token, then prompt
    /// tokens of joining sequences (oldest first), then sampling.
    fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        self.batch.clear();
        let mut in_batch = Vec::with_capacity(self.slots.len());
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(seq) = slot else { continue };
            seq.logits = None;
            if let Some(token) = seq.next.take() {
                if self.batch.add(token, seq.pos, &[id as i32], true).is_err() {
                    continue;
                }
                seq.logits = Some(self.batch.n_tokens() - 1);
                seq.pos += 1;
                in_batch.push(id);
            }
        }
        let generating = in_batch.len();
        let mut room = if generating > 0 {
            PREFILL_CHUNK.min(self.batch_size.saturating_sub(generating))
        } else {
            self.batch_size
        };
        let mut joining: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| {
                s.as_ref()
                    .filter(|s| s.fed < s.prompt.len())
                    .map(|s| (s.arrival, id))
            })
            .collect();
        joining.sort_unstable();
        for (_, id) in joining {
            if room == 0 {
                break;
            }
            let Some(seq) = self.slots[id].as_mut() else {
                continue;
            };
            let end = (seq.fed + room).min(seq.prompt.len());
            for i in seq.fed..end {
                let last = i == seq.prompt.len() - 1;
                if self
                    .batch
                    .add(seq.prompt[i], i as i32, &[id as i32], last)
                    .is_err()
                {
                    break;
                }
                if last {
                    seq.logits = Some(self.batch.n_tokens() - 1);
                }
                seq.fed = i + 1;
                room -= 1;
            }
            in_batch.push(id);
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, tokens = self.batch.n_tokens(), "decode failed");
            for id in in_batch {
                self.release(ctx, id, Outcome::Failed(internal("decode", &e)));
            }
            return;
        }
        for id in 0..self.slots.len() {
            let Some(seq) = self.slots[id].as_mut() else {
                continue;
            };
            let Some(idx) = seq.logits.take() else {
                continue;
            };
            let outcome = self.gen.advance(ctx, id, seq, idx, self.timings.get());
            if !matches!(outcome, Outcome::Running) {
                self.release(ctx, id, outcome);
            }
        }
    }

    /// Frees slot `id`: its cells are removed from the cache, its prompt
    /// tokens wiped, and its request told how it ended.
    fn release(&mut self, ctx: &mut LlamaContext<'_>, id: usize, outcome: Outcome) {
        let Some(seq) = self.slots[id].take() else {
            return;
        };
        let removed = matches!(
            ctx.clear_kv_cache_seq(Some(id as u32), None, None),
            Ok(true)
        );
        if !removed || ctx.kv_cache_seq_pos_max(id as i32) != -1 {
            // Cannot happen for a whole sequence; if it did, no later request
            // may see these cells: every sequence ends and the cache is wiped.
            tracing::error!(
                sequence = id,
                "could not remove a sequence's cells; wiping the cache"
            );
            self.poisoned = true;
        }
        let mut gaps = seq.gaps.clone();
        gaps.sort_unstable();
        let gap_ms = |q: f64| {
            gaps.get(((gaps.len() as f64 - 1.0) * q).round() as usize)
                .map(|d| d.as_secs_f64() * 1000.0)
        };
        let run_ms = seq.queued_at.elapsed().as_millis() as u64;
        match outcome {
            Outcome::Done => {
                tracing::debug!(
                    request_id = %seq.request_id,
                    sequence = id,
                    run_ms,
                    ttft_ms = seq.first_token.map(|d| d.as_millis() as u64),
                    itl_p50_ms = gap_ms(0.5),
                    itl_max_ms = gap_ms(1.0),
                    prompt_tokens = seq.usage.prompt_tokens,
                    completion_tokens = seq.usage.completion_tokens,
                    "embedded completion"
                );
                let _ = seq.events.send(Event::Done(seq.usage));
            }
            Outcome::Cancelled => {
                tracing::debug!(request_id = %seq.request_id, sequence = id, "request cancelled by the client");
            }
            Outcome::Failed(e) => {
                tracing::debug!(request_id = %seq.request_id, sequence = id, error = %e, "embedded completion failed");
                let _ = seq.events.send(Event::Failed(e));
            }
            Outcome::Running => {}
        }
    }
}
