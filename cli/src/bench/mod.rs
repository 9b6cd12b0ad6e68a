//! `offpeak bench …`: performance figures measured against baselines taken in the same run
//! (machines are shared and noisy; ratios mean more than absolute numbers). Each bench prints a
//! readable table and, as its last line, one summary line of `key=value` pairs.

mod common;
mod concurrency;
mod market;
mod report;
mod scale;
mod submit;
mod throughput;

use crate::config::Config;
use crate::Failure;

/// The benches.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Jobs/s of the raw broker, of raw HTTP to the simulator, and of the full pipeline.
    Throughput(throughput::Args),
    /// One worker at in-flight limits C against a 2 s-latency simulator: jobs/s against
    /// C/latency, and peak RSS.
    Concurrency(concurrency::Args),
    /// Submit rate and producer peak RSS on generated 100k / 1M-job files.
    Submit(submit::Args),
    /// Cost of routing policies on one job trace and provider market, on a simulated clock.
    Market(market::Args),
    /// Jobs/s with 1, 2 and 4 worker processes.
    Scale(scale::Args),
    /// `offpeak report` on a synthetic 1M-job run: build time, peak RSS, HTML size.
    Report(report::Args),
}

pub async fn bench(cmd: BenchCommand, cfg: Config) -> Result<u8, Failure> {
    // Thousands of sockets in this process (the simulator) and in the worker processes it
    // starts, which inherit the limit.
    worker::lifecycle::raise_fd_limit();
    match cmd {
        BenchCommand::Throughput(a) => throughput::run(a, cfg).await,
        BenchCommand::Concurrency(a) => concurrency::run(a, cfg).await,
        BenchCommand::Submit(a) => submit::run(a, cfg).await,
        BenchCommand::Market(a) => market::run(a, cfg).await,
        BenchCommand::Scale(a) => scale::run(a, cfg).await,
        BenchCommand::Report(a) => report::run(a).await,
    }
}
