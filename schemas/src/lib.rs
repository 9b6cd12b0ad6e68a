//! offpeak's shared vocabulary: the job a user submits, the envelope it travels in, the provider
//! catalog, and the result row written to Parquet. Everything here is pure data plus parsing and
//! validation; no crate-level I/O, so every other crate can depend on it cheaply.

pub mod catalog;
pub mod ids;
pub mod job;
pub mod money;
pub mod result;
pub mod schedule;
pub mod signing;
pub mod wire;

pub use catalog::{
    BatchOffer, CachePrice, CachePrices, Catalog, CatalogError, Days, FlexOffer, Limits,
    ModelOffer, PriceChange, PriceWindow, ProviderKind, ProviderSpec, Route, TokenUsage, Zone,
};
pub use ids::{JobId, RunId};
pub use job::{ChatMessage, Job, JobDefaults, JobError, JobParser, Priority};
pub use money::Usd;
pub use result::{ResultRow, ResultStatus};
pub use signing::{SignatureError, SigningKey};
pub use wire::{Envelope, Turn, SCHEMA_VERSION};

/// An error and its causes, `: `-separated (`dispatch failure: io error: … Connection refused`):
/// the top-level message of many client errors ("error sending request") leaves out what went
/// wrong underneath.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Many layers repeat their cause's text (thiserror's `"{file}: {source}"` with
        // `#[source]`); once is enough.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The size of `v` as JSON, counted without building the text.
pub fn json_size(v: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}
