//! `msgd user move USER --to STORE`: moves a user's mail to another store
//! while both run. Runs on the source store (its admin socket); the
//! source pushes to the target's replica routes (`replica.rs`).
//!
//! 1. Copy: every mailbox and message, in chunks, at the same UIDs with
//!    the same UIDVALIDITY (`Store::restore_mailbox` on the target), so
//!    clients keep their caches. Deliveries and sessions go on meanwhile.
//! 2. Hold: the user is marked moving here (`store::moving`): LMTP answers
//!    451 4.2.1 (the MTA retries), logins `NO [UNAVAILABLE]` /
//!    `-ERR [SYS/TEMP]`. Then, until a round finds nothing new: copy what
//!    arrived meanwhile, and send the source's flags and expunges.
//! 3. Verify: the target's summary (mailboxes, UIDVALIDITY, UIDs, sizes,
//!    flags) must equal the source's; otherwise the hold is lifted and the
//!    command fails (the user stays here, the target copy is left).
//! 4. Switch mailHost in the directory (`directory::mailhost`), mark the
//!    user moved here (deferred for `moving::HOLD`, longer than any
//!    directory cache: an MTA or proxy still routing here retries), copy
//!    anything that still landed, verify again.
//! 5. Remove the user's mail from this store.
//!
//! Sessions already open on this store when the hold starts are not
//! closed: a change they make after the last round stays here (see
//! docs/migration.md).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::backup::{self, MailboxRecord, MessageRecord, StreamWriter};
use super::replica::{self, Client, Summary, CHUNK_BYTES};
use super::{Ctx, Progress};
use crate::config::Config;
use crate::directory::Recipient;
use crate::store::{FlagOp, Flags, Uid};

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct MoveArgs {
    pub user: String,
    /// The target store (its mailHost name).
    #[arg(long)]
    pub to: String,
    /// Print the result as JSON.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

/// Rounds of "copy what arrived" under the hold before giving up.
const MAX_ROUNDS: usize = 10;

pub async fn run(ctx: &Ctx, a: MoveArgs, p: &Progress) -> anyhow::Result<serde_json::Value> {
    if !ctx.online {
        bail!("user move needs the store running (both stores serve during the move)");
    }
    let account = match ctx
        .directory
        .lookup(&a.user)
        .await
        .map_err(|e| anyhow::anyhow!("directory: {e}"))?
    {
        Some(Recipient::User(acc)) => acc,
        _ => bail!("{}: no such user in the directory", a.user),
    };
    let user = account.address.clone();
    if !crate::deliver::is_own_store(&ctx.config, account.mail_host.as_deref()) {
        bail!(
            "{user} lives on {}, not on this store: run the move there",
            account.mail_host.unwrap_or_default()
        );
    }
    if crate::deliver::is_own_store(&ctx.config, Some(&a.to)) {
        bail!("{} is this store", a.to);
    }
    if ctx.store.moving().deferred(&user).is_some() {
        bail!("{user} is already being moved (or was just moved) from this store");
    }
    let client = Client::new(&ctx.config, &user, &a.to)?;
    let mut sent: HashSet<(String, u32, Uid)> = HashSet::new();

    // 1. bulk copy while everything runs
    let total = replica::summary(&ctx.store, &user).await?.messages();
    p.stage(
        format!("copying {user} to {}", a.to),
        Some(total),
        "messages",
    );
    copy_new(ctx, &client, &user, &mut sent, p).await?;

    // 2. hold, copy the rest, bring flags and expunges over
    // From here client sessions cannot change the user's mail (the store
    // refuses, open sessions end); `begin` returns once every change that
    // started before is committed, so the next copy round sees it.
    ctx.store.moving().begin(&user, &a.to).await?;
    let held = hold_and_switch(ctx, &client, &user, &a.to, &mut sent, p).await;
    let verified = match held {
        Ok(s) => s,
        Err(e) => {
            let _ = ctx.store.moving().abort(&user);
            return Err(e.context(format!("{user} stays on this store")));
        }
    };

    // 5. remove from this store
    p.stage(
        format!("removing {user} from this store"),
        None,
        "mailboxes",
    );
    remove_local(ctx, &user, p)
        .await
        .context("the user was moved, but removing the old copy failed (re-run is not needed; remove it by hand)")?;
    Ok(json!({
        "user": user,
        "to": a.to,
        "target": client.target(),
        "messages": verified.messages(),
        "mailboxes": verified.mailboxes.len(),
        "uids_kept": true,
    }))
}

async fn hold_and_switch(
    ctx: &Ctx,
    client: &Client,
    user: &str,
    to: &str,
    sent: &mut HashSet<(String, u32, Uid)>,
    p: &Progress,
) -> anyhow::Result<Summary> {
    p.stage(format!("copying what arrived for {user}"), None, "messages");
    // Deliveries that passed RCPT before the hold finish within this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mine = settle(ctx, client, user, sent, p).await?;
    // Held: ACLs, JMAP data and contacts no longer change here.
    send_extras(ctx, client, user).await?;
    verify(client, user, &mine).await?;
    p.stage(format!("switching mailHost of {user} to {to}"), None, "");
    crate::directory::mailhost::set_mail_host(&ctx.config, user, to)
        .await
        .context("switching mailHost")?;
    ctx.store.moving().moved(user, to)?;
    tracing::info!(user, to, "user moved: mailHost switched");
    // Anything that still landed here (a delivery that was past RCPT).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mine = settle(ctx, client, user, sent, p).await?;
    verify(client, user, &mine).await?;
    Ok(mine)
}

/// Copies what is new and syncs flags until a round copies nothing.
async fn settle(
    ctx: &Ctx,
    client: &Client,
    user: &str,
    sent: &mut HashSet<(String, u32, Uid)>,
    p: &Progress,
) -> anyhow::Result<Summary> {
    for _ in 0..MAX_ROUNDS {
        let n = copy_new(ctx, client, user, sent, p).await?;
        let mine = replica::summary(&ctx.store, user).await?;
        client
            .request(
                "POST",
                &format!("/msgd/v1/replica/{}/sync", path_user(user)),
                serde_json::to_vec(&mine)?,
                "application/json",
            )
            .await?;
        if n == 0 {
            return Ok(mine);
        }
    }
    bail!("{user}: mail kept arriving through {MAX_ROUNDS} rounds")
}

async fn verify(client: &Client, user: &str, mine: &Summary) -> anyhow::Result<()> {
    let theirs: Summary = serde_json::from_slice(
        &client
            .request(
                "GET",
                &format!("/msgd/v1/replica/{}", path_user(user)),
                Vec::new(),
                "application/json",
            )
            .await?,
    )
    .context("the target's summary")?;
    for (name, b) in &mine.mailboxes {
        let Some(t) = theirs.mailboxes.get(name) else {
            bail!("verification: mailbox {name:?} missing on the target");
        };
        if t.uidvalidity != b.uidvalidity {
            bail!("verification: mailbox {name:?} has another UIDVALIDITY on the target");
        }
        // Deliveries made on the target after the switch (UIDs from the
        // source's UIDNEXT on) are not compared.
        let theirs_old: std::collections::BTreeMap<_, _> = t
            .messages
            .iter()
            .filter(|(u, _)| **u < b.uidnext)
            .map(|(u, v)| (*u, v.clone()))
            .collect();
        if theirs_old != b.messages {
            let missing = b
                .messages
                .keys()
                .filter(|u| !t.messages.contains_key(u))
                .count();
            bail!(
                "verification: mailbox {name:?} differs on the target ({missing} of {} messages missing, or flags differ)",
                b.messages.len()
            );
        }
    }
    Ok(())
}

fn path_user(user: &str) -> String {
    // Addresses are user@domain: only the few characters a path cannot
    // hold need escaping.
    user.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'@' | b'.' | b'-' | b'_' | b'+' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends the user's ACLs, sortOrders, METADATA (the JMAP identities,
/// vacation response, ...) and contacts (`backup_extra.rs`); the target
/// makes its copy equal to them.
async fn send_extras(ctx: &Ctx, client: &Client, user: &str) -> anyhow::Result<()> {
    let Some(idx) = ctx.store.user_index(user).await? else {
        return Ok(());
    };
    let x = super::backup_extra::read(&ctx.store, &ctx.directory, &ctx.config, &idx, true).await?;
    let mut w = StreamWriter::new(Vec::new())?;
    w.user(user, &idx.subscriptions)?;
    w.extras(&x)?;
    client
        .request(
            "POST",
            &format!("/msgd/v1/replica/{}", path_user(user)),
            w.finish()?,
            "application/octet-stream",
        )
        .await
        .context("copying ACLs, JMAP data and contacts")?;
    Ok(())
}

/// Sends every message not sent yet, in chunks of about `CHUNK_BYTES`.
/// Returns how many were sent.
async fn copy_new(
    ctx: &Ctx,
    client: &Client,
    user: &str,
    sent: &mut HashSet<(String, u32, Uid)>,
    p: &Progress,
) -> anyhow::Result<u64> {
    let Some(idx) = ctx.store.user_index(user).await? else {
        return Ok(0);
    };
    let path = format!("/msgd/v1/replica/{}", path_user(user));
    let mut count = 0;
    for mb in &idx.mailboxes {
        let rec = MailboxRecord {
            name: mb.info.name.clone(),
            uidvalidity: mb.info.uidvalidity,
            uidnext: mb.info.uidnext,
            highestmodseq: mb.info.highestmodseq,
            special_use: mb.info.special_use,
            subscribed: mb.info.subscribed,
        };
        let todo: Vec<_> = mb
            .messages
            .iter()
            .filter(|m| !sent.contains(&(rec.name.clone(), rec.uidvalidity, m.uid)))
            .collect();
        let first = sent
            .iter()
            .all(|(n, v, _)| !(n == &rec.name && *v == rec.uidvalidity));
        if todo.is_empty() && !first {
            continue;
        }
        let mut i = 0;
        loop {
            let mut w = StreamWriter::new(Vec::new())?;
            w.user(user, &idx.subscriptions)?;
            w.mailbox(&rec)?;
            let mut bytes = 0;
            let mut uids = Vec::new();
            while i < todo.len() && (bytes < CHUNK_BYTES || uids.is_empty()) {
                let m = todo[i];
                i += 1;
                // Gone meanwhile: expunged, the sync will tell the target.
                let Some(data) = backup::read_indexed(mb, m)? else {
                    continue;
                };
                bytes += data.len();
                w.message(
                    &MessageRecord {
                        uid: m.uid,
                        flags: m.flags.names(),
                        internal_date: m.internal_date,
                        tz_offset_min: m.tz_offset_min,
                        modseq: m.modseq,
                        size: m.size,
                        sha256: backup::sha256_hex(&data),
                    },
                    &data,
                )?;
                uids.push(m.uid);
            }
            let body = w.finish()?;
            client
                .request("POST", &path, body, "application/octet-stream")
                .await
                .with_context(|| format!("copying mailbox {:?}", rec.name))?;
            for u in &uids {
                sent.insert((rec.name.clone(), rec.uidvalidity, *u));
            }
            count += uids.len() as u64;
            p.inc(uids.len() as u64);
            if i >= todo.len() {
                break;
            }
        }
        // Mark the mailbox as announced even when empty.
        sent.insert((rec.name.clone(), rec.uidvalidity, 0));
    }
    Ok(count)
}

/// Deletes the user's mailboxes here (children first) and empties INBOX.
async fn remove_local(ctx: &Ctx, user: &str, p: &Progress) -> anyhow::Result<()> {
    // The move's own handle: the user is held, client mutations are not.
    remove_user_mail(&ctx.store.for_move(), user, p).await
}

/// Deletes every mailbox of `user` on `store` (children first; their files
/// set aside for the expunge grace) and empties INBOX, which the store
/// keeps; fails if a message is left. Used by the move and the purge of
/// deleted users (crate::provision::purge).
pub(crate) async fn remove_user_mail(
    store: &crate::store::Store,
    user: &str,
    p: &Progress,
) -> anyhow::Result<()> {
    let mut boxes: Vec<_> = store.list(user).await?;
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
                Err(e) => return Err(e).with_context(|| format!("deleting {:?}", b.name)),
            }
        }
        p.inc(1);
    }
    let left: u64 = store.usage(user).await?.messages;
    if left != 0 {
        bail!("{left} messages still here after removal");
    }
    // The user's Sieve scripts go with the mail (issue 16).
    store.sieve_remove_user(user).await?;
    Ok(())
}

pub fn cli(config: &Config, args: MoveArgs) -> anyhow::Result<()> {
    let json = args.json;
    let v = super::control::call(config, super::Request::Move(args))?;
    super::emit_line(json, &v, || {
        format!(
            "moved {} ({} messages in {} mailboxes) to {}; UIDs and UIDVALIDITY kept",
            v["user"].as_str().unwrap_or(""),
            v["messages"],
            v["mailboxes"],
            v["to"].as_str().unwrap_or("")
        )
    })?;
    Ok(())
}
