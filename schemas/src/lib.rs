//! offpeak's shared vocabulary: the job a user submits, the envelope it travels in, the provider
//! catalog, and the result row written to Parquet. Everything here is pure data plus parsing and
//! validation; no crate-level I/O, so every other crate can depend on it cheaply.

pub mod catalog;
pub mod ids;
pub mod job;
pub mod money;
pub mod result;
pub mod wire;

pub use catalog::{
    Catalog, CatalogError, Limits, ModelOffer, PriceWindow, ProviderKind, ProviderSpec,
};
pub use ids::{JobId, RunId};
pub use job::{ChatMessage, Job, JobDefaults, JobError, JobParser, Priority};
pub use money::Usd;
pub use result::{ResultRow, ResultStatus};
pub use wire::{Envelope, SCHEMA_VERSION};
