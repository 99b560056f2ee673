//! `msgd backup USER|--all DEST` and `msgd restore SRC [USER]`.
//! (Skeleton: filled in by the backup work.)

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Ctx, Progress};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct BackupArgs {
    /// Back up every user of the store.
    #[arg(long)]
    pub all: bool,
    /// USER DEST, or DEST with --all.
    #[arg(required = true, num_args = 1..=2)]
    pub args: Vec<String>,
}

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct RestoreArgs {
    /// The backup folder.
    pub src: PathBuf,
    /// Restore only this user.
    pub user: Option<String>,
}

pub async fn run_backup(
    _c: &Ctx,
    _a: BackupArgs,
    _p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("backup: not built yet")
}

pub async fn run_restore(
    _c: &Ctx,
    _a: RestoreArgs,
    _p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("restore: not built yet")
}

pub fn cli_backup(config: &Config, args: BackupArgs) -> anyhow::Result<()> {
    let v = super::control::call(config, super::Request::Backup(args))?;
    println!("{v}");
    Ok(())
}

pub fn cli_restore(config: &Config, mut args: RestoreArgs) -> anyhow::Result<()> {
    args.src = super::absolute(&args.src)?;
    let v = super::control::call(config, super::Request::Restore(args))?;
    println!("{v}");
    Ok(())
}
