//! One view of each provider's capacity across the fleet (docs/routing.md, "The fleet's
//! share"). A provider's limits belong to the account, so every worker plans with its share of
//! them: workers announce themselves on the broker's broadcast ([`queue::Queue::fleet`]: a
//! core-NATS subject, a RabbitMQ fanout exchange, a channel in local mode), each keeps the list
//! of members heard lately, and plans with `1 / members` of every rpm and tpm and an exact split
//! of every concurrency limit ([`router::FleetShare`]). Heartbeats also carry what a worker
//! found out about providers (an account out of credit, a rate-limit block), so the others do
//! not probe it again.
//!
//! A worker that joins says hello and every member answers at once, so it knows the fleet
//! within a round trip; one that stops says goodbye; one that dies (SIGKILL) is forgotten after
//! `missed` heartbeats. A worker that cannot hear its own heartbeats (the broker is unreachable)
//! plans as one of twice the members it last knew — the others will have divided its share
//! among themselves — and never with the whole limits.

use crate::runner::Worker;
use bytes::Bytes;
use chrono::Utc;
use queue::{FleetChannel, Queue};
use router::{FleetShare, SharedFault};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How the fleet's members find each other (`[worker.fleet]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Seconds between heartbeats.
    pub heartbeat_s: f64,
    /// A member not heard for this many heartbeats is taken as gone.
    pub missed: u32,
    /// Until a worker has heard the fleet, it plans as one of this many.
    pub fallback_members: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            heartbeat_s: 2.0,
            missed: 3,
            fallback_members: 4,
        }
    }
}

impl FleetConfig {
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_s.max(0.05))
    }

    fn ttl(&self) -> Duration {
        self.interval() * self.missed.max(1)
    }
}

/// What a worker says on the broadcast.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Beat {
    /// Always `"offpeak-fleet"`: other traffic on the subject is ignored.
    kind: String,
    /// The worker's id and the instance of the process: two workers started with the same id
    /// (the host's name, by default) are still two members.
    id: String,
    instance: u64,
    state: BeatState,
    #[serde(default)]
    findings: Vec<SharedFault>,
    /// How long the member had been up when it said this (ms): a fleet that starts together
    /// shares the accounts' burst, a worker joining a running one does not.
    #[serde(default)]
    up_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BeatState {
    /// Just joined: everyone answers at once.
    Hello,
    Up,
    /// Stopping: forget me now.
    Leaving,
}

const KIND: &str = "offpeak-fleet";

/// How long a joining worker listens for the members' answers before routing its first job.
const SETTLE: Duration = Duration::from_millis(300);

/// Members up no longer than this when a worker joins started with it: the fleet starts
/// together, and its members split the accounts' burst instead of dropping it.
const TOGETHER: Duration = Duration::from_secs(2);

/// How a member is told apart: its id, then its process instance.
fn member(id: &str, instance: u64) -> String {
    format!("{id}#{instance:016x}")
}

/// The members a worker has heard, and the share it plans with.
struct View {
    me: String,
    /// This process's instance (part of `me`).
    instance: u64,
    peers: HashMap<String, Instant>,
    /// When this worker last heard its own heartbeat (the broadcast works).
    echo: Option<Instant>,
    /// Members counted when the broadcast last worked.
    known: u32,
    /// Whether the first listening after joining is over.
    joined: bool,
    /// Whether a member heard so far started more than [`TOGETHER`] before this worker (or did
    /// not say when it started).
    running_fleet: bool,
    /// When this worker started keeping in step.
    up: Instant,
}

impl View {
    /// This worker's share now: among the members heard lately; while its own heartbeats do not
    /// come back, as one of twice the members it last knew (at least the fallback).
    fn share(&mut self, cfg: &FleetConfig) -> FleetShare {
        let ttl = cfg.ttl();
        self.peers.retain(|_, seen| seen.elapsed() < ttl);
        let mut ids: Vec<&str> = self.peers.keys().map(String::as_str).collect();
        ids.push(&self.me);
        ids.sort_unstable();
        let rank = ids.iter().position(|i| *i == self.me).unwrap_or(0) as u32;
        let members = ids.len() as u32;
        match self.echo {
            Some(t) if t.elapsed() < ttl => {
                self.known = members;
                FleetShare::new(members, rank)
            }
            Some(_) => FleetShare::new((2 * self.known).max(cfg.fallback_members), rank),
            None => FleetShare::new(members.max(cfg.fallback_members), rank),
        }
    }
}

/// Keeps `worker`'s share of the providers' limits in step with the fleet heard on `queue`,
/// until `stop`; then says goodbye. Returns at once if the backend has no broadcast (the worker
/// then plans with the whole limits, alone by construction).
/// `joined` is notified once the worker knows the fleet (or gave up learning it), so the
/// caller can hold its first jobs until their routing counts on the right share.
pub(crate) async fn keep_in_step(
    worker: Arc<Worker>,
    queue: Arc<dyn Queue>,
    stop: CancellationToken,
    joined: Arc<tokio::sync::Notify>,
) {
    let cfg = worker.cfg.fleet.clone();
    let instance: u64 = rand::random();
    let mut view = View {
        me: member(&worker.id, instance),
        instance,
        peers: HashMap::new(),
        echo: None,
        known: 1,
        joined: false,
        running_fleet: false,
        up: Instant::now(),
    };
    let apply = |view: &mut View| {
        let share = view.share(&cfg);
        worker.router.set_fleet(share);
        worker.stats.fleet_members.set(u64::from(share.members));
    };
    apply(&mut view);
    let mut failures = 0u32;
    loop {
        let ch = tokio::select! {
            _ = stop.cancelled() => return,
            ch = queue.fleet() => ch,
        };
        let ch = match ch {
            Ok(Some(ch)) => ch,
            Ok(None) => {
                worker.router.set_fleet(FleetShare::default());
                joined.notify_one();
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(worker = %view.me, error = %e, "cannot join the fleet's broadcast; planning with a safe share of the providers' limits");
                }
                if !view.joined {
                    // Others may be using the accounts: no burst.
                    view.joined = true;
                    worker.router.start_empty(Utc::now());
                    joined.notify_one();
                }
                apply(&mut view);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(cfg.interval()) => continue,
                }
            }
        };
        failures = 0;
        if talk(&worker, &cfg, &mut view, ch, &stop, &apply, &joined).await {
            return;
        }
    }
}

/// Heartbeats on one joined channel. Returns true when stopped, false when the channel broke.
async fn talk(
    worker: &Worker,
    cfg: &FleetConfig,
    view: &mut View,
    mut ch: FleetChannel,
    stop: &CancellationToken,
    apply: &impl Fn(&mut View),
    joined: &tokio::sync::Notify,
) -> bool {
    let (id, instance) = (worker.id.clone(), view.instance);
    let up = view.up;
    let say = |state: BeatState| {
        let beat = Beat {
            kind: KIND.into(),
            id: id.clone(),
            instance,
            state,
            findings: worker.router.findings(Utc::now()),
            up_ms: Some(up.elapsed().as_millis() as u64),
        };
        Bytes::from(serde_json::to_vec(&beat).unwrap_or_default())
    };
    if ch.sender.send(say(BeatState::Hello)).await.is_err() {
        return false;
    }
    let mut tick = tokio::time::interval(cfg.interval());
    tick.tick().await;
    // The members answer a hello at once: listen that long before the first jobs are routed.
    let settle = tokio::time::sleep(SETTLE);
    tokio::pin!(settle);
    loop {
        tokio::select! {
            _ = &mut settle, if !view.joined => {
                view.joined = true;
                if view.running_fleet || view.echo.is_none() {
                    // Others have been using the accounts (or the fleet is not heard): how much
                    // of their burst is left is unknown, so pace from empty buckets. Members
                    // that started with this one have used none of it: each plans with its
                    // share of it, as of the limits.
                    worker.router.start_empty(Utc::now());
                }
                apply(view);
                joined.notify_one();
            }
            _ = stop.cancelled() => {
                let _ = ch.sender.send(say(BeatState::Leaving)).await;
                return true;
            }
            _ = tick.tick() => {
                apply(view);
                if let Err(e) = ch.sender.send(say(BeatState::Up)).await {
                    tracing::debug!(worker = %view.me, error = %e, "heartbeat not sent");
                    return false;
                }
            }
            msg = ch.listener.next() => {
                let Ok(Some(msg)) = msg else { return false };
                let Ok(beat) = serde_json::from_slice::<Beat>(&msg) else { continue };
                if beat.kind != KIND {
                    continue;
                }
                let who = member(&beat.id, beat.instance);
                if who == view.me {
                    let first = view.echo.is_none_or(|t| t.elapsed() >= cfg.ttl());
                    view.echo = Some(Instant::now());
                    if first {
                        apply(view);
                    }
                    continue;
                }
                worker.router.apply_findings(&beat.findings, Utc::now());
                let before_me = beat
                    .up_ms
                    .is_none_or(|ms| Duration::from_millis(ms) > up.elapsed() + TOGETHER);
                if !view.joined && before_me {
                    view.running_fleet = true;
                }
                match beat.state {
                    BeatState::Leaving => {
                        view.peers.remove(&who);
                        apply(view);
                    }
                    state => {
                        if view.peers.insert(who, Instant::now()).is_none() {
                            apply(view);
                        }
                        if state == BeatState::Hello {
                            // A newcomer learns of everyone at once.
                            let _ = ch.sender.send(say(BeatState::Up)).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_counts_live_members_and_falls_back_safely() {
        let cfg = FleetConfig {
            heartbeat_s: 0.05,
            missed: 2,
            fallback_members: 4,
        };
        let mut v = View {
            me: "b".into(),
            instance: 0,
            peers: HashMap::new(),
            echo: None,
            known: 1,
            joined: true,
            running_fleet: false,
            up: Instant::now(),
        };
        // Not heard the fleet yet: the fallback.
        assert_eq!(v.share(&cfg).members, 4);
        v.echo = Some(Instant::now());
        v.peers.insert("a".into(), Instant::now());
        v.peers.insert("c".into(), Instant::now());
        assert_eq!(v.share(&cfg), FleetShare::new(3, 1));
        // Cut off: own heartbeats stop coming back and the peers age out — never the whole
        // limits, but one of twice the members last known.
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(v.share(&cfg).members, 6);
        // Heard again, alone now: the whole limits.
        v.echo = Some(Instant::now());
        assert_eq!(v.share(&cfg), FleetShare::new(1, 0));
    }
}
