//! `msgd import` from Maildir and mbox, `msgd export` to Maildir.
//! (Skeleton: filled in by the import work.)

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Ctx, Progress};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ImportArgs {
    pub user: String,
    pub src: PathBuf,
}

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ExportArgs {
    pub user: String,
    pub dest: PathBuf,
}

pub async fn run_import(
    _c: &Ctx,
    _a: ImportArgs,
    _p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("import: not built yet")
}

pub async fn run_export(
    _c: &Ctx,
    _a: ExportArgs,
    _p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("export: not built yet")
}

pub fn cli_import(config: &Config, mut args: ImportArgs) -> anyhow::Result<()> {
    args.src = super::absolute(&args.src)?;
    let v = super::control::call(config, super::Request::Import(args))?;
    println!("{v}");
    Ok(())
}

pub fn cli_export(config: &Config, mut args: ExportArgs) -> anyhow::Result<()> {
    args.dest = super::absolute(&args.dest)?;
    let v = super::control::call(config, super::Request::Export(args))?;
    println!("{v}");
    Ok(())
}
