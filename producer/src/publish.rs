//! Publishing validated jobs: one message per job, many confirmations outstanding at once but a
//! bounded number (back-pressure: a slow broker slows the producer instead of growing memory).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use queue::{Queue, QueueError};
use schemas::{Catalog, Envelope, Job, RunId, SigningKey};

/// Publishes `jobs` for `run_id`, `in_flight` unconfirmed at most, calling `progress` with the
/// count confirmed so far. Each envelope records the cheapest expected cost at submission, and
/// is signed with `key` when there is one.
#[allow(clippy::too_many_arguments)]
pub async fn publish_jobs(
    queue: &dyn Queue,
    run_id: &RunId,
    jobs: impl IntoIterator<Item = Job>,
    submitted_at: DateTime<Utc>,
    catalog: &Catalog,
    in_flight: usize,
    key: Option<&SigningKey>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, QueueError> {
    publish_stream(
        queue,
        run_id,
        stream::iter(jobs),
        submitted_at,
        catalog,
        in_flight,
        key,
        progress,
    )
    .await
}

/// Like [`publish_jobs`], from a stream of jobs (such as the receiver of
/// [`crate::stream::spawn_job_reader`]): the jobs are taken only as fast as the broker confirms
/// them, so memory stays bounded by `in_flight` whatever the stream's length.
#[allow(clippy::too_many_arguments)]
pub async fn publish_stream(
    queue: &dyn Queue,
    run_id: &RunId,
    jobs: impl Stream<Item = Job>,
    submitted_at: DateTime<Utc>,
    catalog: &Catalog,
    in_flight: usize,
    key: Option<&SigningKey>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, QueueError> {
    publish_numbered(
        queue,
        run_id,
        jobs.zip(stream::iter(0u64..)).map(|(job, seq)| (seq, job)),
        submitted_at,
        catalog,
        in_flight,
        key,
        &|_, n| progress(n),
    )
    .await
}

/// Like [`publish_stream`], for jobs numbered by the caller (their place in the file):
/// `confirmed(seq, n)` is called once the broker confirmed job `seq`, `n` being the count
/// confirmed so far. Confirmations may come in any order while several are in flight.
#[allow(clippy::too_many_arguments)]
pub async fn publish_numbered(
    queue: &dyn Queue,
    run_id: &RunId,
    jobs: impl Stream<Item = (u64, Job)>,
    submitted_at: DateTime<Utc>,
    catalog: &Catalog,
    in_flight: usize,
    key: Option<&SigningKey>,
    confirmed: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, QueueError> {
    let done = std::sync::atomic::AtomicU64::new(0);
    jobs.map(|(seq, job)| {
        let mut env = Envelope::new(run_id.clone(), submitted_at, job);
        env.cheapest_at_submit_usd = catalog
            .cheapest_expected_cost(&env.job, submitted_at)
            .map(|u| u.0);
        Ok::<_, QueueError>((seq, env))
    })
    .try_for_each_concurrent(in_flight.max(1), |(seq, env)| {
        let done = &done;
        async move {
            let payload = Bytes::from(SigningKey::sign_with(key, env.to_bytes()));
            queue
                .publish(run_id.as_str(), &env.dedup_id(), payload)
                .await?;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            confirmed(seq, n);
            Ok(())
        }
    })
    .await?;
    Ok(done.into_inner())
}
