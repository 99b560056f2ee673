//! `msgd store stats [--json]`: the original product's db_stat check.
//! (Skeleton: filled in by the metrics work.)

use serde::{Deserialize, Serialize};

use super::{Ctx, Progress};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

pub async fn run(_ctx: &Ctx, _args: StatsArgs, _p: &Progress) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("store stats: not built yet")
}

pub fn cli(config: &Config, args: StatsArgs) -> anyhow::Result<()> {
    let json = args.json;
    let v = super::control::call(config, super::Request::Stats(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{v}");
    }
    Ok(())
}
