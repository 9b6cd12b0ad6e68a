//! `offpeak`: the one binary. Subcommands: `run` (local mode: the whole pipeline in one
//! process), `submit`, `worker`, `status`, `results` and `report` (the fleet on a broker and an
//! object store), and `sim` (the provider simulator).
//!
//! Exit codes scripts can rely on: 0 all jobs succeeded; 1 an operational error (I/O, config,
//! broker); 2 invalid input (job file, catalog, arguments) with nothing processed; 3 the run
//! finished but some jobs failed; 130 interrupted by ctrl-c (SIGINT).

/// jemalloc: see docs/benchmarks.md (allocator).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod bench;
mod config;
mod input;
mod output;
mod report_cmd;
mod results;
mod run;
mod status;
mod submit;
mod worker_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Queue-driven batch LLM inference, routed cost-first across providers.
#[derive(Debug, Parser)]
#[command(name = "offpeak", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML); `OFFPEAK_<SECTION>__<KEY>` environment variables override it,
    /// e.g. `OFFPEAK_WORKER__CONCURRENCY=128`.
    #[arg(long, global = true, env = "OFFPEAK_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `offpeak=debug,worker=trace`…); logs go to stderr.
    #[arg(long, global = true, env = "OFFPEAK_LOG", default_value = "warn")]
    log: String,
    /// Log as JSON lines (for production log collectors).
    #[arg(long, global = true, env = "OFFPEAK_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Local mode: validate a job file, route every job cost-first, and write Parquet results to
    /// a local directory — in one process, with an embedded queue and no servers.
    #[command(after_long_help = "Examples:
  # the example jobs, every provider served by the built-in simulator (no keys, no cost)
  offpeak run examples/jobs.jsonl --catalog examples/catalog.toml --simulate

  # real providers (keys from the variables the catalog names), a named run that can resume
  offpeak run jobs.jsonl --catalog catalog.toml --out out --run-id nightly-1 --deadline 6h

  # validate only
  offpeak run jobs.jsonl --catalog catalog.toml --dry-run")]
    Run(run::RunArgs),
    /// Validate a job file and enqueue one message per job on NATS JetStream or RabbitMQ.
    #[command(after_long_help = "Examples:
  offpeak submit jobs.jsonl --catalog catalog.toml --broker nats://127.0.0.1:4222 \\
      --output s3://my-bucket/offpeak --run-id nightly-1

  # RabbitMQ, results in a directory, the file read from S3
  offpeak submit s3://my-bucket/jobs.jsonl --catalog catalog.toml \\
      --broker amqp://guest:guest@127.0.0.1:5672/%2f --output /data/offpeak")]
    Submit(submit::SubmitArgs),
    /// Process jobs from the broker and store results as Parquet (S3 or a directory); run as
    /// many as you like on the same broker.
    #[command(after_long_help = "Examples:
  offpeak worker --broker nats://127.0.0.1:4222 --output s3://my-bucket/offpeak \\
      --catalog catalog.toml --concurrency 256

  # batch-style: exit once the queue has been idle for a minute
  OFFPEAK_BROKER=nats://127.0.0.1:4222 OFFPEAK_OUTPUT=/data/offpeak OFFPEAK_CATALOG=catalog.toml \\
      offpeak worker --exit-when-idle 60s")]
    Worker(worker_cmd::WorkerArgs),
    /// Show a run's progress against its manifest: done, failed, pending, cost, savings.
    #[command(after_long_help = "Examples:
  offpeak status nightly-1 --output s3://my-bucket/offpeak --watch

  # in a pipeline: exit 0 when every job succeeded, 3 if any failed, 1 after 12 hours
  offpeak status nightly-1 --output s3://my-bucket/offpeak --wait --timeout 12h")]
    Status(status::StatusArgs),
    /// Export a run's de-duplicated results as one Parquet, JSONL or OpenAI Batch output file.
    #[command(after_long_help = "Examples:
  offpeak results nightly-1 --output s3://my-bucket/offpeak --format openai-batch -o out.jsonl
  offpeak results nightly-1 --output out --format parquet -o nightly-1.parquet")]
    Results(results::ResultsArgs),
    /// Write one self-contained HTML page (inline SVG charts; opens offline) of where a run's
    /// money and time went: outcomes, cost against the dearest provider, splits by provider,
    /// route and model, completions over time, deferrals, deadlines, latency, failures.
    #[command(after_long_help = "Examples:
  offpeak report nightly-1 --output s3://my-bucket/offpeak -o nightly-1.html

  # two runs side by side, the price windows of a newer catalog shaded
  offpeak report nightly-2 --compare nightly-1 --output out -o compare.html --catalog catalog.toml")]
    Report(report_cmd::ReportArgs),
    /// Benchmarks: throughput, concurrency, submit, market (routing policies), scale.
    #[command(
        subcommand,
        after_long_help = "Examples:
  offpeak bench market --scenario examples/scenarios/market-cheap-rate-limited.toml
  offpeak bench throughput --help"
    )]
    Bench(bench::BenchCommand),
    /// Run the provider simulator (OpenAI- and Anthropic-compatible HTTP APIs) until ctrl-c.
    #[command(after_long_help = "Examples:
  # every catalog provider, no errors; point an SDK at the printed base URL
  offpeak sim --catalog examples/catalog.toml --port 8080

  # latencies, errors, 429s and outages from a scenario, reachable from other machines
  offpeak sim --scenario examples/scenarios/cheap-rate-limited.toml --host 0.0.0.0")]
    Sim(SimArgs),
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Scenario file (TOML): providers, latencies, error rates, rate limits, outages.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Build the scenario from a provider catalog instead (no errors, low latency).
    #[arg(long, conflicts_with = "scenario")]
    catalog: Option<PathBuf>,
    /// TCP port to listen on; each provider is served under `http://HOST:PORT/<provider>/v1`.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on: `127.0.0.1` serves this machine only, `0.0.0.0` every interface.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
}

/// An error and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

/// Marks an error as the user's input being invalid (exit code 2).
pub fn invalid(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: e.into(),
    }
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        let cfg = config::Config::load(cli.config.as_deref()).map_err(invalid)?;
        match cli.command {
            Command::Run(args) => run::run(args, cfg).await,
            Command::Submit(args) => submit::submit(args, cfg).await,
            Command::Worker(args) => worker_cmd::worker(args, cfg).await,
            Command::Status(args) => status::status(args, cfg).await,
            Command::Results(args) => results::results(args).await,
            Command::Report(args) => report_cmd::report(args).await,
            Command::Bench(cmd) => bench::bench(cmd, cfg).await,
            Command::Sim(args) => sim_cmd(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            // Not `{:#}`: the library errors already print their cause, and anyhow would
            // print it again.
            eprintln!("error: {}", producer::error::error_chain(&*f.error));
            ExitCode::from(f.code)
        }
    }
}

async fn sim_cmd(args: SimArgs) -> Result<u8, Failure> {
    let scenario = match (&args.scenario, &args.catalog) {
        (Some(p), _) => run::load_scenario(p)?,
        (None, Some(c)) => sim::Scenario::from_catalog(&input::load_catalog(c)?),
        (None, None) => {
            return Err(invalid(anyhow::anyhow!(
                "give --scenario FILE or --catalog FILE"
            )))
        }
    };
    let addr = std::net::SocketAddr::new(args.host, args.port);
    for p in &scenario.providers {
        println!("{:<16} http://{addr}/{}/v1", p.name, p.name);
    }
    sim::serve_forever(scenario, addr).await?;
    Ok(0)
}
