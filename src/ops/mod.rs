//! Operator commands that work on a store (issue 14): statistics, backup
//! and restore, reconstruct and verify, expire, import and export, moving
//! a user to another store.
//!
//! One implementation per command, run where the store is open:
//! - a running store role serves requests on its admin socket
//!   (`control.rs`, `<data_dir>/admin.sock`, mode 0600: the file
//!   permissions are the access control) and runs them inside the server,
//!   next to deliveries and sessions, through the store's own writer;
//! - with no server running, the CLI opens the store itself and runs the
//!   same function in its own process.
//!
//! Either way the caller sees the same progress (a bar on a terminal,
//! periodic lines otherwise) and the same result (`serde_json::Value`,
//! printed by the command's own formatter, or as JSON with `--json`).
//!
//! Each command owns one file: its clap arguments (which are also its
//! serialized request), its `run` on a [`Ctx`] and its `cli` entry.

pub mod backup;
pub mod backup_extra;
pub mod backup_target;
pub mod configcmd;
pub mod control;
// Issue 16: `msgd dkim keygen|show`.
pub mod dkim;
pub mod expire;
pub mod migrate;
pub mod moveuser;
pub mod progress;
pub mod reconstruct;
pub mod replica;
pub mod stats;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::directory::Directory;
use crate::store::Store;

pub use progress::Progress;

/// A request to the store, as sent over the admin socket (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Stats(stats::StatsArgs),
    Backup(backup::BackupArgs),
    Restore(backup::RestoreArgs),
    Reconstruct(reconstruct::ReconstructArgs),
    Verify(reconstruct::VerifyArgs),
    Expire(expire::ExpireArgs),
    Import(migrate::ImportArgs),
    Export(migrate::ExportArgs),
    Move(moveuser::MoveArgs),
    /// `msgd user purge` (src/provision/purge.rs).
    Purge(crate::provision::purge::PurgeArgs),
}

impl Request {
    /// The command's name, for progress lines and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Stats(_) => "stats",
            Request::Backup(_) => "backup",
            Request::Restore(_) => "restore",
            Request::Reconstruct(_) => "reconstruct",
            Request::Verify(_) => "verify",
            Request::Expire(_) => "expire",
            Request::Import(_) => "import",
            Request::Export(_) => "export",
            Request::Move(_) => "move",
            Request::Purge(_) => "purge",
        }
    }
}

/// What a command runs against.
#[derive(Clone)]
pub struct Ctx {
    pub config: Arc<Config>,
    pub store: Store,
    pub directory: Arc<Directory>,
    /// True inside a running server (deliveries and sessions go on);
    /// false when the CLI opened the store itself.
    pub online: bool,
    /// The store role's recent cache samples (`stats::History`); None offline.
    pub history: Option<Arc<stats::History>>,
}

/// Runs one request to its end.
pub async fn dispatch(
    ctx: &Ctx,
    req: Request,
    progress: &Progress,
) -> anyhow::Result<serde_json::Value> {
    match req {
        Request::Stats(a) => stats::run(ctx, a, progress).await,
        Request::Backup(a) => backup::run_backup(ctx, a, progress).await,
        Request::Restore(a) => backup::run_restore(ctx, a, progress).await,
        Request::Reconstruct(a) => reconstruct::run_reconstruct(ctx, a, progress).await,
        Request::Verify(a) => reconstruct::run_verify(ctx, a, progress).await,
        Request::Expire(a) => expire::run(ctx, a, progress).await,
        Request::Import(a) => migrate::run_import(ctx, a, progress).await,
        Request::Export(a) => migrate::run_export(ctx, a, progress).await,
        Request::Move(a) => moveuser::run(ctx, a, progress).await,
        Request::Purge(a) => crate::provision::purge::run(ctx, a, progress).await,
    }
}

/// A path given on the command line, made absolute against the CLI's
/// working folder before it travels to the server (whose folder differs).
pub fn absolute(p: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    Ok(std::path::absolute(p)?)
}

/// A command's answer on stdout: with `--json` the value as JSON (pretty),
/// else the text `text` makes (nothing when it is empty). Every CLI
/// subcommand with a `--json` flag answers through this or `emit_line`.
pub fn emit<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    emit_as(json, true, value, text)
}

/// `emit` with the JSON on one line (import, export, user move: their
/// `--json` answer has always been one line, read line by line).
pub fn emit_line<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    emit_as(json, false, value, text)
}

fn emit_as<T: serde::Serialize + ?Sized>(
    json: bool,
    pretty: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        let out = if pretty {
            serde_json::to_string_pretty(value)?
        } else {
            serde_json::to_string(value)?
        };
        println!("{out}");
    } else {
        let t = text();
        if !t.is_empty() {
            println!("{}", t.trim_end_matches('\n'));
        }
    }
    Ok(())
}
