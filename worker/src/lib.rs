//! The worker (DESIGN §5–§7): provider clients, the job loop around the [`router::Router`], and
//! the flusher that writes result files through a [`store::ResultSink`] and settles their
//! messages only after (ack-after-durable-write).

pub mod batch;
pub mod fleet;
pub mod flush;
pub mod lifecycle;
pub mod prefix;
pub mod provider;
pub mod recent;
pub mod runner;
pub mod stats;
pub mod throttle;

pub use runner::{Worker, WorkerConfig};
