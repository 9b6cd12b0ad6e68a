//! What offpeak's tests share, in one place instead of a copy per test directory: where the
//! local services are ([`services`]), names and ports of a test's own ([`unique`],
//! [`net`]), processes killed with the test ([`process`]), brokers of a test's own
//! ([`private`]), job files ([`files`]) and one harness over every queue backend ([`queues`]).
//!
//! Used only as a dev-dependency. Nothing here knows where the `offpeak` binary is (a library
//! has no `CARGO_BIN_EXE_*`): helpers that run it take its path.

pub mod files;
pub mod net;
pub mod private;
pub mod process;
pub mod queues;
pub mod s3;
pub mod services;

pub use files::{append_log, job_file, write_file};
pub use net::{free_port, http_get, wait_port};
pub use private::{PrivateNats, PrivateRabbit, PrivateS3, TlsFiles};
pub use process::{start_sim, text, Proc};
pub use s3::TestBucket;
pub use services::{amqp_url, nats_url, s3_endpoint, S3_KEY, S3_SECRET};

use std::path::{Path, PathBuf};

/// A unique lowercase name (bucket-, stream- and namespace-safe) starting with `prefix`.
pub fn unique(prefix: &str) -> String {
    // Tests of one binary run in parallel threads: the clock alone can give two of them the same
    // name (a CI run met `BucketAlreadyExists`), so a per-process counter goes in too.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{n}-{:x}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

/// The workspace's root directory (where `examples/` and `tests/readers/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A two-thread tokio runtime, for blocking tests that need an async client now and then.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}
