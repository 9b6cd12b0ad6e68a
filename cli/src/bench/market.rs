//! `offpeak bench market` (not built yet).

use crate::config::Config;
use crate::Failure;

/// Arguments of `offpeak bench market`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, _cfg: Config) -> Result<u8, Failure> {
    Err(anyhow::anyhow!("offpeak bench market is not implemented yet").into())
}
