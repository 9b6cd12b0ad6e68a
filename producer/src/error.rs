//! The producer's errors: every variant names the file it concerns, so a message printed on its
//! own tells the user where to look. Errors about single job lines are not here: they are
//! [`schemas::JobError`]s collected in a [`crate::ValidationReport`].

use std::path::PathBuf;

/// Why reading a job file, writing a rejects file or handling a manifest failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The file could not be opened, read, written or renamed.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file concerned.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading failed part-way through a JSONL file; `line` is the line being read.
    #[error("{}:{line}: read error: {source}", file.display())]
    ReadAt {
        /// The file concerned.
        file: PathBuf,
        /// 1-based number of the line that could not be read.
        line: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet file is not readable: not Parquet, corrupt, or a column type offpeak cannot
    /// turn into JSON.
    #[error("{}: cannot read Parquet: {reason}", file.display())]
    Parquet {
        /// The file concerned.
        file: PathBuf,
        /// What went wrong, including the rows concerned when known.
        reason: String,
    },
    /// The file holds more valid jobs than [`crate::ReadOptions::max_jobs`] allows; reading stopped
    /// at the first job over the limit.
    #[error("{}: more than {limit} jobs (the limit); split the file or raise the limit", file.display())]
    TooManyJobs {
        /// The file concerned.
        file: PathBuf,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The file read differently in the publishing pass than in the validating pass before it
    /// (it was modified in between); what was published up to then stays published.
    #[error("{}: the file changed while it was being submitted: {reason}", file.display())]
    Changed {
        /// The file concerned.
        file: PathBuf,
        /// What differs.
        reason: String,
    },
    /// A run manifest exists but is not a valid manifest.
    #[error("{}: invalid run manifest: {reason}", file.display())]
    Manifest {
        /// The manifest file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An `s3://` location is malformed, or the object store could not be reached or refused
    /// the request.
    #[error("{location}: {reason}")]
    S3 {
        /// The location as the user gave it (`s3://bucket/key`).
        location: String,
        /// What went wrong, with the store's error code and message when it answered.
        reason: String,
    },
    /// A run id that cannot name a `run=<run_id>` directory.
    #[error("{reason}")]
    InvalidRunId {
        /// Why it was refused (names the run id).
        reason: String,
    },
}

impl ProducerError {
    pub(crate) fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ProducerError::Io {
            file: file.into(),
            source,
        }
    }
}

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
