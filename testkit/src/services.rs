//! Where the services of `deploy/local/` listen: each address from its `OFFPEAK_TEST_*`
//! variable, or the default the deploy scripts use.

/// The access key of the local S3-compatible store (`deploy/local/s3.sh`).
pub const S3_KEY: &str = "offpeak";
/// The secret key of the local S3-compatible store.
pub const S3_SECRET: &str = "offpeak-secret";

/// The S3-compatible store (`OFFPEAK_TEST_S3_ENDPOINT`, default `http://127.0.0.1:9000`).
pub fn s3_endpoint() -> String {
    std::env::var("OFFPEAK_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

/// NATS with JetStream (`OFFPEAK_TEST_NATS_URL`, default `nats://127.0.0.1:4222`).
pub fn nats_url() -> String {
    std::env::var("OFFPEAK_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// RabbitMQ (`OFFPEAK_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`).
pub fn amqp_url() -> String {
    std::env::var("OFFPEAK_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}
