//! Results and run metadata in one place (DESIGN §6): where a run's files live
//! ([`ResultSink`]: a local directory or S3, with the one S3 client configuration offpeak uses),
//! the Parquet codec of result files, reading a run back with de-duplication by `job_id`, and the
//! run manifest. `run`, `submit`, `worker`, `status` and `results` all go through this crate.
//!
//! - [`sink`]: the seam and the local directory; [`s3`]: the S3 sink; [`s3_config`]: locations
//!   and client settings (endpoint, path style, TLS, retries).
//! - [`codec`]: rows ⇄ Parquet.
//! - [`run`]: a run's rows (de-duplicated) and its manifest, read back.
//! - [`manifest`]: what a run was submitted with.

pub mod codec;
pub mod jobs;
pub mod manifest;
pub mod run;
pub mod s3;
pub mod s3_config;
pub mod sink;

pub use codec::{decode_parquet, encode_parquet};
pub use jobs::{own_rows, read_job_ids, read_own_rows, write_job_ids, JOBS_FILE};
pub use manifest::{Manifest, MANIFEST_FILE, OFFPEAK_VERSION};
pub use run::{
    dedup, is_result_file, read_manifest, read_run, scan_own_rows, write_manifest, RunReader,
};
pub use s3::S3Sink;
pub use s3_config::{describe_sdk_error, is_s3_location, S3Config, S3Url};
pub use sink::{open_sink, probe, LocalDirSink, ResultSink, SinkError, PROBE_RUN};

use std::path::PathBuf;

/// Why a run's metadata could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A local file could not be read, written or renamed.
    #[error("{}", file.display())]
    Io {
        /// The file concerned.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A run manifest exists but is not a valid manifest.
    #[error("{}: invalid run manifest: {reason}", file.display())]
    Manifest {
        /// The manifest file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A run's job list exists but cannot be read.
    #[error("{file}: invalid job list: {reason}")]
    JobList {
        /// The job list's location.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The run id cannot name a run's directory.
    #[error("{reason}")]
    InvalidRunId {
        /// Why it was refused (names the run id).
        reason: String,
    },
    /// The results location refused or failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl StoreError {
    pub(crate) fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            file: file.into(),
            source,
        }
    }
}
