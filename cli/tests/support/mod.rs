//! What the fleet tests share: real processes (`offpeak sim`, `submit`, `worker`, `status`),
//! the real brokers on this machine, and the real S3-compatible store started by
//! `deploy/local/s3.sh`. Every test gets its own broker namespace and bucket.

#![allow(dead_code)]

use schemas::ResultRow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

pub const S3_KEY: &str = "offpeak";
pub const S3_SECRET: &str = "offpeak-secret";

pub fn s3_endpoint() -> String {
    std::env::var("OFFPEAK_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

pub fn nats_url() -> String {
    std::env::var("OFFPEAK_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn amqp_url() -> String {
    std::env::var("OFFPEAK_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A unique lowercase name (bucket- and namespace-safe).
pub fn unique(prefix: &str) -> String {
    // Tests of one binary run in parallel threads: the clock alone can give two of them the same
    // name (a CI run met `BucketAlreadyExists`), so a per-process counter goes in too.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{n}-{:x}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (up to `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `offpeak sim` on `scenario` (a TOML file), serving plain HTTP on 127.0.0.1:`port`
/// and logging to `log`; returns once the port is open.
pub fn start_sim(scenario: &Path, port: u16, log: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_offpeak"))
        .args(["sim", "--scenario"])
        .arg(scenario)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let sim = Proc {
        child,
        name: "sim".into(),
        log: log.to_path_buf(),
    };
    wait_port(port);
    sim
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
        let mut c = Command::new(env!("CARGO_BIN_EXE_offpeak"));
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
        rt().block_on(async {
            if self.broker.starts_with("nats") {
                let q = queue::NatsQueue::connect(queue::NatsOptions::from_broker(
                    &self.broker,
                    &self.broker_options(),
                ))
                .await
                .unwrap();
                q.dead_letters(100_000).await.unwrap()
            } else {
                let q = queue::RabbitQueue::connect(queue::RabbitOptions::from_broker(
                    &self.broker,
                    &self.broker_options(),
                ))
                .await
                .unwrap();
                let d = q.dead_letters(100_000).await.unwrap();
                let _ = q.close().await;
                d
            }
        })
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
        let opts = self.broker_options();
        let broker = self.broker.clone();
        rt().block_on(async move {
            if broker.starts_with("nats") {
                if let Ok(q) =
                    queue::NatsQueue::connect(queue::NatsOptions::from_broker(&broker, &opts)).await
                {
                    let _ = q.delete_topology().await;
                }
            } else if let Ok(q) =
                queue::RabbitQueue::connect(queue::RabbitOptions::from_broker(&broker, &opts)).await
            {
                let _ = q.delete_topology().await;
                let _ = q.close().await;
            }
        });
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let code = s
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = s
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

pub fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A JSONL job file of `n` jobs made by `line(i)`.
pub fn job_file(path: &Path, n: usize, line: impl Fn(usize) -> String) {
    let mut s = String::with_capacity(n * 120);
    for i in 0..n {
        s.push_str(&line(i));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// `path` opened for appending: a restarted service keeps its earlier lines.
pub fn append_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// A `nats-server -js` of the test's own, on a free port with its own store directory.
pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    /// The server's certificate and key, for a server that requires TLS.
    tls: Option<(PathBuf, PathBuf)>,
    proc: Option<Proc>,
}

impl PrivateNats {
    pub fn start(dir: &Path) -> PrivateNats {
        PrivateNats::start_with(dir, None)
    }

    /// A server that requires TLS, with `cert` and `key` (PEM).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> PrivateNats {
        PrivateNats::start_with(dir, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(dir: &Path, tls: Option<(PathBuf, PathBuf)>) -> PrivateNats {
        let mut n = PrivateNats {
            port: free_port(),
            dir: dir.to_path_buf(),
            tls,
            proc: None,
        };
        n.up();
        n
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let log = self.dir.join("nats.log");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.dir.join("store"));
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--tls")
                .arg("--tlscert")
                .arg(cert)
                .arg("--tlskey")
                .arg(key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(append_log(&log))
            .spawn()
            .expect("start nats-server (deploy/local/services.sh installs it)");
        self.proc = Some(Proc {
            child,
            name: "nats".into(),
            log,
        });
        wait_port(self.port);
    }

    /// SIGKILL: no goodbye to the clients.
    pub fn kill(&mut self) {
        self.proc = None;
    }
}

/// The server side of an AMQPS listener: PEM files (the CA, the server's certificate and key).
pub struct TlsFiles<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// A RabbitMQ node of the test's own (its own node name, ports and data directory), started
/// from the machine's installation; SIGKILLed as a whole process group.
pub struct PrivateRabbit {
    pub port: u16,
    /// The AMQPS listener's port, when the node has one.
    pub tls_port: Option<u16>,
    dir: PathBuf,
    node: String,
    proc: Option<Proc>,
}

impl PrivateRabbit {
    pub fn start(dir: &Path) -> PrivateRabbit {
        PrivateRabbit::start_with(dir, None)
    }

    /// A node that also listens for AMQPS on loopback with `tls`'s certificate (clients are
    /// not asked for certificates of their own).
    pub fn start_tls(dir: &Path, tls: TlsFiles) -> PrivateRabbit {
        PrivateRabbit::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<TlsFiles>) -> PrivateRabbit {
        let port = free_port();
        let mut conf = format!("listeners.tcp.local = 127.0.0.1:{port}\n");
        let tls_port = tls.map(|t| {
            let tls_port = free_port();
            conf.push_str(&format!(
                "listeners.ssl.local = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                t.ca.display(),
                t.cert.display(),
                t.key.display()
            ));
            tls_port
        });
        std::fs::write(dir.join("rabbitmq.conf"), conf).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let mut r = PrivateRabbit {
            port,
            tls_port,
            dir: dir.to_path_buf(),
            node: format!("{}@localhost", unique("offpeak-rabbit")),
            proc: None,
        };
        r.up();
        r
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQPS URL, by host name (the server's certificate names `localhost`; `guest` may
    /// log in only from loopback).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a node started with start_tls");
        format!("amqps://guest:guest@localhost:{port}/%2f")
    }

    pub fn up(&mut self) {
        use std::os::unix::process::CommandExt;
        let d = |n: &str| self.dir.join(n);
        let log = d("rabbit.log");
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("HOME", &self.dir)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(append_log(&log))
            .spawn()
            .expect("start rabbitmq-server (deploy/local/services.sh installs it)");
        self.proc = Some(Proc {
            child,
            name: "rabbitmq".into(),
            log,
        });
        let start = Instant::now();
        for port in std::iter::once(self.port).chain(self.tls_port) {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "rabbitmq never opened port {port}; see {}",
                    d("log").display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// SIGKILL to the whole node (the start script and the Erlang VM).
    pub fn kill(&mut self) {
        if let Some(p) = &self.proc {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", p.pid())])
                .status();
        }
        self.proc = None;
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
    }
}
