//! What the fleet tests share: real processes (`offpeak sim`, `submit`, `worker`, `status`),
//! the real brokers on this machine, and the real S3-compatible store started by
//! `deploy/local/s3.sh`. Every test gets its own broker namespace and bucket. What is not about
//! the `offpeak` binary comes from `testkit`.

#![allow(dead_code)]

use schemas::ResultRow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
// Each test binary uses its own share of these.
#[allow(unused_imports)]
pub use testkit::{
    amqp_url, append_log, free_port, http_get, job_file, nats_url, rt, s3_endpoint, text, unique,
    wait_port, workspace_root as root, PrivateNats, PrivateRabbit, PrivateS3, Proc, TlsFiles,
    S3_KEY, S3_SECRET,
};

/// One OpenAI-kind provider, `cheap`, serving model `m` from the simulator (`{SIM}`).
pub const ONE_PROVIDER_CATALOG: &str = r#"
[[providers]]
name = "cheap"
kind = "openai"
base_url = "{SIM}/cheap/v1"
[[providers.models]]
model = "m"
id = "m-cheap"
input_per_mtok = 0.1
output_per_mtok = 0.2
"#;

/// The `offpeak` binary under test.
pub fn offpeak_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_offpeak"))
}

/// Starts `offpeak sim` on `scenario` (a TOML file), serving plain HTTP on 127.0.0.1:`port`
/// and logging to `log`; returns once the port is open.
pub fn start_sim(scenario: &Path, port: u16, log: &Path) -> Proc {
    testkit::start_sim(offpeak_bin(), scenario, port, log)
}

/// The sink for `output` (`s3://bucket/prefix`) in a test's own store, with the keys it
/// accepts now.
pub fn private_sink(s3: &PrivateS3, output: &str) -> store::S3Sink {
    rt().block_on(async {
        let (key, secret) = s3.keys();
        let client = store::S3Config::local(&s3.endpoint(), key, secret)
            .client()
            .await;
        store::S3Sink::new(client, &store::S3Url::parse(output).unwrap())
    })
}

/// Every row stored for `run` under `output` in a test's own store, duplicates included.
pub fn rows_in(s3: &PrivateS3, output: &str, run: &str) -> Vec<ResultRow> {
    let sink = private_sink(s3, output);
    rt().block_on(store::read_run(&sink, run)).unwrap()
}

/// Creates the bucket of `output` (`s3://bucket/prefix`) in a test's own store.
pub fn create_bucket_in(s3: &PrivateS3, output: &str) {
    let sink = private_sink(s3, output);
    rt().block_on(sink.ensure_bucket()).unwrap();
}

/// A simulator scenario with one fast provider, `cheap`, serving `m-cheap`.
pub const ONE_FAST_PROVIDER: &str = r#"
[[providers]]
name = "cheap"
kind = "openai"
models = ["m-cheap"]
latency_ms = 1
"#;

/// Job `i` of a generated file: model `m`, a short prompt, id `job-<i>` (six digits).
pub fn short_job(i: usize) -> String {
    format!(r#"{{"id":"job-{i:06}","model":"m","prompt":"question {i}"}}"#)
}

/// One test's world: a simulator process, a catalog pointing at it, a broker namespace and a
/// bucket of its own.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub broker: String,
    pub namespace: String,
    pub output: String,
    pub bucket: String,
    pub catalog: PathBuf,
    pub sim: Proc,
    pub sim_started: chrono::DateTime<chrono::Utc>,
    pub extra_env: Vec<(String, String)>,
}

impl Fleet {
    /// Starts the simulator on `scenario` (TOML, providers named like the catalog's) and writes
    /// `catalog` with every `{SIM}` replaced by the simulator's base URL.
    pub fn start(broker: &str, scenario: &str, catalog: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let namespace = unique("t");
        let bucket = unique("offpeak");
        std::fs::write(dir.path().join("scenario.toml"), scenario).unwrap();
        let port = free_port();
        let sim_url = format!("http://127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("catalog.toml"),
            catalog.replace("{SIM}", &sim_url),
        )
        .unwrap();
        let sim_started = chrono::Utc::now();
        let sim = start_sim(
            &dir.path().join("scenario.toml"),
            port,
            &dir.path().join("sim.log"),
        );
        let output = format!("s3://{bucket}/results");
        rt().block_on(async {
            let client = store::S3Config::local(&s3_endpoint(), S3_KEY, S3_SECRET)
                .client()
                .await;
            let url = store::S3Url::parse(&output).unwrap();
            store::S3Sink::new(client, &url)
                .ensure_bucket()
                .await
                .expect("create the test bucket (is deploy/local/s3.sh running?)");
        });
        Fleet {
            catalog: dir.path().join("catalog.toml"),
            dir,
            broker: broker.to_string(),
            namespace,
            output,
            bucket,
            sim,
            sim_started,
            extra_env: vec![],
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An `offpeak` command with this fleet's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(offpeak_bin());
        c.current_dir(root())
            .args(args)
            .env_remove("OFFPEAK_CONFIG")
            .env("OFFPEAK_BROKER", &self.broker)
            .env("OFFPEAK_OUTPUT", &self.output)
            .env("OFFPEAK_CATALOG", &self.catalog)
            .env("OFFPEAK_BROKER__NAMESPACE", &self.namespace)
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_REGION", "us-east-1")
            // The store's endpoint is this one (or a test's own, in `extra_env`): not one
            // inherited from the shell, which offpeak would prefer (deploy/local/s3.sh exports
            // OFFPEAK_S3_ENDPOINT).
            .env_remove("OFFPEAK_S3_ENDPOINT")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env("AWS_ENDPOINT_URL", s3_endpoint())
            .env("OFFPEAK_WORKER__FLUSH__MAX_AGE_S", "1")
            .env("OFFPEAK_WORKER__REQUEST_TIMEOUT_S", "10");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run offpeak")
    }

    /// `offpeak submit FILE --run-id RUN`, which must succeed.
    pub fn submit(&self, file: &Path, run: &str) -> Output {
        let o = self.run(&["submit", file.to_str().unwrap(), "--run-id", run, "--quiet"]);
        assert!(
            o.status.success(),
            "submit failed:\n{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        o
    }

    /// Starts a worker process.
    pub fn worker(&self, name: &str) -> Proc {
        self.worker_on(name, 0)
    }

    /// Starts a worker process serving its metrics on `port` (0: any).
    pub fn worker_on(&self, name: &str, port: u16) -> Proc {
        let log = self.path(&format!("{name}.log"));
        let addr = format!("127.0.0.1:{port}");
        let child = self
            .cmd(&["worker", "--metrics-addr", &addr, "--id", name])
            .env("OFFPEAK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    /// `offpeak status RUN --wait`, returning its output.
    pub fn wait_for(&self, run: &str, timeout: &str) -> Output {
        self.run(&[
            "status",
            run,
            "--wait",
            "--json",
            "--interval",
            "500ms",
            "--timeout",
            timeout,
        ])
    }

    /// Every stored row of the run, duplicates included.
    pub fn rows(&self, run: &str) -> Vec<ResultRow> {
        rt().block_on(async {
            let client = store::S3Config::local(&s3_endpoint(), S3_KEY, S3_SECRET)
                .client()
                .await;
            let url = store::S3Url::parse(&self.output).unwrap();
            let sink = store::S3Sink::new(client, &url);
            store::read_run(&sink, run).await.unwrap()
        })
    }

    fn broker_options(&self) -> queue::BrokerOptions {
        queue::BrokerOptions::with_namespace(&self.namespace)
    }

    /// The dead letters in this fleet's namespace (payload, reason).
    pub fn dead_letters(&self) -> Vec<queue::DeadLetter> {
        rt().block_on(testkit::queues::broker_dead_letters(
            &self.broker,
            &self.broker_options(),
        ))
    }

    /// The simulator's port (from the catalog written for it).
    pub fn sim_port(&self) -> u16 {
        let catalog = std::fs::read_to_string(&self.catalog).unwrap();
        let at = catalog.find("http://127.0.0.1:").unwrap() + "http://127.0.0.1:".len();
        catalog[at..].split('/').next().unwrap().parse().unwrap()
    }

    /// Completion requests the simulator received, over all its providers.
    pub fn provider_requests(&self) -> u64 {
        let (_, stats) = http_get(self.sim_port(), "/_sim/stats");
        let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
        stats
            .as_object()
            .map(|m| m.values().filter_map(|p| p["requests"].as_u64()).sum())
            .unwrap_or(0)
    }

    /// Publishes raw message bodies under `run`, each `(name, body)` with the de-duplication id
    /// `<run>/<name>` (messages no producer wrote: poison, injected, forged).
    pub fn publish_raw(&self, run: &str, messages: Vec<(String, Vec<u8>)>) {
        rt().block_on(async {
            let q = queue::connect(&self.broker, self.broker_options())
                .await
                .unwrap();
            for (name, body) in messages {
                q.publish(run, &format!("{run}/{name}"), body.into())
                    .await
                    .unwrap_or_else(|e| panic!("publishing {name}: {e}"));
            }
        });
    }

    /// Messages waiting in this fleet's job queue, as the broker reports it.
    pub fn depth(&self) -> Option<u64> {
        rt().block_on(async {
            let q = queue::connect(&self.broker, self.broker_options())
                .await
                .unwrap();
            q.depth().await.unwrap()
        })
    }
}

impl Drop for Fleet {
    /// Deletes the namespace's streams/queues (best effort; buckets are left for inspection).
    fn drop(&mut self) {
        rt().block_on(testkit::queues::delete_broker_namespace(
            &self.broker,
            &self.broker_options(),
        ));
    }
}

/// The sum of a metric's samples (all label sets) on a worker's `/metrics`.
pub fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
