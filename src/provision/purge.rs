//! The purge of deleted users (docs/admin.md, "Deletion and purge"):
//! `msgd user delete` only marks a user deleted; later — the store role's
//! schedule every `PURGE_EVERY`, or `msgd user purge` — users marked
//! deleted longer than `provision.purge_after` whose mail lives on this
//! store (mailHost empty or `store.host`) lose their mail here, then their
//! directory entry (`Provisioner::user_remove`, actor `msgd:purge`). A
//! purge never runs in the same step as the deletion.
//!
//! The store has no "remove a user" operation: every mailbox but INBOX is
//! deleted and INBOX is emptied (as `msgd user move` leaves a moved user's
//! old store); an empty INBOX record may stay behind.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Actor, Provisioner, User};
use crate::config::Config;
use crate::ops::{Ctx, Progress};
use crate::store::{FlagOp, Flags, Uid};

/// How often the store role looks for users to purge.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct PurgeArgs {
    /// Also users deleted less than `provision.purge_after` ago.
    #[arg(long)]
    pub now: bool,
    /// Show who would be purged without purging.
    #[arg(long)]
    pub dry_run: bool,
}

fn purge_actor() -> Actor {
    Actor::Site {
        id: "msgd:purge".into(),
    }
}

/// Whether the user's mail lives on this store.
fn on_this_store(config: &Config, u: &User) -> bool {
    match u.mail_host.as_deref() {
        None | Some("") => true,
        Some(h) => h.eq_ignore_ascii_case(&config.store.host),
    }
}

/// Purges the due users; one user's failure does not stop the others.
pub async fn run(
    ctx: &Ctx,
    args: PurgeArgs,
    progress: &Progress,
) -> anyhow::Result<serde_json::Value> {
    let p = Provisioner::open(ctx.config.clone())?;
    let before = if args.now {
        i64::MAX
    } else {
        super::now().saturating_sub(ctx.config.provision.purge_after as i64)
    };
    let due: Vec<User> = p
        .deleted_users(before)
        .await?
        .into_iter()
        .filter(|u| on_this_store(&ctx.config, u))
        .collect();
    progress.stage("purging deleted users", Some(due.len() as u64), "users");
    let mut purged = Vec::new();
    let mut failed = Vec::new();
    for u in &due {
        if args.dry_run {
            purged.push(u.address.clone());
            continue;
        }
        let r = async {
            remove_mail(ctx, &u.address).await?;
            p.user_remove(&purge_actor(), &u.address).await?;
            anyhow::Ok(())
        }
        .await;
        match r {
            Ok(()) => {
                tracing::info!(user = %u.address, "purged a deleted user");
                purged.push(u.address.clone());
            }
            Err(e) => {
                tracing::error!(user = %u.address, error = %format!("{e:#}"), "purge failed");
                failed.push(serde_json::json!({"user": u.address, "error": format!("{e:#}")}));
            }
        }
        progress.inc(1);
    }
    Ok(serde_json::json!({
        "dry_run": args.dry_run,
        "purged": purged,
        "failed": failed,
    }))
}

/// Deletes every mailbox of the user here (children first) and empties
/// INBOX.
async fn remove_mail(ctx: &Ctx, user: &str) -> anyhow::Result<()> {
    let store = &ctx.store;
    let mut boxes = store.list(user).await?;
    boxes.sort_by(|a, b| b.name.len().cmp(&a.name.len()).then(b.name.cmp(&a.name)));
    for b in boxes {
        if b.name == "INBOX" {
            let snap = store.snapshot(user, "INBOX").await?;
            let uids: Vec<Uid> = snap.messages.iter().map(|m| m.uid).collect();
            if !uids.is_empty() {
                let del = Flags {
                    bits: Flags::DELETED,
                    keywords: vec![],
                };
                store
                    .store_flags(snap.info.id, uids.clone(), FlagOp::Add, del, None)
                    .await?;
                store.expunge(snap.info.id, Some(uids)).await?;
            }
        } else {
            match store.delete_mailbox(user, &b.name).await {
                Ok(()) | Err(crate::store::StoreError::NoSuchMailbox) => {}
                Err(e) => anyhow::bail!("deleting {:?}: {e}", b.name),
            }
        }
    }
    Ok(())
}

/// The store role's schedule.
pub async fn schedule(ctx: Ctx, shutdown: CancellationToken) {
    let ctx = Arc::new(ctx);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
        if let Err(e) = run(&ctx, PurgeArgs::default(), &Progress::new()).await {
            tracing::error!(error = %format!("{e:#}"), "scheduled purge failed");
        }
    }
}

/// `msgd user purge`: in the running store, or on the store directly when
/// none runs.
pub fn cli(config: &Config, args: PurgeArgs, json: bool) -> anyhow::Result<()> {
    let v = crate::ops::control::call(config, crate::ops::Request::Purge(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let verb = if v["dry_run"].as_bool() == Some(true) {
            "would purge"
        } else {
            "purged"
        };
        for u in v["purged"].as_array().into_iter().flatten() {
            println!("{verb} {}", u.as_str().unwrap_or(""));
        }
        for f in v["failed"].as_array().into_iter().flatten() {
            eprintln!("msgd: purge of {} failed: {}", f["user"], f["error"]);
        }
    }
    if v["failed"].as_array().is_some_and(|a| !a.is_empty()) {
        anyhow::bail!("some users could not be purged");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_users_of_this_store_are_purged_here() {
        let mut c = Config::default();
        c.store.host = "store1.example".into();
        let u = |h: Option<&str>| User {
            address: "a@x.test".into(),
            mail_host: h.map(str::to_string),
            ..Default::default()
        };
        assert!(on_this_store(&c, &u(None)));
        assert!(on_this_store(&c, &u(Some(""))));
        assert!(on_this_store(&c, &u(Some("Store1.example"))));
        assert!(!on_this_store(&c, &u(Some("store2.example"))));
    }
}
