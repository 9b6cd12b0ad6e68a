//! The batch time model, shared by the OpenAI and Anthropic batch APIs. A batch's fate is drawn
//! when it is created — its turnaround, when each line finishes, which lines fail — and its
//! status at any instant is computed from the time alone, so polling, cancelling and listing
//! need no background task. When a batch reaches its end it is *settled* once: its output is
//! written (OpenAI files) and its succeeded lines are billed, so the counters never pay a batch
//! twice.

use crate::bill::Tally;
use crate::cache::PromptTokens;
use crate::scenario::SimBatch;
use crate::text::{fnv1a, SplitMix};
use serde_json::Value;
use std::collections::HashMap;

/// How long a cancelled batch stays `cancelling` before it is `cancelled` (seconds).
pub(crate) const CANCEL_S: f64 = 0.2;

/// The longest `validating` and `finalizing` phases (seconds); each is at most 10 % of the
/// turnaround.
const PHASE_MAX_S: f64 = 0.2;

/// What a line's request got, exactly as the realtime endpoint would have answered it.
#[derive(Debug, Clone)]
pub(crate) enum LineResult {
    /// A completion (a `chat.completion` or a `message`), its usage, and what it is billed
    /// if it succeeds (the batch discount applied).
    Ok {
        body: Value,
        prompt: PromptTokens,
        output_tokens: u64,
        cost: schemas::Usd,
    },
    /// An error status and the provider's error body.
    Err { status: u16, body: Value },
}

/// One request of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub custom_id: String,
    /// Seconds after the batch's creation at which the line is done (infinite: never).
    pub done_at: f64,
    pub result: LineResult,
}

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Validating,
    /// The input was refused (OpenAI only; the batch never ran).
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Cancelling,
    Cancelled,
    Expired,
}

impl Phase {
    /// True once nothing about the batch changes any more.
    pub(crate) fn ended(self) -> bool {
        matches!(
            self,
            Phase::Failed | Phase::Completed | Phase::Cancelled | Phase::Expired
        )
    }
}

/// What became of one line at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineState {
    Pending,
    Succeeded,
    Errored,
    Cancelled,
    Expired,
}

/// One batch: its drawn fate and what the client asked of it.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// The id suffix; each dialect adds its prefix.
    pub id: String,
    /// Seconds since server start at creation.
    pub created_s: f64,
    /// Unix time (seconds, fractional) at creation.
    pub created_unix: f64,
    /// Time from creation to completion.
    pub turnaround: f64,
    validate_s: f64,
    finalize_s: f64,
    /// When the batch expires instead of completing (seconds after creation), if it does.
    expire_at: Option<f64>,
    /// The completion window (seconds), for `expires_at`.
    pub window_s: f64,
    /// When a cancel was asked for (seconds after creation).
    pub cancel_at: Option<f64>,
    pub lines: Vec<Line>,
    /// Validation errors of the input (OpenAI `errors.data`); a batch with any is `failed`.
    pub invalid: Vec<Value>,
    /// OpenAI: the input file, the endpoint, the window text, the metadata.
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    pub metadata: Value,
    /// Files written when the batch settled (OpenAI).
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    settled: bool,
}

/// The parts of a new batch the dialect supplies.
pub(crate) struct NewBatch {
    pub id: String,
    pub lines: Vec<(String, LineResult)>,
    pub invalid: Vec<Value>,
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    pub metadata: Value,
    /// The dialect's body of a line's injected 500 (`line_errors`).
    pub error_500: Value,
}

impl Batch {
    /// Draws the fate of batch number `number` (from 1) of a provider with batch settings `spec`:
    /// the turnaround (a tail one with probability `tail`), each line's finishing instant, the
    /// injected line errors, and expiry (`expire` list or the window).
    pub(crate) fn draw(
        spec: &SimBatch,
        seed: u64,
        number: u64,
        now_s: f64,
        now_unix: f64,
        new: NewBatch,
    ) -> Batch {
        let mut rng = SplitMix::new(seed ^ fnv1a(&[new.id.as_bytes(), &number.to_le_bytes()]));
        let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let turnaround = if uniform() < spec.tail {
            spec.tail_s
        } else {
            spec.turnaround_s
        };
        let validate_s = (0.1 * turnaround).min(PHASE_MAX_S);
        let finalize_s = (0.1 * turnaround).min(PHASE_MAX_S);
        let span = turnaround - validate_s - finalize_s;
        let error_500 = new.error_500;
        let mut lines: Vec<Line> = new
            .lines
            .into_iter()
            .map(|(custom_id, result)| {
                // u in (0, 1]: every line is done by the start of finalizing.
                let u = 1.0 - uniform();
                let result = match result {
                    LineResult::Ok { .. } if uniform() < spec.line_errors => LineResult::Err {
                        status: 500,
                        body: error_500.clone(),
                    },
                    r => r,
                };
                Line {
                    custom_id,
                    done_at: validate_s + span * u,
                    result,
                }
            })
            .collect();
        let mut expire_at = None;
        if spec.expire.contains(&number) {
            // Only the first `expire_done` of the lines (in finishing order) get done.
            let keep = (spec.expire_done * lines.len() as f64).round() as usize;
            let mut order: Vec<usize> = (0..lines.len()).collect();
            order.sort_by(|a, b| lines[*a].done_at.total_cmp(&lines[*b].done_at));
            for i in order.into_iter().skip(keep) {
                lines[i].done_at = f64::INFINITY;
            }
            expire_at = Some(turnaround);
        }
        if turnaround > spec.window_s {
            expire_at = Some(expire_at.map_or(spec.window_s, |e: f64| e.min(spec.window_s)));
        }
        Batch {
            id: new.id,
            created_s: now_s,
            created_unix: now_unix,
            turnaround,
            validate_s,
            finalize_s,
            expire_at,
            window_s: spec.window_s,
            cancel_at: None,
            lines,
            invalid: new.invalid,
            input_file_id: new.input_file_id,
            endpoint: new.endpoint,
            completion_window: new.completion_window,
            metadata: new.metadata,
            output_file_id: None,
            error_file_id: None,
            settled: false,
        }
    }

    /// When the batch ends (seconds after creation), how, and the instant after which no more
    /// lines get done.
    pub(crate) fn end(&self) -> (f64, Phase, f64) {
        if !self.invalid.is_empty() {
            return (self.validate_s, Phase::Failed, 0.0);
        }
        let (natural, how) = match self.expire_at {
            Some(e) => (e, Phase::Expired),
            None => (self.turnaround, Phase::Completed),
        };
        match self.cancel_at {
            Some(c) if c < natural => (c + CANCEL_S, Phase::Cancelled, c),
            _ => (natural, how, natural),
        }
    }

    /// Seconds after creation at server time `now_s`.
    pub(crate) fn age(&self, now_s: f64) -> f64 {
        (now_s - self.created_s).max(0.0)
    }

    /// The phase at `age` seconds after creation.
    pub(crate) fn phase(&self, age: f64) -> Phase {
        let (end, how, _) = self.end();
        if age >= end {
            return how;
        }
        if self.cancel_at.is_some_and(|c| age >= c) {
            return Phase::Cancelling;
        }
        if age < self.validate_s {
            return Phase::Validating;
        }
        if self.expire_at.is_none() && age >= self.turnaround - self.finalize_s {
            return Phase::Finalizing;
        }
        Phase::InProgress
    }

    /// What became of `line` at `age` seconds after creation.
    pub(crate) fn line_state(&self, line: &Line, age: f64) -> LineState {
        let (end, how, cutoff) = self.end();
        if line.done_at <= age.min(cutoff) {
            return match line.result {
                LineResult::Ok { .. } => LineState::Succeeded,
                LineResult::Err { .. } => LineState::Errored,
            };
        }
        if age < end {
            return LineState::Pending;
        }
        match how {
            Phase::Expired => LineState::Expired,
            _ => LineState::Cancelled,
        }
    }

    /// Lines per state at `age`: (pending, succeeded, errored, cancelled, expired).
    pub(crate) fn counts(&self, age: f64) -> [u64; 5] {
        let mut c = [0u64; 5];
        for l in &self.lines {
            let i = match self.line_state(l, age) {
                LineState::Pending => 0,
                LineState::Succeeded => 1,
                LineState::Errored => 2,
                LineState::Cancelled => 3,
                LineState::Expired => 4,
            };
            c[i] += 1;
        }
        c
    }

    /// Unix time (seconds, fractional) `age` seconds after creation.
    pub(crate) fn unix_at(&self, age: f64) -> f64 {
        self.created_unix + age
    }

    /// The instant (seconds after creation) the batch entered `phase`, if it has by `age`.
    pub(crate) fn entered(&self, phase: Phase, age: f64) -> Option<f64> {
        let (end, how, _) = self.end();
        let at = match phase {
            Phase::Validating => Some(0.0),
            Phase::InProgress if how != Phase::Failed => Some(self.validate_s),
            Phase::Finalizing if how == Phase::Completed => Some(self.turnaround - self.finalize_s),
            Phase::Cancelling => self.cancel_at,
            p if p == how => Some(end),
            _ => None,
        };
        at.filter(|t| *t <= age)
    }
}

/// A stored file (OpenAI): batch inputs uploaded by clients, outputs and errors written by the
/// simulator.
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub created_at: i64,
    pub bytes: bytes::Bytes,
}

/// One provider's batches (in creation order) and files.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub batches: Vec<Batch>,
    pub files: HashMap<String, File>,
    /// Batches created so far; the next one is number `created + 1`.
    pub created: u64,
    /// Batches whose cancel took effect.
    pub cancelled: u64,
    /// The succeeded lines of the settled batches.
    pub billed: Tally,
}

impl Store {
    /// Settles every batch that has ended by `now_s`: bills its succeeded lines and lets
    /// `write` produce its output (OpenAI's files). Each batch settles once.
    pub(crate) fn settle(
        &mut self,
        now_s: f64,
        mut write: impl FnMut(&mut Batch, &mut HashMap<String, File>, f64),
    ) {
        for b in self.batches.iter_mut().filter(|b| !b.settled) {
            let age = b.age(now_s);
            if !b.phase(age).ended() {
                continue;
            }
            b.settled = true;
            for l in &b.lines {
                if let (
                    LineState::Succeeded,
                    LineResult::Ok {
                        prompt,
                        output_tokens,
                        cost,
                        ..
                    },
                ) = (b.line_state(l, age), &l.result)
                {
                    self.billed.add(prompt, *output_tokens, *cost);
                }
            }
            write(b, &mut self.files, age);
        }
    }

    /// Draws and keeps the next batch (number `created + 1`) of a provider with batch settings
    /// `spec`, created at server time `now_s`.
    pub(crate) fn create(
        &mut self,
        spec: &SimBatch,
        seed: u64,
        now_s: f64,
        new: NewBatch,
    ) -> &Batch {
        self.created += 1;
        let b = Batch::draw(spec, seed, self.created, now_s, unix_now(), new);
        self.batches.push(b);
        &self.batches[self.batches.len() - 1]
    }

    /// The batch with id suffix `id` and its age at server time `now_s`.
    pub(crate) fn at(&self, id: &str, now_s: f64) -> Option<(&Batch, f64)> {
        let b = self.batches.iter().find(|b| b.id == id)?;
        Some((b, b.age(now_s)))
    }

    /// Asks the batch with id suffix `id` to cancel at server time `now_s`, as both APIs do: a
    /// batch that already ended (or is being cancelled) is left as it is and not counted again.
    /// Answers the batch and its age.
    pub(crate) fn cancel(&mut self, id: &str, now_s: f64) -> Option<(&Batch, f64)> {
        let b = self.batches.iter_mut().find(|b| b.id == id)?;
        let age = b.age(now_s);
        if b.cancel_at.is_none() && !b.phase(age).ended() {
            b.cancel_at = Some(age);
            self.cancelled += 1;
        }
        Some((b, age))
    }

    /// A list answer's page at server time `now_s` (see [`Store::page`]), each batch in the
    /// dialect's `object` shape.
    pub(crate) fn list(
        &self,
        after: Option<&str>,
        before: Option<&str>,
        limit: usize,
        now_s: f64,
        object: impl Fn(&Batch, f64) -> Value,
    ) -> Listing {
        let (page, has_more) = self.page(after, before, limit);
        let data: Vec<Value> = page.iter().map(|b| object(b, b.age(now_s))).collect();
        Listing {
            first_id: data.first().map(|b| b["id"].clone()),
            last_id: data.last().map(|b| b["id"].clone()),
            data,
            has_more,
        }
    }

    /// A page of batches, newest first: those after `after` (or before `before`, the ones
    /// nearest it) in that order, at most `limit`; and whether more follow.
    pub(crate) fn page(
        &self,
        after: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> (Vec<&Batch>, bool) {
        let newest_first: Vec<&Batch> = self.batches.iter().rev().collect();
        let pos = |id: &str| newest_first.iter().position(|b| b.id == id);
        match (after, before) {
            (_, Some(id)) => {
                let end = pos(id).unwrap_or(0);
                let start = end.saturating_sub(limit);
                (newest_first[start..end].to_vec(), start > 0)
            }
            (Some(id), None) => {
                let start = pos(id).map_or(newest_first.len(), |i| i + 1);
                let end = (start + limit).min(newest_first.len());
                (newest_first[start..end].to_vec(), end < newest_first.len())
            }
            (None, None) => {
                let end = limit.min(newest_first.len());
                (newest_first[..end].to_vec(), end < newest_first.len())
            }
        }
    }
}

/// One page of a list answer, newest first.
pub(crate) struct Listing {
    /// The batch objects.
    pub data: Vec<Value>,
    /// The `id` of the first and of the last object (none on an empty page).
    pub first_id: Option<Value>,
    pub last_id: Option<Value>,
    /// Whether more batches follow in the asked direction.
    pub has_more: bool,
}

/// The page size a list asked for in `limit` (`default` when absent), if it is a whole number
/// from 1 to `max`.
pub(crate) fn page_limit(limit: Option<&str>, default: usize, max: usize) -> Option<usize> {
    match limit {
        None => Some(default),
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=max).contains(l)),
    }
}

/// Unix time now (seconds, fractional, millisecond precision).
pub(crate) fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(spec: &SimBatch, number: u64, n: usize) -> Batch {
        let ok = LineResult::Ok {
            body: Value::Null,
            prompt: PromptTokens::plain(10),
            output_tokens: 5,
            cost: schemas::Usd::ZERO,
        };
        let new = NewBatch {
            id: format!("b{number}"),
            lines: (0..n).map(|i| (format!("r{i}"), ok.clone())).collect(),
            invalid: Vec::new(),
            input_file_id: String::new(),
            endpoint: String::new(),
            completion_window: String::new(),
            metadata: Value::Null,
            error_500: Value::Null,
        };
        Batch::draw(spec, 1, number, 0.0, 0.0, new)
    }

    #[test]
    fn phases_follow_the_clock_and_lines_finish_before_finalizing() {
        let spec = SimBatch::default();
        let b = batch(&spec, 1, 50);
        assert_eq!(b.phase(0.0), Phase::Validating);
        assert_eq!(b.phase(1.0), Phase::InProgress);
        assert_eq!(b.phase(1.9), Phase::Finalizing);
        assert_eq!(b.phase(2.0), Phase::Completed);
        let mid = b.counts(1.0);
        assert!(mid[0] > 0 && mid[1] > 0, "{mid:?}");
        assert_eq!(b.counts(1.81), [0, 50, 0, 0, 0]);
    }

    #[test]
    fn cancel_keeps_the_lines_done_before_it_and_cancels_the_rest() {
        let mut b = batch(&SimBatch::default(), 1, 50);
        b.cancel_at = Some(1.0);
        let done = b.counts(1.0)[1];
        assert_eq!(b.phase(1.1), Phase::Cancelling);
        assert_eq!(b.phase(1.0 + CANCEL_S), Phase::Cancelled);
        assert_eq!(b.counts(5.0), [0, done, 0, 50 - done, 0]);
    }

    #[test]
    fn listed_batch_expires_at_its_turnaround_with_the_asked_fraction_done() {
        let spec = SimBatch {
            expire: vec![2],
            expire_done: 0.3,
            ..SimBatch::default()
        };
        assert_eq!(batch(&spec, 1, 10).phase(2.0), Phase::Completed);
        let b = batch(&spec, 2, 10);
        assert_eq!(b.phase(1.99), Phase::InProgress);
        assert_eq!(b.phase(2.0), Phase::Expired);
        assert_eq!(b.counts(2.0), [0, 3, 0, 0, 7]);
    }

    #[test]
    fn batch_slower_than_its_window_expires_at_the_window() {
        let spec = SimBatch {
            turnaround_s: 10.0,
            window_s: 5.0,
            ..SimBatch::default()
        };
        let b = batch(&spec, 1, 100);
        assert_eq!(b.phase(5.0), Phase::Expired);
        let c = b.counts(5.0);
        assert!(c[1] > 0 && c[4] > 0 && c[1] + c[4] == 100, "{c:?}");
    }

    #[test]
    fn pages_run_newest_first_with_cursors_both_ways() {
        let spec = SimBatch::default();
        let store = Store {
            batches: (1..=5).map(|n| batch(&spec, n, 1)).collect(),
            ..Store::default()
        };
        let ids = |v: Vec<&Batch>| v.iter().map(|b| b.id.clone()).collect::<Vec<_>>();
        let (p, more) = store.page(None, None, 2);
        assert_eq!((ids(p), more), (vec!["b5".to_string(), "b4".into()], true));
        let (p, more) = store.page(Some("b4"), None, 2);
        assert_eq!((ids(p), more), (vec!["b3".to_string(), "b2".into()], true));
        let (p, more) = store.page(Some("b2"), None, 2);
        assert_eq!((ids(p), more), (vec!["b1".to_string()], false));
        let (p, more) = store.page(None, Some("b2"), 2);
        assert_eq!((ids(p), more), (vec!["b4".to_string(), "b3".into()], true));
    }
}
