//! `offpeak bench submit` (not built yet).

use crate::config::Config;
use crate::Failure;

/// Arguments of `offpeak bench submit`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, _cfg: Config) -> Result<u8, Failure> {
    Err(anyhow::anyhow!("offpeak bench submit is not implemented yet").into())
}
