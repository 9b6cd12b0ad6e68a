//! A bucket of its own on the local S3-compatible store, for one test: created fresh, removed
//! with every object in it at the end.

use crate::services::{s3_endpoint, S3_KEY, S3_SECRET};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use store::{S3Config, S3Url};

/// A fresh bucket on the test server, deleted with its objects by [`TestBucket::remove`].
#[derive(Debug)]
pub struct TestBucket {
    pub client: Client,
    pub name: String,
}

impl TestBucket {
    /// Creates `offpeak-<tag>-<pid>-<nanos>`; panics, saying how to start it, when no store
    /// listens at [`s3_endpoint`].
    pub async fn new(tag: &str) -> TestBucket {
        let endpoint = s3_endpoint();
        let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "no S3 test server at {endpoint}: run deploy/local/s3.sh"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("offpeak-{tag}-{}-{nanos}", std::process::id());
        let client = S3Config::local(&endpoint, S3_KEY, S3_SECRET).client().await;
        client.create_bucket().bucket(&name).send().await.unwrap();
        TestBucket { client, name }
    }

    /// Stores `body` as `key` and returns its `s3://` location.
    pub async fn upload(&self, key: &str, body: Vec<u8>) -> S3Url {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
        S3Url::parse_object(&format!("s3://{}/{key}", self.name)).unwrap()
    }

    /// Every key in the bucket, over all list pages.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(String::from),
            );
        }
        keys
    }

    /// Deletes every object, then the bucket.
    pub async fn remove(self) {
        for key in self.keys().await {
            self.client
                .delete_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap();
        }
        self.client
            .delete_bucket()
            .bucket(&self.name)
            .send()
            .await
            .unwrap();
    }
}
