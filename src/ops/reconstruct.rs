//! `msgd reconstruct [USER|--all]` and `msgd verify [--repair] [USER]`.
//!
//! Reconstruct rebuilds a user's index from their message files (the
//! store side is `store/reconstruct.rs`, whose module doc says what the
//! files record and what comes back): on a running server it replaces that
//! user's index through the writer (sessions see the new state, JMAP
//! clients resynchronise); with the mboxlist deleted, the CLI opens the
//! store on an empty database and `--all` walks every partition.
//!
//! Verify checks every index entry against its file and every file
//! against the index; `--repair` expunges entries without a usable file
//! (moving the file, if any, to `<partition>/lost+found/`) and moves
//! orphan files and folders to lost+found. It exits 1 while problems
//! remain.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Ctx, Progress};
use crate::config::Config;

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ReconstructArgs {
    /// Every user found in the partitions.
    #[arg(long)]
    pub all: bool,
    pub user: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct VerifyArgs {
    /// Repair what can be repaired.
    #[arg(long)]
    pub repair: bool,
    pub user: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

/// The store's progress hook on an operator command's progress.
struct Ticks(Progress);

impl crate::store::Tick for Ticks {
    fn total(&self, n: u64) {
        self.0.set_total(Some(n));
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

pub async fn run_reconstruct(
    c: &Ctx,
    a: ReconstructArgs,
    p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    let users: Vec<String> = match (&a.user, a.all) {
        (Some(_), true) => anyhow::bail!("give a user or --all, not both"),
        (None, false) => anyhow::bail!("give a user or --all"),
        (Some(u), false) => vec![u.clone()],
        (None, true) => {
            p.stage("scanning partitions", None, "users");
            let mut v: Vec<String> = c
                .store
                .users_on_disk()
                .await?
                .into_iter()
                .map(|(u, _)| u)
                .collect();
            v.sort();
            v
        }
    };
    if users.is_empty() {
        anyhow::bail!("no user folders found in the partitions");
    }
    let tick: Arc<dyn crate::store::Tick> = Arc::new(Ticks(p.clone()));
    let mut reports = Vec::new();
    let (mut messages, mut problems) = (0u64, 0usize);
    for u in &users {
        p.stage(format!("reconstructing {u}"), None, "messages");
        let r = c
            .store
            .reconstruct_user(u, tick.clone())
            .await
            .map_err(|e| anyhow::anyhow!("reconstructing {u}: {e}"))?;
        tracing::info!(user = %u, messages = r.messages, problems = r.problems.len(), "reconstructed");
        messages += r.messages;
        problems += r.problems.len();
        reports.push(r);
    }
    Ok(json!({
        "users": reports,
        "messages": messages,
        "problems": problems,
        "online": c.online,
    }))
}

pub async fn run_verify(c: &Ctx, a: VerifyArgs, p: &Progress) -> anyhow::Result<serde_json::Value> {
    let users = match &a.user {
        Some(u) => vec![u.clone()],
        None => {
            let mut v = c.store.indexed_users().await?;
            v.sort();
            v
        }
    };
    let tick: Arc<dyn crate::store::Tick> = Arc::new(Ticks(p.clone()));
    let mut reports = Vec::new();
    let (mut found, mut remaining) = (0usize, 0usize);
    for u in &users {
        p.stage(format!("verifying {u}"), None, "messages");
        let r = c
            .store
            .verify_user(u, a.repair, tick.clone())
            .await
            .map_err(|e| anyhow::anyhow!("verifying {u}: {e}"))?;
        found += r.problems.len();
        remaining += r.problems.iter().filter(|x| x.repaired.is_none()).count();
        reports.push(r);
    }
    Ok(json!({
        "users": reports,
        "problems": found,
        "remaining": remaining,
        "repair": a.repair,
    }))
}

fn print_problems(v: &serde_json::Value) {
    for pr in v["problems"].as_array().into_iter().flatten() {
        let what = match (pr["mailbox"].as_u64(), pr["uid"].as_u64()) {
            (Some(m), Some(u)) => format!("mailbox {m} uid {u}"),
            (Some(m), None) => format!("mailbox {m}"),
            _ => String::new(),
        };
        let fix = pr["repaired"]
            .as_str()
            .map(|r| format!(" -> {r}"))
            .unwrap_or_default();
        println!(
            "  {} {what} {} ({}){fix}",
            pr["kind"].as_str().unwrap_or(""),
            pr["path"].as_str().unwrap_or(""),
            pr["detail"].as_str().unwrap_or("")
        );
    }
}

pub fn cli_reconstruct(config: &Config, args: ReconstructArgs) -> anyhow::Result<()> {
    let json = args.json;
    let v = super::control::call(config, super::Request::Reconstruct(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for u in v["users"].as_array().into_iter().flatten() {
            println!(
                "{}: {} messages, {} bytes (partition {})",
                u["user"].as_str().unwrap_or(""),
                u["messages"],
                u["bytes"],
                u["partition"].as_str().unwrap_or("")
            );
            for m in u["mailboxes"].as_array().into_iter().flatten() {
                println!(
                    "  {:<30} id {:<6} uidvalidity {}{} messages {} uidnext {}",
                    m["name"].as_str().unwrap_or(""),
                    m["id"],
                    m["uidvalidity"],
                    if m["uidvalidity_kept"].as_bool() == Some(true) {
                        ""
                    } else {
                        " (new)"
                    },
                    m["messages"],
                    m["uidnext"]
                );
            }
            print_problems(u);
        }
    }
    let problems = v["problems"].as_u64().unwrap_or(0);
    if problems > 0 {
        anyhow::bail!(
            "{problems} message files could not be indexed (see above; `msgd verify` lists them)"
        );
    }
    Ok(())
}

pub fn cli_verify(config: &Config, args: VerifyArgs) -> anyhow::Result<()> {
    let json = args.json;
    let v = super::control::call(config, super::Request::Verify(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for u in v["users"].as_array().into_iter().flatten() {
            println!(
                "{}: {} entries, {} files, {} problems",
                u["user"].as_str().unwrap_or(""),
                u["entries"],
                u["files"],
                u["problems"].as_array().map_or(0, |a| a.len())
            );
            print_problems(u);
        }
    }
    let remaining = v["remaining"].as_u64().unwrap_or(0);
    if remaining > 0 {
        anyhow::bail!("verify: {remaining} problems remain");
    }
    Ok(())
}
