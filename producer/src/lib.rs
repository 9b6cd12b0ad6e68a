//! Job-file readers (JSONL, OpenAI Batch JSONL, Parquet), whole-file validation, publishing and the run manifest.
//!
//! The reading side is synchronous (plain file I/O, no broker): call it from `spawn_blocking` in
//! async code. It validates the whole file before anything is published (DESIGN §2):
//! [`read_job_file`] keeps every job in memory (small files, tests), the [`stream`] module
//! validates and then publishes in two passes whose memory does not grow with the file. Job files
//! may also be `s3://` objects: [`fetch_input`] downloads one to a temporary file first. The S3
//! client configuration and the run manifest are the `store` crate's.

pub mod checkpoint;
pub mod error;
pub mod input;
mod parquet_rows;
pub mod publish;
pub mod read;
pub mod report;
mod spill;
pub mod stream;
pub mod submission;

pub use checkpoint::{PublishCheckpoint, CHECKPOINT_FILE};
pub use error::ProducerError;
pub use input::sha256_file;
pub use input::{fetch_input, fetch_s3_input, InputFile};
pub use read::{read_job_file, read_job_file_named, InputFormat, ReadOptions};
pub use report::{write_rejected_lines, write_rejects, RejectedLine, ValidationReport};
pub use stream::{ScanReport, Selection};
pub use submission::{check_file, CheckedFile, Submission, SubmissionError, REJECTS_FILE};
