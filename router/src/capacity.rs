//! Every provider's state in one planner, and the capacity reserved for deferred jobs. A job
//! with an earlier deadline is admitted ahead of reserved jobs that can afford to wait; those
//! wake, see their turn moved, and defer again. Rate limits and circuits are per planner
//! (DESIGN §5).

use crate::policy::{capacity_key, Availability, Busy, CapacityView};
use crate::provider_state::ProviderState;
use crate::timeline::minutes;
use chrono::{DateTime, Duration, Utc};
use schemas::{Catalog, Route, Turn};
use std::collections::{HashMap, VecDeque};

/// Every provider's state in one worker, and the capacity reserved for deferred jobs.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// Keyed by capacity key: the provider's name, and `<name>/flex` for its flex tier.
    pub providers: HashMap<String, ProviderState>,
    reservations: HashMap<String, Reservation>,
    pruned_at: DateTime<Utc>,
    /// With other planners in the fleet, a deferred job may wake at any of them: a reservation
    /// whose job has not come back this long after its turn is taken as gone elsewhere.
    orphan_after: Option<Duration>,
    swept_at: DateTime<Utc>,
    /// Batch turnarounds observed, per (provider, model): the latest few.
    turnarounds: HashMap<(String, String), VecDeque<Duration>>,
}

/// Seconds past its turn after which a reservation whose job has not come back is dropped, in
/// a planner that shares the fleet's jobs with others.
const ORPHAN_AFTER_S: i64 = 30;

/// Seconds past a promised turn during which another planner may still send the job on it (the
/// broker's redelivery, a busy gate); later, the capacity set aside has passed unused, and the
/// job plans afresh where it is (sent then, it would come on top of what the account serves).
pub(crate) const TURN_LATE_S: i64 = 10;

/// Batch turnarounds remembered per (provider, model); the expectation is their maximum.
const TURNAROUNDS_KEPT: usize = 16;

/// Capacity set aside for one deferred job (keyed by job id in [`Capacity`]).
#[derive(Debug, Clone)]
struct Reservation {
    /// The job's turn, as promised when it was reserved: the capacity key and the instant.
    turn: Turn,
    /// In a planner sharing the fleet's jobs: the turn has come and its capacity is counted
    /// as used (taken from the buckets and the plan), wherever the job is sent on it.
    paid: bool,
    pool: i64,
    idx: usize,
    demand: [f64; 3],
    due: i64,
}

impl Capacity {
    pub fn new(catalog: &Catalog, now: DateTime<Utc>) -> Self {
        let mut providers = HashMap::new();
        for p in &catalog.providers {
            // Minutes of the UTC day where a price may change: the schedules' edges under
            // each offset their zones use (Beijing's 09:00 is 01:00 UTC).
            let edges: Vec<u32> = p
                .models
                .iter()
                .flat_map(|m| m.utc_price_edges(now))
                .collect();
            let state = ProviderState::new(&p.limits, now).with_price_edges(edges.iter().copied());
            if p.models.iter().any(|m| m.flex.is_some()) {
                // The flex tier's capacity is its own: its 429s say nothing of realtime's.
                let key = capacity_key(&p.name, Route::Flex).into_owned();
                providers.insert(key, state.clone());
            }
            providers.insert(p.name.clone(), state);
        }
        Capacity {
            providers,
            reservations: HashMap::new(),
            pruned_at: now,
            orphan_after: None,
            swept_at: now,
            turnarounds: HashMap::new(),
        }
    }

    /// Learns that a batch of `model` at `provider` took `took` from creation to its end.
    pub fn observe_turnaround(&mut self, provider: &str, model: &str, took: Duration) {
        let seen = self
            .turnarounds
            .entry((provider.to_string(), model.to_string()))
            .or_default();
        if seen.len() == TURNAROUNDS_KEPT {
            seen.pop_front();
        }
        seen.push_back(took);
    }

    /// The turnaround expected of a batch of `model` at `provider`: the longest of the latest
    /// seen, `None` before any was.
    pub fn turnaround(&self, provider: &str, model: &str) -> Option<Duration> {
        self.turnarounds
            .get(&(provider.to_string(), model.to_string()))
            .and_then(|seen| seen.iter().max().copied())
    }

    pub fn availability(&self, provider: &str, tokens: u64, now: DateTime<Utc>) -> Availability {
        self.providers
            .get(provider)
            .map_or(Availability::Excluded, |s| s.availability(tokens, now))
    }

    pub fn get_mut(&mut self, provider: &str) -> Option<&mut ProviderState> {
        self.providers.get_mut(provider)
    }

    /// What the policy may ask about job `job` of `tokens` (input + expected output) at `now`;
    /// give it to [`crate::policy::plan`]. A job holding a reservation keeps its turn: asked
    /// early, the view answers with the promised time; once the turn has come, the job goes
    /// ahead of the reservations still waiting. After the decision, call
    /// [`reserve`](Self::reserve) for a deferral with a hold, else
    /// [`cancel_reservation`](Self::cancel_reservation).
    pub fn view<'c>(&'c self, job: &'c str, tokens: u64, now: DateTime<Utc>) -> JobView<'c> {
        JobView {
            cap: self,
            own: self.reservations.get(job),
            tokens,
            now,
            woken: false,
            promised: None,
        }
    }

    /// [`view`](Self::view) for a job as it comes back from the broker: `woken` when it has
    /// waited already (deferred at least once), `turn` the turn it was promised then. In a
    /// planner that shares the fleet's jobs, a job without a reservation here was deferred by
    /// another planner. If it carries that planner's turn, the turn is kept as if it were
    /// reserved here: the other planner set the capacity aside and pays for it at the turn (see
    /// [`sweep_orphans`](Self::sweep_orphans)), so at its turn only the gates hold the job back
    /// (for [`TURN_LATE_S`] at most). A turn of this planner's own that it has paid for already
    /// is kept the same way.
    /// Without a turn, a woken job goes ahead of the reservations here as its own reservation's
    /// turn would, not to the end of this planner's line.
    pub fn view_woken<'c>(
        &'c self,
        job: &'c str,
        tokens: u64,
        now: DateTime<Utc>,
        woken: bool,
        turn: Option<&'c Turn>,
    ) -> JobView<'c> {
        let v = self.view(job, tokens, now);
        let shared = self.orphan_after.is_some();
        // A turn of this planner's own that has been paid for is kept as any promised turn.
        let (own, turn) = match v.own {
            Some(r) if r.paid => (None, Some(&r.turn)),
            Some(r) => (Some(r), None),
            None => (None, turn),
        };
        let promised = turn.filter(|t| shared && now <= t.at + Duration::seconds(TURN_LATE_S));
        JobView {
            own,
            woken: woken && shared && own.is_none() && promised.is_none(),
            promised,
            ..v
        }
    }

    /// Sets capacity aside on `provider` for `job`, deferred until `at` and due to start by `by`
    /// (the `hold` of a [`crate::policy::Plan`]). Replaces any earlier reservation of the job.
    pub fn reserve(
        &mut self,
        job: &str,
        provider: &str,
        tokens: u64,
        at: DateTime<Utc>,
        by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let was_due = self
            .reservations
            .get(job)
            .is_some_and(|r| r.turn.provider == provider && r.turn.at <= now);
        self.cancel_reservation(job);
        if now - self.pruned_at >= Duration::minutes(1) {
            self.prune(now);
        }
        let Some(s) = self.providers.get_mut(provider) else {
            return;
        };
        let demand = s.demand(tokens);
        if was_due && at > now {
            s.plan.join_line(&demand, minutes(at));
        }
        let (pool, idx, due) = s.plan.reserve(&demand, minutes(at), minutes(by));
        self.reservations.insert(
            job.to_string(),
            Reservation {
                turn: Turn {
                    provider: provider.to_string(),
                    at,
                },
                paid: false,
                pool,
                idx,
                demand,
                due,
            },
        );
    }

    /// Gives back the capacity reserved for `job`, if any (it is being routed again).
    pub fn cancel_reservation(&mut self, job: &str) {
        if let Some(r) = self.reservations.remove(job).filter(|r| !r.paid) {
            if let Some(s) = self.providers.get_mut(&r.turn.provider) {
                s.plan.unreserve(r.pool, r.idx, &r.demand);
            }
        }
    }

    /// Reservations currently held.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Whether this planner shares the fleet's jobs with others (see `orphan_after`).
    pub fn set_shared(&mut self, shared: bool) {
        self.orphan_after = shared.then(|| Duration::seconds(ORPHAN_AFTER_S));
    }

    /// In a planner that shares the fleet's jobs, about once a second: counts the capacity
    /// reserved for jobs whose turn has come as used — taken from the buckets and the plan as a
    /// request sent at the turn — since whichever worker takes the job sends it on this
    /// capacity without paying for it (see [`view_woken`](Self::view_woken)); and forgets such
    /// turns `orphan_after` past them (the job went elsewhere, was sent, or routed afresh,
    /// leaving the capacity unused: the safe side).
    pub fn sweep_orphans(&mut self, now: DateTime<Utc>) {
        let Some(after) = self.orphan_after else {
            return;
        };
        if now - self.swept_at < Duration::seconds(1) {
            return;
        }
        self.swept_at = now;
        let mut gone = Vec::new();
        for (k, r) in self.reservations.iter_mut() {
            if r.turn.at > now {
                continue;
            }
            if !r.paid {
                let Some(s) = self.providers.get_mut(&r.turn.provider) else {
                    continue;
                };
                s.plan.unreserve(r.pool, r.idx, &r.demand);
                if s.refusing(now) {
                    // Down or rate-limited: nobody can send the job on this turn; it plans
                    // afresh wherever it wakes, and the capacity is not counted as used.
                    gone.push(k.clone());
                    continue;
                }
                s.charge(&r.demand, r.turn.at, now);
                r.paid = true;
            }
            if r.turn.at + after < now {
                gone.push(k.clone());
            }
        }
        for k in gone {
            self.reservations.remove(&k);
        }
    }

    /// Drops pools that have ended, and reservations a quarter of an hour past their deadline:
    /// their jobs went to another worker or were lost, and must not hold capacity for ever.
    fn prune(&mut self, now: DateTime<Utc>) {
        self.pruned_at = now;
        let stale = minutes(now).floor() as i64 - 15;
        let gone: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.due < stale)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.cancel_reservation(&k);
        }
        let m = minutes(now).floor() as i64;
        for s in self.providers.values_mut() {
            s.plan.pools.retain(|_, p| p.start + p.len as i64 > m);
        }
    }
}

/// One job's view of the capacity, for [`crate::policy::plan`].
#[derive(Debug, Clone, Copy)]
pub struct JobView<'c> {
    cap: &'c Capacity,
    own: Option<&'c Reservation>,
    tokens: u64,
    now: DateTime<Utc>,
    /// Deferred by another planner of the fleet, its turn come (see [`Capacity::view_woken`]).
    woken: bool,
    /// The turn another planner of the fleet promised the job (see [`Capacity::view_woken`]).
    promised: Option<&'c Turn>,
}

impl JobView<'_> {
    /// The turn another planner promised the job, kept by this view.
    pub fn promised(&self) -> Option<&Turn> {
        self.promised
    }
}

impl CapacityView for JobView<'_> {
    fn excluded(&self, provider: &str) -> bool {
        self.cap
            .providers
            .get(provider)
            .is_none_or(|s| s.excluded(self.now))
    }

    fn turnaround(&self, provider: &str, model: &str) -> Option<Duration> {
        self.cap.turnaround(provider, model)
    }

    fn earliest(
        &self,
        provider: &str,
        from: DateTime<Utc>,
        by: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, Option<Busy>)> {
        let s = self.cap.providers.get(provider)?;
        let fresh = s.earliest(self.tokens, from, by, self.now);
        let promised = self.promised.filter(|t| t.provider == provider);
        let own = self
            .own
            .filter(|r| r.turn.provider == provider)
            .map(|r| (r.turn.at, false))
            .or(promised.map(|t| (t.at, true)));
        let Some((at, foreign)) = own else {
            if self.woken && self.own.is_none() {
                let head = s.head_of_queue(self.tokens, by, self.now);
                return match (head, fresh) {
                    (Some(h), Some(f)) => Some(if f.0 < h.0 { f } else { h }),
                    (h, f) => h.or(f),
                };
            }
            return fresh;
        };
        if at < from.max(self.now) - Duration::minutes(1) && at > self.now || at > by {
            return fresh;
        }
        let kept = if at > self.now {
            // Not its turn yet: keep the place (or take an earlier one that has come free).
            Some((at, Some(Busy::RateLimited)))
        } else if foreign {
            // Another planner's turn, come: its capacity is set aside there; the gates here
            // (circuit, blocks, requests in flight) are all that hold the job back.
            s.promised_gates(
                self.tokens,
                by.min(at + Duration::seconds(TURN_LATE_S)),
                self.now,
            )
        } else {
            // Its turn has come: only the gates and capacity already used hold it back. Behind
            // a backlog it queues afresh, so waiting jobs do not all wake at the same instant.
            s.head_of_queue(self.tokens, by, self.now)
        };
        match (kept, fresh) {
            (Some(k), Some(f)) => Some(if f.0 < k.0 { f } else { k }),
            (k, f) => k.or(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_shared_planner_drops_reservations_whose_job_went_elsewhere() {
        let catalog = Catalog::from_toml(
            "c.toml",
            r#"
[[providers]]
name = "p"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
limits = { rpm = 60 }
[[providers.models]]
model = "m"
id = "m"
input_per_mtok = 1.0
output_per_mtok = 1.0
"#,
        )
        .unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let at = t0 + Duration::minutes(2);
        let by = t0 + Duration::hours(1);
        for shared in [false, true] {
            let mut cap = Capacity::new(&catalog, t0);
            cap.set_shared(shared);
            cap.reserve("job-1", "p", 100, at, by, t0);
            // Its turn came and went, and the job never came back here.
            cap.sweep_orphans(at + Duration::seconds(ORPHAN_AFTER_S - 1));
            assert_eq!(
                cap.reservations(),
                1,
                "kept until {ORPHAN_AFTER_S}s past its turn"
            );
            cap.sweep_orphans(at + Duration::seconds(ORPHAN_AFTER_S + 1));
            // Alone, every deferred job comes back here: its place is kept.
            assert_eq!(cap.reservations(), usize::from(!shared), "shared: {shared}");
        }
    }
}
