//! Where a job file comes from: a local path, or an `s3://bucket/key` object downloaded to a
//! temporary file first, so the readers stay plain blocking file readers and a large file never
//! has to fit in memory. Messages keep naming the location the user gave, not the temporary file.

use crate::read::{read_job_file_named, ReadOptions};
use crate::report::ValidationReport;
use crate::stream::ScanReport;
use crate::ProducerError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use store::{describe_sdk_error, is_s3_location, S3Config, S3Url};
use tokio::io::AsyncWriteExt;

/// A job file ready to be read from local disk. When it was downloaded, the temporary copy is
/// deleted when this value is dropped.
#[derive(Debug)]
pub struct InputFile {
    path: PathBuf,
    name: String,
    _temp: Option<tempfile::TempPath>,
}

impl InputFile {
    /// A local file, read in place and named by its path.
    pub fn local(path: impl Into<PathBuf>) -> InputFile {
        let path = path.into();
        InputFile {
            name: path.display().to_string(),
            path,
            _temp: None,
        }
    }

    /// The file on local disk (the temporary copy for a downloaded object), e.g. to hash it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The location as the user gave it (`jobs.jsonl`, `s3://bucket/jobs.jsonl`), for messages
    /// and the run manifest.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pass 1 of [`crate::stream`]: validates the whole file in flat memory, with reports and
    /// errors naming [`InputFile::name`]. This is blocking I/O.
    pub fn scan(&self, opts: &ReadOptions) -> Result<ScanReport, ProducerError> {
        crate::stream::scan(&self.path, &self.name, opts)
    }

    /// Reads and validates the whole file like [`crate::read_job_file`], with reports and errors
    /// naming [`InputFile::name`]. This is blocking I/O.
    pub fn read(&self, opts: ReadOptions) -> Result<ValidationReport, ProducerError> {
        read_job_file_named(&self.path, &self.name, opts)
    }
}

/// Makes the job file at `location` readable: an `s3://bucket/key` object is downloaded (with a
/// client from [`S3Config::from_env`]) to a temporary file; anything else is a local path, used
/// as is (a missing file is reported when it is read).
pub async fn fetch_input(location: &str) -> Result<InputFile, ProducerError> {
    if !is_s3_location(location) {
        return Ok(InputFile::local(location));
    }
    let url = S3Url::parse_object(location).map_err(|e| ProducerError::S3 {
        location: location.to_string(),
        reason: e.reason,
    })?;
    let client = S3Config::from_env().client().await;
    fetch_s3_input(&client, &url).await
}

/// Downloads the object at `url` to a temporary file, streaming it to disk in chunks, and
/// returns it named by `url`. The temporary file keeps the key's extension, so a `.parquet`
/// key is read as Parquet. Errors name `url` and the store's error code and message.
pub async fn fetch_s3_input(
    client: &aws_sdk_s3::Client,
    url: &S3Url,
) -> Result<InputFile, ProducerError> {
    let location = url.to_string();
    let fail = |reason: String| ProducerError::S3 {
        location: location.clone(),
        reason,
    };
    let suffix = Path::new(&url.key)
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix("offpeak-input-")
        .suffix(&suffix)
        .tempfile()
        .map_err(|e| fail(format!("cannot create a temporary file: {e}")))?;
    let (file, temp_path) = temp.into_parts();

    let response = client
        .get_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .send()
        .await
        .map_err(|e| fail(format!("cannot download: {}", describe_sdk_error(&e))))?;
    let expected = response.content_length();
    let mut body = response.body;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut written = 0u64;
    let local_io = |e: std::io::Error| {
        fail(format!(
            "cannot write the download to {}: {e}",
            temp_path.display()
        ))
    };
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| fail(format!("download interrupted after {written} bytes: {e}")))?
    {
        out.write_all(&chunk).await.map_err(local_io)?;
        written += chunk.len() as u64;
    }
    out.flush().await.map_err(local_io)?;
    if let Some(expected) = expected.and_then(|n| u64::try_from(n).ok()) {
        if expected != written {
            return Err(fail(format!(
                "download incomplete: {written} of {expected} bytes"
            )));
        }
    }
    tracing::debug!(location = %location, bytes = written, "job file downloaded");
    Ok(InputFile {
        path: temp_path.to_path_buf(),
        name: location,
        _temp: Some(temp_path),
    })
}

/// Lower-case hex SHA-256 of the file at `path`, read in chunks (constant memory).
pub fn sha256_file(path: &Path) -> Result<String, ProducerError> {
    let io = |e| ProducerError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_file_is_lowercase_hex_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc.txt");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Larger than the read buffer, so several chunks are hashed.
        std::fs::write(&path, vec![b'x'; 200_000]).unwrap();
        assert_eq!(sha256_file(&path).unwrap().len(), 64);
    }
}
