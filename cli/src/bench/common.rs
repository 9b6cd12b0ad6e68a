//! What the benches share: a simulator and a catalog pointing at it, generated job files, the
//! real submit path and worker processes, broker namespaces of their own (deleted afterwards),
//! peak RSS from `/proc`, and the table and summary-line output.

use crate::config::Config;
use crate::input::JobArgs;
use crate::submit::{submit, SubmitArgs};
use crate::Failure;
use anyhow::{anyhow, Context};
use schemas::RunId;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The one simulated provider every bench routes to, and its model.
pub const PROVIDER: &str = "sim";
pub const MODEL: &str = "m";
pub const MODEL_ID: &str = "m-sim";
/// `max_tokens` of every generated job (the simulator's answers are this long at most).
pub const MAX_TOKENS: u32 = 16;

/// Broker, results location and a namespace of their own for one bench.
#[derive(Debug, Clone)]
pub struct Target {
    pub broker: String,
    pub output: String,
    pub namespace: String,
}

impl Target {
    /// A fresh namespace under `bench` so nothing else on the broker is touched; it also names
    /// the run, so runs never meet an earlier manifest.
    pub fn new(broker: &str, output: &str, label: &str) -> Target {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Target {
            broker: broker.to_string(),
            output: output.to_string(),
            namespace: format!(
                "bench-{label}-{}-{:x}",
                std::process::id(),
                nanos % 0xffff_ffff
            ),
        }
    }

    /// `cfg` with this target's namespace.
    pub fn config(&self, cfg: &Config) -> Config {
        let mut c = cfg.clone();
        c.broker.namespace = self.namespace.clone();
        c
    }

    /// Deletes the namespace's streams or queues with whatever is left in them.
    pub async fn cleanup(&self) {
        let opts = queue::BrokerOptions::with_namespace(&self.namespace);
        if self.broker.starts_with("amqp") {
            let o = queue::RabbitOptions::from_broker(&self.broker, &opts);
            if let Ok(q) = queue::RabbitQueue::connect(o).await {
                let _ = q.delete_topology().await;
            }
        } else if let Ok(q) =
            queue::NatsQueue::connect(queue::NatsOptions::from_broker(&self.broker, &opts)).await
        {
            let _ = q.delete_topology().await;
        }
        // The run's results too: a store that keeps every bench run's files lists ever more
        // slowly (s3s-fs walks the bucket), which would weigh on later runs' `submit`.
        if store::is_s3_location(&self.output) {
            if let Ok(sink) = store::S3Sink::from_env(&self.output).await {
                let _ = sink.delete_run(&self.namespace).await;
            }
        }
    }
}

/// Makes sure an `s3://` output's bucket exists (benches write to a bucket of their own).
pub async fn ensure_output(output: &str) -> Result<(), Failure> {
    if store::is_s3_location(output) {
        let sink = store::S3Sink::from_env(output).await?;
        sink.ensure_bucket()
            .await
            .with_context(|| format!("creating the bucket of {output}"))?;
    }
    Ok(())
}

/// Starts the simulator in this process: one OpenAI-style provider answering after `latency`.
pub async fn start_sim(latency: Duration) -> Result<sim::SimHandle, Failure> {
    let mut p = sim::SimProvider::new(PROVIDER, sim::SimKind::Openai, &[MODEL_ID]);
    p.latency_ms = latency.as_secs_f64() * 1000.0;
    let scenario = sim::Scenario {
        seed: Some(1),
        providers: vec![p],
    };
    Ok(sim::start(scenario, "127.0.0.1:0".parse()?).await?)
}

/// Writes the catalog of the simulated provider to `dir/catalog.toml`.
pub fn write_catalog(dir: &Path, sim: &sim::SimHandle) -> Result<PathBuf, Failure> {
    let text = format!(
        "[[providers]]\nname = \"{PROVIDER}\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [[providers.models]]\nmodel = \"{MODEL}\"\nid = \"{MODEL_ID}\"\n\
         input_per_mtok = 0.1\noutput_per_mtok = 0.2\n",
        sim.base_url(PROVIDER)
    );
    let path = dir.join("catalog.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The JSONL line of generated job `i`: a short prompt, critical (never deferred).
pub fn job_line(i: usize) -> String {
    format!(
        r#"{{"id":"job-{i:08}","model":"{MODEL}","prompt":"question {i}: what is {i} times 7?","max_tokens":{MAX_TOKENS},"priority":"critical","metadata":{{"i":{i}}}}}"#
    )
}

/// Writes `n` generated jobs as JSONL.
pub fn write_jobs(path: &Path, n: usize) -> Result<(), Failure> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for i in 0..n {
        writeln!(out, "{}", job_line(i))?;
    }
    out.flush()?;
    Ok(())
}

/// Submits `jobs` as run `run` through `offpeak submit`'s own code, in this process.
pub async fn submit_file(
    target: &Target,
    cfg: &Config,
    catalog: &Path,
    jobs: &Path,
    run: &str,
) -> Result<(), Failure> {
    let args = SubmitArgs {
        input: JobArgs {
            jobs: jobs.display().to_string(),
            catalog: catalog.to_path_buf(),
            deadline: Duration::from_secs(24 * 3600),
            dry_run: false,
            skip_invalid: false,
            max_jobs: None,
        },
        broker: target.broker.clone(),
        output: target.output.clone(),
        run_id: Some(run.parse::<RunId>().map_err(|e| anyhow!("run id: {e}"))?),
        in_flight: 256,
        quiet: true,
    };
    match submit(args, target.config(cfg)).await? {
        0 => Ok(()),
        code => Err(anyhow!("submit exited with {code}").into()),
    }
}

/// A free loopback port (for a child's metrics endpoint).
pub fn free_port() -> Result<u16, Failure> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An `offpeak` child process, killed if still running when dropped.
pub struct Child {
    pub child: tokio::process::Child,
    pub metrics_port: u16,
}

impl Child {
    pub fn pid(&self) -> Result<u32, Failure> {
        self.child
            .id()
            .ok_or_else(|| anyhow!("the child process has exited").into())
    }

    /// SIGTERM, then the exit status (killed after `within`).
    pub async fn terminate(&mut self, within: Duration) -> Result<(), Failure> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => {
                let s = s?;
                if !s.success() {
                    return Err(anyhow!("child exited with {s}").into());
                }
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                Err(anyhow!("child did not stop within {within:?}").into())
            }
        }
    }
}

/// Starts `offpeak worker` on `target` with `concurrency` jobs in flight; its log goes to
/// `log`.
pub fn spawn_worker(
    target: &Target,
    catalog: &Path,
    concurrency: usize,
    id: &str,
    log: &Path,
) -> Result<Child, Failure> {
    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .args([
            "worker",
            "--broker",
            &target.broker,
            "--output",
            &target.output,
        ])
        .arg("--catalog")
        .arg(catalog)
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--id", id])
        .env("OFFPEAK_BROKER__NAMESPACE", &target.namespace)
        .env("OFFPEAK_WORKER__FLUSH__MAX_AGE_S", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")?;
    Ok(Child {
        child,
        metrics_port: port,
    })
}

/// One counter of a worker's `/metrics` (summed over its label sets), or `None` while the
/// endpoint does not answer.
pub async fn metric(http: &reqwest::Client, port: u16, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The workers' `name` counters added up (0 for a worker that does not answer).
pub async fn counter_sum(http: &reqwest::Client, workers: &[Child], name: &str) -> f64 {
    let mut total = 0.0;
    for w in workers {
        total += metric(http, w.metrics_port, name).await.unwrap_or(0.0);
    }
    total
}

/// Waits until every worker's `/readyz` answers 200.
pub async fn wait_ready(
    http: &reqwest::Client,
    workers: &mut [Child],
    within: Duration,
) -> Result<(), Failure> {
    let start = Instant::now();
    for w in workers.iter_mut() {
        loop {
            let url = format!("http://127.0.0.1:{}/readyz", w.metrics_port);
            if let Ok(r) = http.get(url).timeout(Duration::from_secs(1)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(s)) = w.child.try_wait() {
                return Err(anyhow!("a worker exited before it was ready ({s})").into());
            }
            if start.elapsed() > within {
                return Err(anyhow!("workers not ready within {within:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Waits until the workers' `name` counters add up to `n`, failing after `within`; returns
/// when that was seen (polled every 20 ms).
pub async fn wait_counter(
    http: &reqwest::Client,
    workers: &mut [Child],
    name: &str,
    n: u64,
    within: Duration,
) -> Result<Instant, Failure> {
    let start = Instant::now();
    loop {
        let total = counter_sum(http, workers, name).await;
        if total >= n as f64 {
            return Ok(Instant::now());
        }
        for w in workers.iter_mut() {
            if let Ok(Some(s)) = w.child.try_wait() {
                return Err(anyhow!("a worker exited early ({s})").into());
            }
        }
        if start.elapsed() > within {
            return Err(anyhow!("{name} reached {total} of {n} within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The peak resident set (`VmHWM`) of process `pid` so far, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let kb = l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim();
        kb.parse::<u64>().ok().map(|k| k * 1024)
    })
}

/// Runs `cmd` to completion, sampling its peak RSS every 10 ms (`VmHWM` is gone once the
/// process has exited, so the last sample is taken at most 10 ms before the end). Returns the
/// wall time, the peak RSS in bytes and the exit status.
pub async fn run_measured(
    mut cmd: tokio::process::Command,
) -> Result<(Duration, u64, std::process::ExitStatus), Failure> {
    let start = Instant::now();
    let mut child = cmd.kill_on_drop(true).spawn().context("starting a child")?;
    let pid = child.id().unwrap_or_default();
    let mut peak = 0u64;
    let status = loop {
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        tokio::select! {
            s = child.wait() => break s?,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    };
    Ok((start.elapsed(), peak, status))
}

/// Megabytes, for tables.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Rows of a plain-text table, printed with aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &self.rows {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                // The first column is a label (left-aligned); the rest are figures.
                if c == 0 {
                    let _ = write!(line, "{cell:<w$}", w = width[c]);
                } else {
                    let _ = write!(line, "  {cell:>w$}", w = width[c]);
                }
            }
            println!("{}", line.trim_end());
        }
    }
}

/// The last line every bench prints: `key=value` pairs separated by spaces.
#[derive(Debug, Default)]
pub struct SummaryLine(Vec<(String, String)>);

impl SummaryLine {
    pub fn new(bench: &str) -> SummaryLine {
        let mut s = SummaryLine::default();
        s.text("bench", bench);
        s
    }

    pub fn text(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.0.push((key.to_string(), value.to_string()));
        self
    }

    /// A figure with as many decimals as it deserves.
    pub fn num(&mut self, key: &str, value: f64) -> &mut Self {
        let v = if value.abs() >= 100.0 {
            format!("{value:.0}")
        } else if value.abs() >= 1.0 {
            format!("{value:.2}")
        } else {
            format!("{value:.3}")
        };
        self.text(key, v)
    }

    pub fn print(&self) {
        let line: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}", line.join(" "));
    }
}

/// Jobs per second.
pub fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// A figure for a table cell.
pub fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
