//! The run manifest, `run=<run_id>/_manifest.json` (DESIGN §6): what was submitted, from which
//! file, with which catalog. `offpeak status` compares the results against it.

use crate::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a run's directory.
pub const MANIFEST_FILE: &str = "_manifest.json";

/// This build's version, for [`Manifest::offpeak_version`].
pub const OFFPEAK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a run was submitted with; written once by the producer, read by `offpeak status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run (ASCII letters, digits, `-`, `_`).
    pub run_id: String,
    /// Jobs enqueued for the run.
    pub job_count: u64,
    /// The job file as the user named it.
    pub input_file: String,
    /// Lower-case hex SHA-256 of the job file's bytes.
    pub input_sha256: String,
    /// When the run was submitted.
    pub submitted_at: DateTime<Utc>,
    /// The provider catalog at submission, so later price changes do not rewrite history.
    pub catalog: serde_json::Value,
    /// The offpeak version that submitted the run.
    pub offpeak_version: String,
    /// When every job of the run had been confirmed by the broker; absent while publishing (or
    /// if the producer died before the end, so a re-submission publishes again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
}

impl Manifest {
    /// The manifest's key relative to the output root: `run=<run_id>/_manifest.json` (for object
    /// stores). Fails on a run id that is not a safe path component.
    pub fn relative_path(run_id: &str) -> Result<String, StoreError> {
        let run_id =
            schemas::RunId::new(run_id).map_err(|reason| StoreError::InvalidRunId { reason })?;
        Ok(format!("run={run_id}/{MANIFEST_FILE}"))
    }

    /// The manifest's path under a local output directory: `<out_dir>/run=<run_id>/_manifest.json`.
    pub fn local_path(out_dir: &Path, run_id: &str) -> Result<PathBuf, StoreError> {
        Ok(out_dir.join(Self::relative_path(run_id)?))
    }

    /// The manifest as pretty-printed JSON, as it is stored.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a stored manifest; `file` only names the source in the error.
    pub fn from_json(file: &Path, bytes: &[u8]) -> Result<Manifest, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Manifest {
            file: file.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Writes `<out_dir>/run=<run_id>/_manifest.json`, creating the directories. Atomic: the
    /// JSON goes to a temporary file in the same directory, is synced, and is renamed over the
    /// manifest, so readers see the old manifest or the new one, never a partial one.
    pub fn write_local(&self, out_dir: &Path) -> Result<PathBuf, StoreError> {
        let path = Self::local_path(out_dir, &self.run_id)?;
        let dir = path.parent().unwrap_or(out_dir);
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let tmp = dir.join(format!(".{MANIFEST_FILE}.{}.tmp", std::process::id()));
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&self.to_json())?;
                f.sync_all()
            })
            .map_err(|e| StoreError::io(&tmp, e))
            .and_then(|()| fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e)));
        if let Err(e) = written {
            // Best effort: the temporary file is ours and useless now; the error above matters.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable.
        #[cfg(unix)]
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(dir, e))?;
        Ok(path)
    }

    /// Reads `<out_dir>/run=<run_id>/_manifest.json`: `Ok(None)` when the run has no manifest,
    /// an error when it cannot be read or is not a manifest.
    pub fn read_local(out_dir: &Path, run_id: &str) -> Result<Option<Manifest>, StoreError> {
        let path = Self::local_path(out_dir, run_id)?;
        match fs::read(&path) {
            Ok(bytes) => Self::from_json(&path, &bytes).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}
