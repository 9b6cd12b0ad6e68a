//! The worker (DESIGN §5–§7): provider clients, the job loop around the [`router::Router`], the
//! Parquet results sink, and the flusher that ties them to a queue with ack-after-durable-write.

pub mod flush;
pub mod provider;
pub mod runner;
pub mod s3;
pub mod sink;
pub mod stats;

pub use runner::{Worker, WorkerConfig};
pub use sink::{LocalDirSink, ResultSink};
