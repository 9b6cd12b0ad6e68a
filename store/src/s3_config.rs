//! Reaching S3 and S3-compatible stores: `s3://bucket/key` locations and the one place an S3
//! client is built. The producer reads job files with it and the worker's results sink writes
//! with it, so endpoint, addressing style, credentials, timeouts and retries are decided here
//! and nowhere else.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::fmt;
use std::time::Duration;

/// The URL scheme of object-store locations.
pub const S3_SCHEME: &str = "s3://";

/// Region used when neither the configuration nor the environment names one: S3-compatible
/// stores accept any region in signatures, and AWS serves `us-east-1` buckets with it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// True when `location` names an object (`s3://…`) rather than a local path.
pub fn is_s3_location(location: &str) -> bool {
    location.starts_with(S3_SCHEME)
}

/// A parsed `s3://bucket/key` location. The key has no leading or trailing `/` and may be
/// empty (`s3://bucket` names the whole bucket, as an output prefix may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket name, checked against S3's naming rules.
    pub bucket: String,
    /// The object key or key prefix, without leading or trailing `/`.
    pub key: String,
}

/// Why a string is not a usable `s3://bucket/key` location; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid S3 location `{location}`: {reason}")]
pub struct InvalidS3Url {
    /// The location as given.
    pub location: String,
    /// What is wrong with it.
    pub reason: String,
}

impl S3Url {
    /// Parses `s3://bucket[/key]`. The bucket must follow S3's rules (3–63 characters: lower-case
    /// letters, digits, `.` and `-`, starting and ending with a letter or digit); leading and
    /// trailing `/` around the key are dropped.
    pub fn parse(location: &str) -> Result<S3Url, InvalidS3Url> {
        let invalid = |reason: &str| InvalidS3Url {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        let rest = location
            .strip_prefix(S3_SCHEME)
            .ok_or_else(|| invalid("expected s3://bucket/key"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(
                "the bucket name is missing (expected s3://bucket/key)",
            ));
        }
        if let Err(reason) = check_bucket_name(bucket) {
            return Err(invalid(&format!("bucket `{bucket}`: {reason}")));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.trim_matches('/').to_string(),
        })
    }

    /// Parses a location that must name one object: like [`S3Url::parse`], but an empty key
    /// (`s3://bucket`, `s3://bucket/`) or one ending in `/` is refused.
    pub fn parse_object(location: &str) -> Result<S3Url, InvalidS3Url> {
        let url = S3Url::parse(location)?;
        if url.key.is_empty() || location.ends_with('/') {
            return Err(InvalidS3Url {
                location: location.to_string(),
                reason: "expected the key of one object after the bucket (s3://bucket/key)".into(),
            });
        }
        Ok(url)
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{S3_SCHEME}{}", self.bucket)
        } else {
            write!(f, "{S3_SCHEME}{}/{}", self.bucket, self.key)
        }
    }
}

fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("may hold only lower-case letters, digits, `.` and `-`");
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// How to reach the object store. [`S3Config::from_env`] is what offpeak runs with; tests build
/// one directly so they need no process-wide environment.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint of an S3-compatible store (`http://127.0.0.1:9000`); `None` means AWS S3 (or the
    /// endpoint the AWS environment configures).
    pub endpoint: Option<String>,
    /// Signing region; `None` takes it from the AWS environment (`AWS_REGION`, profile), else
    /// [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted style
    /// (`bucket.endpoint/key`); `None` means path style exactly when `endpoint` is set, since
    /// S3-compatible stores on a host name or loopback address rarely resolve bucket subdomains.
    pub path_style: Option<bool>,
    /// Fixed credentials; `None` uses the standard AWS chain (`AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, profile, web identity, container or instance role). Their
    /// `Debug` output hides the secret.
    pub credentials: Option<Credentials>,
    /// Attempts per request, the first included; transient failures (connection errors,
    /// throttling, 5xx) are retried with exponential backoff and jitter.
    pub max_attempts: u32,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit from sending a request to the first byte of its response (so it covers uploading
    /// one request body: keep it well above the time one multipart part takes).
    pub read_timeout: Duration,
}

impl Default for S3Config {
    /// AWS S3 with the standard credential chain, 3 attempts, 5 s to connect and 120 s to the
    /// first response byte.
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: None,
            path_style: None,
            credentials: None,
            max_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl S3Config {
    /// The defaults, with the endpoint from `OFFPEAK_S3_ENDPOINT`, else `AWS_ENDPOINT_URL_S3`,
    /// else `AWS_ENDPOINT_URL`, and the addressing style from `OFFPEAK_S3_PATH_STYLE`
    /// (`true`/`false`, `1`/`0`) when set. Region and credentials come from the AWS chain when
    /// the client is built.
    pub fn from_env() -> S3Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("OFFPEAK_S3_ENDPOINT")
            .or_else(|| var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| var("AWS_ENDPOINT_URL"));
        let path_style = var("OFFPEAK_S3_PATH_STYLE").and_then(|v| {
            match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => Some(true),
                "0" | "false" | "no" => Some(false),
                _ => None,
            }
        });
        S3Config {
            endpoint,
            path_style,
            ..S3Config::default()
        }
    }

    /// A client for an S3-compatible store at `endpoint` with fixed keys, path-style addressing
    /// and region [`DEFAULT_REGION`]: what tests and local deployments use.
    pub fn local(endpoint: &str, access_key: &str, secret_key: &str) -> S3Config {
        S3Config {
            endpoint: Some(endpoint.to_string()),
            region: Some(DEFAULT_REGION.to_string()),
            credentials: Some(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "offpeak-static",
            )),
            ..S3Config::default()
        }
    }

    /// Builds the client. HTTPS goes through rustls (ring); nothing is contacted until the first
    /// request, except that the AWS credential chain may read local files.
    pub async fn client(&self) -> aws_sdk_s3::Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .read_timeout(self.read_timeout)
                    .build(),
            );
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(credentials) = &self.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            conf = conf.region(Region::from_static(DEFAULT_REGION));
        }
        if let Some(endpoint) = &self.endpoint {
            // Checksums only when the operation requires them: many S3-compatible stores do
            // not implement the newer flexible-checksum trailers AWS S3 defaults to. SigV4 still
            // signs each request body's SHA-256, which the store verifies.
            conf = conf
                .endpoint_url(endpoint.clone())
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        conf = conf.force_path_style(self.path_style.unwrap_or(self.endpoint.is_some()));
        aws_sdk_s3::Client::from_conf(conf.build())
    }
}

/// A one-line account of a failed S3 request, for error messages: when the store answered, its
/// HTTP status, error code, message and request id (`HTTP 404 NoSuchKey: …`); otherwise the
/// chain of causes (`dispatch failure: io error: … Connection refused`). Requests and their
/// headers, and so credentials and signatures, are never part of it.
pub fn describe_sdk_error<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    if let SdkError::ServiceError(service) = err {
        let e = service.err();
        let mut out = format!(
            "HTTP {} {}",
            service.raw().status().as_u16(),
            e.code().unwrap_or("(no error code)")
        );
        if let Some(message) = e.message() {
            out.push_str(": ");
            out.push_str(message);
        }
        if let Some(id) = err.request_id() {
            out.push_str(&format!(" (request id {id})"));
        }
        return out;
    }
    schemas::error_chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_key_are_split_and_slashes_trimmed() {
        let url = S3Url::parse("s3://my-bucket/runs/nightly/").unwrap();
        assert_eq!(url.bucket, "my-bucket");
        assert_eq!(url.key, "runs/nightly");
        assert_eq!(url.to_string(), "s3://my-bucket/runs/nightly");
        assert_eq!(S3Url::parse("s3://my-bucket").unwrap().key, "");
    }

    #[test]
    fn malformed_locations_are_refused_with_the_reason() {
        for (location, reason) in [
            ("/data/jobs.jsonl", "expected s3://"),
            ("s3://", "bucket name is missing"),
            ("s3:///key", "bucket name is missing"),
            ("s3://My_Bucket/key", "lower-case"),
            ("s3://ab/key", "3 to 63"),
            ("s3://-bucket/key", "start and end"),
        ] {
            let err = S3Url::parse(location).unwrap_err().to_string();
            assert!(err.contains(location), "{err}");
            assert!(err.contains(reason), "{location}: {err}");
        }
    }

    #[test]
    fn an_object_location_needs_a_key() {
        assert!(S3Url::parse_object("s3://bucket/jobs.jsonl").is_ok());
        for location in ["s3://bucket", "s3://bucket/", "s3://bucket/dir/"] {
            let err = S3Url::parse_object(location).unwrap_err().to_string();
            assert!(err.contains("key of one object"), "{location}: {err}");
        }
    }
}
