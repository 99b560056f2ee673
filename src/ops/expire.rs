//! `msgd expire`: retention rules, purge of expunged files, trimming of
//! the expunged table. (Skeleton: filled in by the expire work.)

use serde::{Deserialize, Serialize};

use super::{Ctx, Progress};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ExpireArgs {
    /// Show what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(_c: &Ctx, _a: ExpireArgs, _p: &Progress) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("expire: not built yet")
}

pub fn cli(config: &Config, args: ExpireArgs) -> anyhow::Result<()> {
    let v = super::control::call(config, super::Request::Expire(args))?;
    println!("{v}");
    Ok(())
}
