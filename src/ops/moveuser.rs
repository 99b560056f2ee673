//! `msgd user move USER --to STORE`: move a user's mail to another store
//! while both run. (Skeleton: filled in by the move work.)

use serde::{Deserialize, Serialize};

use super::{Ctx, Progress};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct MoveArgs {
    pub user: String,
    /// The target store (its mailHost name).
    #[arg(long)]
    pub to: String,
}

pub async fn run(_c: &Ctx, _a: MoveArgs, _p: &Progress) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("user move: not built yet")
}

pub fn cli(config: &Config, args: MoveArgs) -> anyhow::Result<()> {
    let v = super::control::call(config, super::Request::Move(args))?;
    println!("{v}");
    Ok(())
}
