//! `msgd reconstruct [USER|--all]` and `msgd verify [--repair]`.
//! (Skeleton: filled in by the reconstruct work.)

use serde::{Deserialize, Serialize};

use super::{Ctx, Progress};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ReconstructArgs {
    /// Every user found in the partitions.
    #[arg(long)]
    pub all: bool,
    pub user: Option<String>,
}

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct VerifyArgs {
    /// Repair what can be repaired.
    #[arg(long)]
    pub repair: bool,
    pub user: Option<String>,
}

pub async fn run_reconstruct(
    _c: &Ctx,
    _a: ReconstructArgs,
    _p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("reconstruct: not built yet")
}

pub async fn run_verify(
    _c: &Ctx,
    _a: VerifyArgs,
    _p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("verify: not built yet")
}

pub fn cli_reconstruct(config: &Config, args: ReconstructArgs) -> anyhow::Result<()> {
    let v = super::control::call(config, super::Request::Reconstruct(args))?;
    println!("{v}");
    Ok(())
}

pub fn cli_verify(config: &Config, args: VerifyArgs) -> anyhow::Result<()> {
    let v = super::control::call(config, super::Request::Verify(args))?;
    println!("{v}");
    Ok(())
}
