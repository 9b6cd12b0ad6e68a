//! The in-process queue of local mode: the same contract as the brokers — bounded in-flight,
//! deferral with a delay, redelivery of anything dropped unsettled, a dead-letter list — kept in
//! one process's memory, so `offpeak run` needs no servers.

pub use crate::DeadLetter;

use crate::{
    Broadcast, ConsumeOptions, Consumer, Delivery, FleetChannel, Listener, Queue, QueueError,
    RunDeadLetters, Settle,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

#[derive(Default)]
struct State {
    /// Messages waiting, ordered by the instant they become visible, then by arrival.
    ready: BinaryHeap<Reverse<(Instant, u64)>>,
    messages: HashMap<u64, Message>,
    in_flight: usize,
    dedup: HashSet<String>,
    /// Dead letters with the run each message was published for.
    dead: Vec<(Arc<str>, DeadLetter)>,
    next_seq: u64,
    closed: bool,
}

struct Message {
    run_id: Arc<str>,
    payload: Bytes,
    delivered: u32,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    /// The fleet's broadcast among the workers of this process.
    fleet: tokio::sync::broadcast::Sender<Bytes>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind, still consistent enough to
        // carry on; poisoning would only turn one failure into many.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, at: Instant, seq: u64, msg: Message) {
        let mut s = self.lock();
        s.messages.insert(seq, msg);
        s.ready.push(Reverse((at, seq)));
        drop(s);
        self.changed.notify_waiters();
    }
}

/// The in-process queue. Cloning gives another handle to the same queue.
#[derive(Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryQueue")
    }
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    pub fn new() -> Self {
        MemoryQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                fleet: tokio::sync::broadcast::channel(1024).0,
            }),
        }
    }

    /// Messages not yet settled for good: waiting, deferred or in flight.
    pub fn outstanding(&self) -> usize {
        let s = self.shared.lock();
        s.messages.len() + s.in_flight
    }

    /// Waits until every message published so far is settled (acked or dead-lettered).
    pub async fn drained(&self) {
        loop {
            let notified = self.shared.changed.notified();
            if self.outstanding() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Stops handing out messages: consumers see the end of the stream once nothing is left to
    /// hand them.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_waiters();
    }

    /// The dead letters so far.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared
            .lock()
            .dead
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn fleet(&self) -> Result<Option<FleetChannel>, QueueError> {
        let tx = self.shared.fleet.clone();
        Ok(Some(FleetChannel {
            listener: Box::new(MemoryListener(tx.subscribe())),
            sender: Arc::new(MemorySender(tx)),
        }))
    }

    async fn publish(
        &self,
        run_id: &str,
        dedup_id: &str,
        payload: Bytes,
    ) -> Result<(), QueueError> {
        let seq = {
            let mut s = self.shared.lock();
            if s.closed {
                return Err(QueueError::Closed);
            }
            if !s.dedup.insert(dedup_id.to_string()) {
                return Ok(());
            }
            s.next_seq += 1;
            s.next_seq
        };
        self.shared.enqueue(
            Instant::now(),
            seq,
            Message {
                run_id: run_id.into(),
                payload,
                delivered: 0,
            },
        );
        Ok(())
    }

    async fn consume(&self, opts: ConsumeOptions) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(MemoryConsumer {
            shared: self.shared.clone(),
            permits: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
        }))
    }

    /// Counts waiting, deferred and in-flight messages, like [`MemoryQueue::outstanding`].
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        Ok(Some(self.outstanding() as u64))
    }

    /// The dead letters of messages published for `run_id`.
    async fn run_dead_letters(
        &self,
        run_id: &str,
        max: usize,
    ) -> Result<Option<RunDeadLetters>, QueueError> {
        let s = self.shared.lock();
        let mine = s.dead.iter().filter(|(r, _)| &**r == run_id);
        let total = mine.clone().count() as u64;
        let letters = mine.take(max).map(|(_, d)| d.clone()).collect();
        Ok(Some(RunDeadLetters::Run { letters, total }))
    }
}

struct MemoryConsumer {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
}

enum Poll {
    Got(u64, Message),
    WaitUntil(Option<Instant>),
    Closed,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, QueueError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Closed)?;
        loop {
            let notified = self.shared.changed.notified();
            let poll = {
                let mut s = self.shared.lock();
                let now = Instant::now();
                match s.ready.peek() {
                    Some(Reverse((at, seq))) if *at <= now => {
                        let seq = *seq;
                        s.ready.pop();
                        match s.messages.remove(&seq) {
                            Some(m) => {
                                s.in_flight += 1;
                                Poll::Got(seq, m)
                            }
                            None => Poll::WaitUntil(Some(now)),
                        }
                    }
                    Some(Reverse((at, _))) => Poll::WaitUntil(Some(*at)),
                    None if s.closed => Poll::Closed,
                    None => Poll::WaitUntil(None),
                }
            };
            match poll {
                Poll::Got(seq, mut m) => {
                    m.delivered += 1;
                    let handle = MemorySettle {
                        shared: self.shared.clone(),
                        run_id: m.run_id.clone(),
                        seq,
                        payload: m.payload.clone(),
                        delivered: m.delivered,
                        settled: Mutex::new(Some(permit)),
                    };
                    return Ok(Some(Delivery::new(
                        m.payload,
                        m.delivered,
                        Box::new(handle),
                    )));
                }
                Poll::Closed => return Ok(None),
                Poll::WaitUntil(Some(at)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                Poll::WaitUntil(None) => notified.await,
            }
        }
    }
}

/// Settles one in-process delivery; dropped unsettled, it puts the message back (as a broker
/// redelivers after a crashed consumer's ack wait).
struct MemorySettle {
    shared: Arc<Shared>,
    run_id: Arc<str>,
    seq: u64,
    payload: Bytes,
    delivered: u32,
    settled: Mutex<Option<OwnedSemaphorePermit>>,
}

impl MemorySettle {
    /// Marks the delivery settled; false if it already was.
    fn settle(&self) -> bool {
        let permit = self
            .settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if permit.is_none() {
            return false;
        }
        self.shared.lock().in_flight -= 1;
        true
    }

    fn requeue(&self, delay: Duration, payload: Bytes) -> Result<(), QueueError> {
        if !self.settle() {
            return Err(already_settled());
        }
        let msg = Message {
            run_id: self.run_id.clone(),
            payload,
            delivered: self.delivered,
        };
        self.shared.enqueue(Instant::now() + delay, self.seq, msg);
        Ok(())
    }
}

fn already_settled() -> QueueError {
    QueueError::Backend {
        backend: "memory",
        message: "delivery already settled".into(),
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(&self) -> Result<(), QueueError> {
        if !self.settle() {
            return Err(already_settled());
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn defer(&self, delay: Duration, payload: Bytes) -> Result<(), QueueError> {
        self.requeue(delay, payload)
    }

    async fn release(&self) -> Result<(), QueueError> {
        self.requeue(Duration::ZERO, self.payload.clone())
    }

    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), QueueError> {
        if !self.settle() {
            return Err(already_settled());
        }
        // One bounded line, as the brokers keep it (their reason travels in a header).
        let letter = DeadLetter {
            payload,
            reason: crate::slot::header_text(reason),
        };
        self.shared.lock().dead.push((self.run_id.clone(), letter));
        self.shared.changed.notify_waiters();
        Ok(())
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if self.settle() {
            let msg = Message {
                run_id: self.run_id.clone(),
                payload: self.payload.clone(),
                delivered: self.delivered,
            };
            self.shared.enqueue(Instant::now(), self.seq, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn duplicate_publish_is_dropped_and_unsettled_delivery_comes_back() {
        let q = MemoryQueue::new();
        q.publish("r", "r/a", Bytes::from_static(b"a"))
            .await
            .unwrap();
        q.publish("r", "r/a", Bytes::from_static(b"a"))
            .await
            .unwrap();
        assert_eq!(q.outstanding(), 1);
        let mut c = q.consume(ConsumeOptions::default()).await.unwrap();
        drop(next(&mut c).await);
        let again = next(&mut c).await;
        assert_eq!(again.delivered, 2);
        again.dead_letter("bad").await.unwrap();
        assert_eq!(q.dead_letters().len(), 1);
        match q.run_dead_letters("r", 10).await.unwrap() {
            Some(RunDeadLetters::Run { letters, total }) => {
                assert_eq!((letters.len(), total), (1, 1));
                assert_eq!(letters[0].reason, "bad");
            }
            other => panic!("{other:?}"),
        }
        match q.run_dead_letters("other", 10).await.unwrap() {
            Some(RunDeadLetters::Run { letters, total }) => {
                assert!(letters.is_empty() && total == 0)
            }
            other => panic!("{other:?}"),
        }
        q.close();
        assert!(c.next().await.unwrap().is_none());
        q.drained().await;
    }
}

struct MemorySender(tokio::sync::broadcast::Sender<Bytes>);

#[async_trait]
impl Broadcast for MemorySender {
    async fn send(&self, msg: Bytes) -> Result<(), QueueError> {
        // No listener is not an error: nobody is there to hear it.
        let _ = self.0.send(msg);
        Ok(())
    }
}

struct MemoryListener(tokio::sync::broadcast::Receiver<Bytes>);

#[async_trait]
impl Listener for MemoryListener {
    async fn next(&mut self) -> Result<Option<Bytes>, QueueError> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.0.recv().await {
                Ok(m) => return Ok(Some(m)),
                // Missed some: heartbeats repeat, carry on with the next.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }
}
