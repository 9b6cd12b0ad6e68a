//! Result files in S3 or an S3-compatible store (DESIGN §6): `s3://bucket/prefix` holds
//! `prefix/run=<run_id>/<name>`. A put returns only once the store has confirmed the whole
//! object, so the flusher may ack the messages behind it; large files go up as a multipart
//! upload that is aborted if any part fails, so no half-written object ever becomes visible.
//!
//! The client itself (endpoint, path style, credentials, timeouts, retries) is built by
//! [`crate::S3Config`], shared with the producer's `s3://` job-file reader.

use crate::s3_config::{describe_sdk_error, S3Config, S3Url};
use crate::sink::{ResultSink, SinkError};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

/// Bodies larger than this go up as a multipart upload by default.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
/// Size of each multipart part (the last may be smaller) by default.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's lower bound on every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploaded at the same time within one multipart upload.
const PART_CONCURRENCY: usize = 4;

/// A [`ResultSink`] over one bucket and key prefix.
#[derive(Debug, Clone)]
pub struct S3Sink {
    client: Client,
    bucket: String,
    prefix: String,
    multipart_threshold: usize,
    part_size: usize,
    list_page_size: Option<i32>,
}

impl S3Sink {
    /// A sink writing under `url` (`s3://bucket/prefix`; the prefix may be empty) with `client`.
    pub fn new(client: Client, url: &S3Url) -> S3Sink {
        S3Sink {
            client,
            bucket: url.bucket.clone(),
            prefix: url.key.clone(),
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            list_page_size: None,
        }
    }

    /// A sink for the location `output` (`s3://bucket/prefix`) with a client configured from
    /// the environment ([`S3Config::from_env`]). Fails only on a malformed location; the store
    /// is first contacted by the first request.
    pub async fn from_env(output: &str) -> Result<S3Sink, SinkError> {
        let url = S3Url::parse(output).map_err(|e| SinkError::Store(e.to_string()))?;
        Ok(S3Sink::new(S3Config::from_env().client().await, &url))
    }

    /// Stores `bytes` as the object `key` of the bucket (the sink's prefix does not apply):
    /// PutObject, or a multipart upload above the threshold.
    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<(), SinkError> {
        let body = Bytes::from(bytes);
        if body.len() > self.multipart_threshold {
            self.put_multipart(key, body).await
        } else {
            self.put_single(key, body).await
        }
    }

    /// Uploads bodies larger than `threshold` bytes as multipart uploads of `part_size`-byte
    /// parts. `part_size` is raised to [`MIN_PART_SIZE`] if smaller, as S3 requires.
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> S3Sink {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// Asks for at most `keys` names per listing request (the store's default, at most 1000,
    /// otherwise); [`ResultSink::list`] still returns every name.
    pub fn with_list_page_size(mut self, keys: i32) -> S3Sink {
        self.list_page_size = Some(keys.max(1));
        self
    }

    /// The client, for operations the sink does not offer.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket written to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it already exists (and is ours). For tests and local setups;
    /// production buckets are provisioned outside offpeak.
    pub async fn ensure_bucket(&self) -> Result<(), SinkError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(self.error("HeadBucket", &format!("s3://{}", self.bucket), e)),
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Created meanwhile by another of our processes.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.error("CreateBucket", &format!("s3://{}", self.bucket), e)),
        }
    }

    /// Deletes every file of run `run_id` (benches remove their throwaway runs, so repeated runs
    /// do not pile up objects under one bucket). Returns how many were deleted.
    pub async fn delete_run(&self, run_id: &str) -> Result<usize, SinkError> {
        let names = self.list(run_id).await?;
        let n = names.len();
        futures::stream::iter(names)
            .map(|name| async move {
                let key = self.key(run_id, &name)?;
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("DeleteObject", &self.url(&key), e))
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
        Ok(n)
    }

    /// `prefix/run=<run_id>/`: the key prefix holding one run's files.
    fn run_prefix(&self, run_id: &str) -> Result<String, SinkError> {
        schemas::RunId::new(run_id).map_err(SinkError::Store)?;
        Ok(if self.prefix.is_empty() {
            format!("run={run_id}/")
        } else {
            format!("{}/run={run_id}/", self.prefix)
        })
    }

    fn key(&self, run_id: &str, name: &str) -> Result<String, SinkError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(SinkError::Store(format!(
                "invalid result file name `{name}`: must be one non-empty path component"
            )));
        }
        Ok(format!("{}{name}", self.run_prefix(run_id)?))
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// A store error naming the object, the operation and what the store answered (status,
    /// code, message) or why it could not be reached. Credentials never appear in it.
    fn error<E>(&self, op: &str, what: &str, e: SdkError<E, HttpResponse>) -> SinkError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        let text = format!("{what}: {op} failed: {}", describe_sdk_error(&e));
        if refused_for_good(&e) {
            SinkError::Refused(text)
        } else {
            SinkError::Store(text)
        }
    }
}

/// Whether the store's answer says trying again cannot help: 401/403 (a wrong, expired or
/// revoked secret, a denied action, a skewed clock) or a bucket that does not exist.
fn refused_for_good<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status == 401 || status == 403 || service.err().code() == Some("NoSuchBucket")
        }
        _ => false,
    }
}

impl S3Sink {
    async fn put_single(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("PutObject", &self.url(key), e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", &self.url(key), e))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            SinkError::Store(format!(
                "{}: CreateMultipartUpload returned no upload id",
                self.url(key)
            ))
        })?;
        match self.upload_parts(key, upload_id, body).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The parts uploaded so far are billed and invisible until aborted.
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(
                        key = %self.url(key),
                        error = %describe_sdk_error(&abort),
                        "could not abort a failed multipart upload"
                    );
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, body: Bytes) -> Result<(), SinkError> {
        let ranges: Vec<(i32, usize, usize)> = (0..body.len())
            .step_by(self.part_size)
            .zip(1..)
            .map(|(start, number)| (number, start, (start + self.part_size).min(body.len())))
            .collect();
        let parts: Vec<CompletedPart> = futures::stream::iter(ranges)
            .map(|(number, start, end)| {
                let chunk = body.slice(start..end);
                async move {
                    let uploaded = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(ByteStream::from(chunk))
                        .send()
                        .await
                        .map_err(|e| {
                            self.error(&format!("UploadPart {number}"), &self.url(key), e)
                        })?;
                    let e_tag = uploaded.e_tag().ok_or_else(|| {
                        SinkError::Store(format!(
                            "{}: UploadPart {number} returned no ETag",
                            self.url(key)
                        ))
                    })?;
                    Ok::<_, SinkError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .e_tag(e_tag)
                            .build(),
                    )
                }
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", &self.url(key), e))?;
        Ok(())
    }
}

#[async_trait]
impl ResultSink for S3Sink {
    async fn put(&self, run_id: &str, name: &str, bytes: Vec<u8>) -> Result<(), SinkError> {
        let key = self.key(run_id, name)?;
        self.put_object(&key, bytes).await
    }

    async fn list(&self, run_id: &str) -> Result<Vec<String>, SinkError> {
        let prefix = self.run_prefix(run_id)?;
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_max_keys(self.list_page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", &self.url(&prefix), e))?;
            names.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(&prefix))
                    .map(str::to_string),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(names),
            }
        }
    }

    async fn delete(&self, run_id: &str, name: &str) -> Result<(), SinkError> {
        let key = self.key(run_id, name)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("DeleteObject", &self.url(&key), e))
    }

    async fn get(&self, run_id: &str, name: &str) -> Result<Vec<u8>, SinkError> {
        let key = self.key(run_id, name)?;
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.error("GetObject", &self.url(&key), e))?;
        let body = object.body.collect().await.map_err(|e| {
            SinkError::Store(format!(
                "{}: reading the object failed: {e}",
                self.url(&key)
            ))
        })?;
        Ok(body.into_bytes().to_vec())
    }

    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}
