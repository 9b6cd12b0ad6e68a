//! The worker (DESIGN §5–§7): provider clients, the cost-first router and its deferral policy,
//! per-provider capacity (rate limits, circuit breakers), the Parquet results sink, and the loop
//! that ties them to a queue with ack-after-durable-write.

pub mod capacity;
pub mod flush;
pub mod market;
pub mod policy;
pub mod provider;
pub mod runner;
pub mod s3;
pub mod sink;
pub mod stats;

pub use runner::{Worker, WorkerConfig};
pub use sink::{LocalDirSink, ResultSink};
