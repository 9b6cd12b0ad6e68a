//! Where a run's files live (DESIGN §6): the [`ResultSink`] seam — put, list, get under
//! `run=<run_id>/` — and its local-directory implementation. A worker writes one Parquet file
//! per flush through it and settles the messages behind those rows only after the put returns:
//! the end-to-end acknowledgement that makes a worker crash lose nothing.

use async_trait::async_trait;
use std::path::{Path, PathBuf};

/// A failure to store or read result files.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(String),
    #[error("{0}")]
    Store(String),
    /// The store answered and refused: a wrong or revoked secret, a missing bucket, a denied
    /// write. Trying again does not help; an operator must fix the store or the settings.
    #[error("{0}")]
    Refused(String),
}

impl SinkError {
    /// Whether the store refused the request for good (credentials, permissions, a missing
    /// bucket), as opposed to a failure that may pass (unreachable, slow, 5xx).
    pub fn is_permanent(&self) -> bool {
        match self {
            SinkError::Refused(_) => true,
            SinkError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ),
            SinkError::Parquet(_) | SinkError::Store(_) => false,
        }
    }
}

/// Where result files go: a local directory, or an object store.
#[async_trait]
pub trait ResultSink: Send + Sync {
    /// Stores `bytes` as `run=<run_id>/<name>`, returning only once it is durable.
    async fn put(&self, run_id: &str, name: &str, bytes: Vec<u8>) -> Result<(), SinkError>;
    /// Names of the files stored for `run_id` (result parts and the manifest).
    async fn list(&self, run_id: &str) -> Result<Vec<String>, SinkError>;
    /// The content of one stored file.
    async fn get(&self, run_id: &str, name: &str) -> Result<Vec<u8>, SinkError>;
    /// Removes one stored file (missing is not an error).
    async fn delete(&self, run_id: &str, name: &str) -> Result<(), SinkError>;
    /// Where results are, for messages (`/data/out`, `s3://bucket/prefix`).
    fn location(&self) -> String;
}

/// The sink for an output location: `s3://bucket/prefix` is an [`crate::s3::S3Sink`] with a
/// client configured from the environment ([`crate::S3Config::from_env`]); anything else
/// is a local directory ([`LocalDirSink`]). Fails only on a malformed `s3://` location; nothing
/// is contacted or created until the first write.
pub async fn open_sink(output: &str) -> Result<std::sync::Arc<dyn ResultSink>, SinkError> {
    if crate::s3_config::is_s3_location(output) {
        Ok(std::sync::Arc::new(
            crate::s3::S3Sink::from_env(output).await?,
        ))
    } else {
        Ok(std::sync::Arc::new(LocalDirSink::new(output)))
    }
}

/// Result files in a local directory, written atomically (temp file, fsync, rename).
#[derive(Debug, Clone)]
pub struct LocalDirSink {
    root: PathBuf,
}

impl LocalDirSink {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDirSink { root: root.into() }
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join(format!("run={run_id}"))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[async_trait]
impl ResultSink for LocalDirSink {
    async fn put(&self, run_id: &str, name: &str, bytes: Vec<u8>) -> Result<(), SinkError> {
        let dir = self.run_dir(run_id);
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let tmp = dir.join(format!(".{name}.tmp"));
            let dst = dir.join(&name);
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            // Make the rename itself durable.
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&dir))
        })
        .await
        .map_err(|e| SinkError::Store(e.to_string()))?
    }

    async fn list(&self, run_id: &str) -> Result<Vec<String>, SinkError> {
        let dir = self.run_dir(run_id);
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        while let Some(e) = rd.next_entry().await.map_err(io(&dir))? {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with('.') {
                out.push(n);
            }
        }
        Ok(out)
    }

    async fn get(&self, run_id: &str, name: &str) -> Result<Vec<u8>, SinkError> {
        let p = self.run_dir(run_id).join(name);
        tokio::fs::read(&p).await.map_err(io(&p))
    }

    async fn delete(&self, run_id: &str, name: &str) -> Result<(), SinkError> {
        let dir = self.run_dir(run_id);
        let p = dir.join(name);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p)(e)),
        }
        // The run's directory goes too once it is empty (another file keeps it).
        let _ = tokio::fs::remove_dir(&dir).await;
        Ok(())
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

/// The run id under which [`probe`] writes.
pub const PROBE_RUN: &str = "offpeak-probe";

/// Checks that results can be stored at `sink` before any work is taken on: lists
/// `run=offpeak-probe/`, writes a small object there, reads it back, and deletes it. A wrong secret, a missing
/// bucket, an unreachable endpoint or a read-only directory fail here, with the store's answer.
pub async fn probe(sink: &dyn ResultSink) -> Result<(), SinkError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("probe-{}-{nanos}", std::process::id());
    let body = format!("offpeak store probe {nanos}").into_bytes();
    // A listing first: some S3-compatible stores create a missing bucket on the first write,
    // where the worker's own files would then go unnoticed.
    sink.list(PROBE_RUN).await?;
    sink.put(PROBE_RUN, &name, body.clone()).await?;
    let back = sink.get(PROBE_RUN, &name).await?;
    sink.delete(PROBE_RUN, &name).await?;
    if back != body {
        return Err(SinkError::Store(format!(
            "{}: a probe object read back different from what was written",
            sink.location()
        )));
    }
    Ok(())
}
