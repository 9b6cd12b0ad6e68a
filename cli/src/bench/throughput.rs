//! `offpeak bench throughput` (not built yet).

use crate::config::Config;
use crate::Failure;

/// Arguments of `offpeak bench throughput`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, _cfg: Config) -> Result<u8, Failure> {
    Err(anyhow::anyhow!("offpeak bench throughput is not implemented yet").into())
}
