//! `msgd expire`: retention rules (`[[store.expire.rule]]`), the purge of
//! expunged message files after `store.expire.purge_after`, and the
//! trimming of the expunged table to `store.expire.expunged_keep` records
//! per mailbox (QRESYNC keeps working within the kept window; older
//! clients get a full resync, `store/expire.rs`).
//!
//! One worker per partition runs in parallel: it applies the rules to the
//! users of its partition (removals go through the store's writer, as an
//! EXPUNGE does: sessions see VANISHED/EXPUNGE, files are set aside),
//! purges the partition's `expunged/` folder and trims the expunge records
//! of its users. The store role also runs this every
//! `store.expire.interval` seconds (`schedule`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Progress};
use crate::config::Config;

/// Most UIDs removed by one writer job.
const REMOVE_CHUNK: usize = 1000;

#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExpireArgs {
    /// Show what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
struct PartitionResult {
    partition: String,
    users: u64,
    removed: u64,
    bytes: u64,
    /// Messages removed per rule (index in `[[store.expire.rule]]`).
    by_rule: Vec<u64>,
    purged_files: u64,
    purged_bytes: u64,
    trimmed: u64,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub async fn run(c: &Ctx, a: ExpireArgs, p: &Progress) -> anyhow::Result<serde_json::Value> {
    let cfg = c.config.store.expire.clone();
    for (i, r) in cfg.rule.iter().enumerate() {
        if !r.has_condition() {
            anyhow::bail!("store.expire.rule[{i}] has no condition: refusing to remove everything");
        }
    }
    let by_part = c.store.users_by_partition().await?;
    p.stage(
        if a.dry_run {
            "expire (dry run)"
        } else {
            "expiring"
        },
        None,
        "messages",
    );
    let t = now();
    let mut workers = Vec::new();
    for (name, _folder) in c.store.partition_folders() {
        let users = by_part.get(&name).cloned().unwrap_or_default();
        let (store, cfg, p, dry) = (c.store.clone(), cfg.clone(), p.clone(), a.dry_run);
        workers.push(tokio::spawn(async move {
            let mut r = PartitionResult {
                partition: name.clone(),
                users: users.len() as u64,
                by_rule: vec![0; cfg.rule.len()],
                ..Default::default()
            };
            if !cfg.rule.is_empty() {
                for u in &users {
                    for e in store.expire_candidates(u, cfg.rule.clone(), t).await? {
                        for (_, size, rule) in &e.messages {
                            if let Some(n) = r.by_rule.get_mut(*rule) {
                                *n += 1;
                            }
                            if dry {
                                r.removed += 1;
                                r.bytes += size;
                                p.inc(1);
                            }
                        }
                        if dry {
                            continue;
                        }
                        let uids: Vec<u32> = e.messages.iter().map(|m| m.0).collect();
                        for chunk in uids.chunks(REMOVE_CHUNK) {
                            let (n, b) = store.expire_remove(e.mailbox, chunk.to_vec()).await?;
                            r.removed += n;
                            r.bytes += b;
                            p.inc(n);
                        }
                    }
                }
            }
            if !dry {
                let (f, b) = store.purge_expunged(&name, now(), cfg.purge_after).await?;
                r.purged_files = f;
                r.purged_bytes = b;
                if cfg.expunged_keep > 0 {
                    for (id, _) in store
                        .expunged_counts(users.clone(), cfg.expunged_keep)
                        .await?
                    {
                        loop {
                            let n = store.trim_expunged(id, cfg.expunged_keep).await?;
                            r.trimmed += n;
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
            }
            anyhow::Ok(r)
        }));
    }
    let mut parts = Vec::new();
    for w in workers {
        parts.push(w.await??);
    }
    let sum = |f: fn(&PartitionResult) -> u64| parts.iter().map(f).sum::<u64>();
    Ok(json!({
        "dry_run": a.dry_run,
        "removed": sum(|r| r.removed),
        "bytes": sum(|r| r.bytes),
        "purged_files": sum(|r| r.purged_files),
        "purged_bytes": sum(|r| r.purged_bytes),
        "trimmed": sum(|r| r.trimmed),
        "partitions": parts,
    }))
}

/// Runs expire every `store.expire.interval` seconds until shutdown (the
/// store role; 0: never).
pub async fn schedule(ctx: Ctx, shutdown: CancellationToken) {
    let every = ctx.config.store.expire.interval;
    if every == 0 {
        return;
    }
    let ctx = Arc::new(ctx);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
        }
        match run(&ctx, ExpireArgs::default(), &Progress::new()).await {
            Ok(v) => tracing::info!(
                removed = v["removed"].as_u64().unwrap_or(0),
                purged = v["purged_files"].as_u64().unwrap_or(0),
                trimmed = v["trimmed"].as_u64().unwrap_or(0),
                "scheduled expire done"
            ),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "scheduled expire failed"),
        }
    }
}

pub fn cli(config: &Config, args: ExpireArgs) -> anyhow::Result<()> {
    let json = args.json;
    let v = super::control::call(config, super::Request::Expire(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let verb = if v["dry_run"].as_bool() == Some(true) {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{verb} {} messages ({} bytes); purged {} expunged files ({} bytes); trimmed {} expunge records",
        v["removed"], v["bytes"], v["purged_files"], v["purged_bytes"], v["trimmed"]
    );
    for p in v["partitions"].as_array().into_iter().flatten() {
        println!(
            "  partition {}: {} users, {verb} {} (per rule {})",
            p["partition"].as_str().unwrap_or(""),
            p["users"],
            p["removed"],
            p["by_rule"]
        );
    }
    Ok(())
}
