//! The jobs this worker stored a row for recently (issue #17): a message that comes back for
//! one of them — a re-submission on a broker without de-duplication, or a redelivery after the
//! row was stored but before the ack landed — is acknowledged without calling a provider again
//! and without a new row. Bounded: the oldest ids are forgotten first, so memory does not grow
//! with the runs a worker serves; a job forgotten (or stored by another worker) is processed
//! again as before, and readers keep one row per job.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// Ids remembered by default: about 3 MB of 64-bit hashes and their order.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A bounded set of (run id, job id), oldest forgotten first. Kept as 64-bit hashes (of this
/// process's hasher): a false match needs two ids among the last `capacity` to collide.
#[derive(Debug)]
pub struct RecentlyStored {
    capacity: usize,
    ids: Mutex<(HashSet<u64>, VecDeque<u64>)>,
}

impl Default for RecentlyStored {
    fn default() -> Self {
        RecentlyStored::new(DEFAULT_CAPACITY)
    }
}

impl RecentlyStored {
    /// Remembers at most `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        RecentlyStored {
            capacity: capacity.max(1),
            ids: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    fn key(run_id: &str, job_id: &str) -> u64 {
        let mut h = DefaultHasher::new();
        (run_id, job_id).hash(&mut h);
        h.finish()
    }

    /// Records that a row of `job_id` in `run_id` is stored.
    pub fn insert(&self, run_id: &str, job_id: &str) {
        let key = Self::key(run_id, job_id);
        let Ok(mut ids) = self.ids.lock() else { return };
        let (set, order) = &mut *ids;
        if set.insert(key) {
            order.push_back(key);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// Whether a row of `job_id` in `run_id` was stored by this worker (and not forgotten).
    pub fn contains(&self, run_id: &str, job_id: &str) -> bool {
        let key = Self::key(run_id, job_id);
        self.ids.lock().is_ok_and(|ids| ids.0.contains(&key))
    }
}
