//! Job-file readers (JSONL, OpenAI Batch JSONL, Parquet), whole-file validation, publishing and the run manifest.
//!
//! The reading side is synchronous (plain file I/O, no broker): call it from `spawn_blocking` in
//! async code. It validates the whole file before anything is published (DESIGN §2).

pub mod error;
pub mod manifest;
mod parquet_rows;
pub mod publish;
pub mod read;
pub mod report;

pub use error::ProducerError;
pub use manifest::{sha256_file, Manifest, MANIFEST_FILE, OFFPEAK_VERSION};
pub use read::{read_job_file, InputFormat, ReadOptions};
pub use report::{write_rejects, RejectedLine, ValidationReport};
