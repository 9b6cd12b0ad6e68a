//! Provider batches in the simulation: the fleet gathers the jobs routed to one (provider,
//! model)'s batch API and submits them as one batch by count or by age; each batch's fate (its
//! turnaround, whether it expires part-done) is drawn from the provider's [`BatchSpec`] when it
//! is created. What happens to its lines when it ends is the engine's (`engine::Sim`).

use crate::scenario::BatchSpec;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use schemas::catalog::Price;

/// The jobs gathered for one (provider, model) and not yet submitted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gather {
    pub jobs: Vec<usize>,
    /// Bumped at each submission, so an age timer set for an earlier gathering is ignored.
    pub generation: u64,
}

/// How a batch ends, as drawn when it is created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fate {
    /// Every line answered (less the line errors).
    Completed,
    /// Expired with this fraction of its lines done.
    Expired(f64),
}

/// One provider batch in flight or ended.
#[derive(Debug, Clone)]
pub(crate) struct SimBatch {
    pub provider: usize,
    /// Index of the offer in the provider's `models`.
    pub offer: usize,
    pub jobs: Vec<usize>,
    pub created: DateTime<Utc>,
    /// The batch price at creation.
    pub price: Price,
    /// The turnaround drawn: the batch's lines are done evenly over it.
    pub turnaround: Duration,
    /// How it ends by itself.
    pub fate: Fate,
    pub ended: bool,
}

impl SimBatch {
    /// The fraction of its lines done by `t` (the batch works through them evenly).
    pub fn done_by(&self, t: DateTime<Utc>) -> f64 {
        let all = self.turnaround.num_milliseconds().max(1) as f64;
        ((t - self.created).num_milliseconds() as f64 / all).clamp(0.0, 1.0)
    }
}

/// Draws the turnaround and fate of the provider's `number`-th batch (1-based), created at
/// `created`, whose offer promises completion within `window`: the median (or the tail's,
/// always inside a slow window) times a jitter factor; a batch listed in `expire` ends expired
/// at that time with `expire_done` of its lines done; one slower than the window expires at
/// the window's end, done in proportion.
pub(crate) fn draw(
    spec: &BatchSpec,
    window: Duration,
    number: u32,
    created: DateTime<Utc>,
    rng: &mut StdRng,
) -> (Duration, DateTime<Utc>, Fate) {
    let base = spec.base_turnaround(created, rng.random::<f64>());
    let j = spec.jitter;
    let factor = if j > 0.0 {
        rng.random_range(1.0 - j..=1.0 + j)
    } else {
        1.0
    };
    let took = Duration::milliseconds(((base.num_milliseconds() as f64) * factor).max(1.0) as i64);
    if spec.expire.contains(&number) {
        return (took, created + took, Fate::Expired(spec.expire_done));
    }
    if took > window {
        let done = window.num_milliseconds() as f64 / took.num_milliseconds() as f64;
        return (took, created + window, Fate::Expired(done));
    }
    (took, created + took, Fate::Completed)
}
