//! `msgd import USER SRC` from a Maildir (Maildir++ folders, Dovecot
//! keywords) or an mbox file (mboxrd/mboxo, mutt's Status headers), and
//! `msgd export USER DEST` to a Maildir that mbsync, Dovecot and mutt read.
//!
//! Import streams: a blocking reader thread (`maildir.rs`, `mbox.rs`)
//! hands one message at a time through a small bounded channel to the
//! appender here, so memory stays at a few messages whatever the source's
//! size. Messages keep their flags and dates and are appended in batches
//! through the store's writer (durable before the command reports them).
//!
//! Idempotent and resumable: before appending to a mailbox the importer
//! indexes what it holds by (internal date, size); a source message whose
//! date and size match an existing one is compared byte for byte and, if
//! equal, counted as already there and skipped (each existing message
//! matches at most one source message, so true duplicates in the source
//! survive a re-run). Re-running an interrupted import adds only the rest.
//!
//! Quota is not applied to imports (the operator moves existing mail); the
//! message size limit (`smtp.max_message_size`) is. A message the store
//! cannot take is refused with its reason; the rest is imported and the
//! command then fails listing the refusals (exit 1).

#[path = "maildir.rs"]
pub mod maildir;
#[path = "mbox.rs"]
pub mod mbox;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Ctx, Progress};
use crate::config::Config;
use crate::directory::Recipient;
use crate::store::{Flags, MailboxId, MessageMeta, NewMessage, Quota, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A folder with cur/ or new/ is a Maildir, a file an mbox.
    #[default]
    Auto,
    Maildir,
    Mbox,
}

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ImportArgs {
    pub user: String,
    /// A Maildir folder or an mbox file.
    pub src: PathBuf,
    /// Target mailbox: the mbox's messages go here (default INBOX); for a
    /// Maildir, its INBOX does and its folders go below it.
    #[arg(long)]
    pub mailbox: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    #[serde(default)]
    pub format: Format,
    /// How `From ` lines inside mbox messages were quoted.
    #[arg(long, value_enum, default_value_t = mbox::Variant::Mboxrd)]
    #[serde(default = "default_variant")]
    pub mbox_variant: mbox::Variant,
    /// Print the result as JSON.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

fn default_variant() -> mbox::Variant {
    mbox::Variant::Mboxrd
}

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ExportArgs {
    pub user: String,
    /// The Maildir to write (created if missing; a re-run adds what is
    /// missing and updates flags).
    pub dest: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

/// What the reader thread hands to the appender.
enum Event {
    Stage(String, Option<u64>),
    Message {
        mailbox: String,
        data: Vec<u8>,
        flags: Flags,
        date: Option<i64>,
    },
    Refused(String, String),
}

/// Most messages and bytes appended in one store transaction.
const BATCH_MESSAGES: usize = 32;
const BATCH_BYTES: usize = 8 << 20;
/// Refusals listed in the result (all are counted).
const LIST_REFUSED: usize = 20;

/// The directory's account for `user`: canonical address and partition.
async fn account(ctx: &Ctx, user: &str) -> anyhow::Result<(String, Option<String>)> {
    match ctx
        .directory
        .lookup(user)
        .await
        .map_err(|e| anyhow::anyhow!("directory: {e}"))?
    {
        Some(Recipient::User(a)) => Ok((a.address, a.partition)),
        _ => bail!("{user}: no such user in the directory"),
    }
}

pub async fn run_import(
    ctx: &Ctx,
    a: ImportArgs,
    p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    let (user, partition) = account(ctx, &a.user).await?;
    let meta = std::fs::metadata(&a.src).with_context(|| format!("{}", a.src.display()))?;
    let format = match a.format {
        Format::Auto if meta.is_dir() => Format::Maildir,
        Format::Auto => Format::Mbox,
        f => f,
    };
    let base = match &a.mailbox {
        Some(m) => {
            crate::store::normalize_name(m).map_err(|e| anyhow::anyhow!("--mailbox {m:?}: {e}"))?
        }
        None => "INBOX".to_string(),
    };
    let max = ctx.config.smtp.max_message_size as usize;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(4);
    let src = a.src.clone();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        match format {
            Format::Mbox => read_mbox(&src, &base, a.mbox_variant, max, &tx),
            _ => read_maildir(&src, &base, max, &tx),
        }
    });
    ctx.store
        .ensure_user(&user, partition.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("{user}: {e}"))?;
    let mut imp = Importer {
        ctx,
        user: user.clone(),
        known: HashMap::new(),
        batch: Vec::new(),
        batch_mailbox: String::new(),
        batch_bytes: 0,
        imported: 0,
        skipped: 0,
        refused: Vec::new(),
        refused_count: 0,
        mailboxes: HashSet::new(),
    };
    let mut failure = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Stage(name, total) => {
                if let Err(e) = imp.flush().await {
                    failure = Some(e);
                    break;
                }
                p.stage(name, total, "messages")
            }
            Event::Refused(origin, reason) => {
                imp.refuse(origin, reason);
                p.inc(1);
            }
            Event::Message {
                mailbox,
                data,
                flags,
                date,
            } => {
                if let Err(e) = imp.add(mailbox, data, flags, date).await {
                    failure = Some(e);
                    break;
                }
                p.inc(1);
            }
        }
    }
    drop(rx);
    if let Some(e) = failure {
        let _ = reader.await;
        return Err(e.context(format!(
            "import stopped after {} messages (re-run to resume)",
            imp.imported
        )));
    }
    imp.flush().await?;
    reader
        .await
        .context("the reader failed")?
        .with_context(|| format!("reading {}", a.src.display()))?;
    let mut mailboxes: Vec<_> = imp.mailboxes.into_iter().collect();
    mailboxes.sort();
    let v = json!({
        "user": user,
        "source": a.src,
        "format": if format == Format::Mbox { "mbox" } else { "maildir" },
        "imported": imp.imported,
        "already_there": imp.skipped,
        "refused": imp.refused_count,
        "refusals": imp.refused,
        "mailboxes": mailboxes,
    });
    if imp.refused_count > 0 {
        let first = imp
            .refused
            .iter()
            .map(|r| {
                format!(
                    "{}: {}",
                    r["source"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "imported {} messages ({} already there), refused {}: {}",
            imp.imported,
            imp.skipped,
            imp.refused_count,
            first
        );
    }
    Ok(v)
}

fn send(tx: &tokio::sync::mpsc::Sender<Event>, ev: Event) -> anyhow::Result<()> {
    tx.blocking_send(ev)
        .map_err(|_| anyhow::anyhow!("the import stopped"))
}

fn read_maildir(
    root: &std::path::Path,
    base: &str,
    max: usize,
    tx: &tokio::sync::mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let (folders, bad) = maildir::folders(root)?;
    for (name, why) in bad {
        send(tx, Event::Refused(format!("folder {name}"), why))?;
    }
    for f in folders {
        let mailbox = if f.mailbox == "INBOX" {
            base.to_string()
        } else if base == "INBOX" {
            f.mailbox.clone()
        } else {
            format!("{base}/{}", f.mailbox)
        };
        let keywords = maildir::read_keywords(&f.path)?;
        let (files, bad) = maildir::message_files(&f.path);
        send(
            tx,
            Event::Stage(format!("importing {mailbox}"), Some(files.len() as u64)),
        )?;
        for (path, why) in bad {
            send(tx, Event::Refused(path, why))?;
        }
        for sf in files {
            let origin = sf.path.display().to_string();
            if sf.len as usize > max {
                send(
                    tx,
                    Event::Refused(
                        origin,
                        format!("larger than the message limit ({max} bytes)"),
                    ),
                )?;
                continue;
            }
            let data = match read_regular(&sf.path, max) {
                Ok(d) => d,
                Err(e) => {
                    send(tx, Event::Refused(origin, format!("{e:#}")))?;
                    continue;
                }
            };
            if data.contains(&0) {
                send(
                    tx,
                    Event::Refused(origin, "contains NUL bytes (not a mail message)".into()),
                )?;
                continue;
            }
            if data.is_empty() {
                send(tx, Event::Refused(origin, "empty file".into()))?;
                continue;
            }
            let flags = maildir::flags_from_name(&sf.name, &keywords);
            send(
                tx,
                Event::Message {
                    mailbox: mailbox.clone(),
                    data: maildir::to_crlf(&data),
                    flags,
                    date: Some(sf.mtime),
                },
            )?;
        }
    }
    Ok(())
}

/// Reads a file that must still be a regular file (not swapped for a
/// symlink since it was listed) of at most `max` bytes.
fn read_regular(path: &std::path::Path, max: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.is_file() {
        bail!("not a regular file");
    }
    let mut data = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut data)?;
    if data.len() > max {
        bail!("larger than the message limit ({max} bytes)");
    }
    Ok(data)
}

fn read_mbox(
    path: &std::path::Path,
    mailbox: &str,
    variant: mbox::Variant,
    max: usize,
    tx: &tokio::sync::mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        bail!("{} is neither a Maildir nor an mbox file", path.display());
    }
    let mut r = mbox::Reader::new(
        std::io::BufReader::with_capacity(64 * 1024, f),
        variant,
        max,
    );
    send(tx, Event::Stage(format!("importing {mailbox}"), None))?;
    while let Some(m) = r.next_message()? {
        match m {
            Ok(m) => send(
                tx,
                Event::Message {
                    mailbox: mailbox.to_string(),
                    data: m.data,
                    flags: m.flags,
                    date: m.date,
                },
            )?,
            Err(r) => send(
                tx,
                Event::Refused(format!("message {}", r.number), r.reason),
            )?,
        }
    }
    Ok(())
}

/// What a target mailbox already holds, for the duplicate check.
struct Known {
    id: MailboxId,
    by_key: HashMap<(i64, u64), Vec<MessageMeta>>,
}

struct Importer<'c> {
    ctx: &'c Ctx,
    user: String,
    known: HashMap<String, Known>,
    batch: Vec<NewMessage>,
    batch_mailbox: String,
    batch_bytes: usize,
    imported: u64,
    skipped: u64,
    refused: Vec<serde_json::Value>,
    refused_count: u64,
    mailboxes: HashSet<String>,
}

impl Importer<'_> {
    fn refuse(&mut self, origin: String, reason: String) {
        self.refused_count += 1;
        if self.refused.len() < LIST_REFUSED {
            self.refused
                .push(json!({"source": origin, "reason": reason}));
        }
    }

    async fn known(&mut self, mailbox: &str) -> anyhow::Result<&mut Known> {
        if !self.known.contains_key(mailbox) {
            let store = &self.ctx.store;
            let snap = match store.snapshot(&self.user, mailbox).await {
                Ok(s) => s,
                Err(StoreError::NoSuchMailbox) => {
                    store
                        .create_mailbox(&self.user, mailbox, None)
                        .await
                        .map_err(|e| anyhow::anyhow!("creating mailbox {mailbox:?}: {e}"))?;
                    let _ = store.subscribe(&self.user, mailbox, true).await;
                    store.snapshot(&self.user, mailbox).await?
                }
                Err(e) => bail!("mailbox {mailbox:?}: {e}"),
            };
            let mut by_key: HashMap<(i64, u64), Vec<MessageMeta>> = HashMap::new();
            for m in snap.messages {
                by_key.entry((m.internal_date, m.size)).or_default().push(m);
            }
            self.known.insert(
                mailbox.to_string(),
                Known {
                    id: snap.info.id,
                    by_key,
                },
            );
            self.mailboxes.insert(mailbox.to_string());
        }
        Ok(self.known.get_mut(mailbox).expect("inserted above"))
    }

    async fn add(
        &mut self,
        mailbox: String,
        data: Vec<u8>,
        flags: Flags,
        date: Option<i64>,
    ) -> anyhow::Result<()> {
        let mailbox = crate::store::normalize_name(&mailbox)
            .map_err(|e| anyhow::anyhow!("mailbox {mailbox:?}: {e}"))?;
        let date = date.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let store = self.ctx.store.clone();
        let known = self.known(&mailbox).await?;
        // Already imported by an earlier run?
        if let Some(cands) = known.by_key.get_mut(&(date, data.len() as u64)) {
            let mut hit = None;
            for (i, m) in cands.iter().enumerate() {
                if store.read(known.id, m).await.ok().as_deref() == Some(&data[..]) {
                    hit = Some(i);
                    break;
                }
            }
            if let Some(i) = hit {
                cands.swap_remove(i);
                self.skipped += 1;
                return Ok(());
            }
        }
        if self.batch_mailbox != mailbox
            || self.batch.len() >= BATCH_MESSAGES
            || self.batch_bytes + data.len() > BATCH_BYTES
        {
            self.flush().await?;
            self.batch_mailbox = mailbox;
        }
        self.batch_bytes += data.len();
        self.batch.push(NewMessage {
            data: std::sync::Arc::new(data),
            flags,
            internal_date: Some((date, 0)),
        });
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let msgs = std::mem::take(&mut self.batch);
        let n = msgs.len() as u64;
        self.batch_bytes = 0;
        self.ctx
            .store
            .append_batch(
                &self.user,
                &self.batch_mailbox,
                msgs,
                Quota::default(),
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!("appending to {:?}: {e}", self.batch_mailbox))?;
        self.imported += n;
        Ok(())
    }
}

pub async fn run_export(
    ctx: &Ctx,
    a: ExportArgs,
    p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    let user = match account(ctx, &a.user).await {
        Ok((u, _)) => u,
        // A user gone from the directory can still be exported.
        Err(_) => crate::directory::canonical_address(&a.user),
    };
    let boxes = ctx.store.list(&user).await?;
    if boxes.is_empty() {
        bail!("{user} has no mailboxes in this store");
    }
    let total: u64 = boxes.iter().map(|b| b.exists as u64).sum();
    p.stage(format!("exporting {user}"), Some(total), "messages");
    let store = ctx.store.clone();
    let dest = a.dest.clone();
    let p = p.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        let (mut written, mut kept, mut dropped_kw) = (0u64, 0u64, 0usize);
        let mut folders = Vec::new();
        let mut refused = Vec::new();
        for b in boxes {
            let folder = match maildir::mailbox_folder(&b.name) {
                Ok(f) => f,
                Err(e) => {
                    refused.push(e);
                    continue;
                }
            };
            let snap = handle.block_on(store.snapshot(&user, &b.name))?;
            let mut out = maildir::open_out(&dest, folder.as_deref())?;
            for m in &snap.messages {
                out.learn_keywords(&m.flags);
            }
            for m in &snap.messages {
                let data = handle
                    .block_on(store.read(snap.info.id, m))
                    .with_context(|| format!("reading {} uid {}", b.name, m.uid))?;
                let unique = format!(
                    "{}.M{}U{}.msgd",
                    m.internal_date.max(0),
                    m.uid,
                    snap.info.uidvalidity
                );
                let (w, d) = out.write(&unique, &data, &m.flags, m.internal_date)?;
                dropped_kw += d;
                match w {
                    maildir::Wrote::New => written += 1,
                    maildir::Wrote::Kept => kept += 1,
                }
                p.inc(1);
            }
            out.finish()?;
            folders.push(json!({"mailbox": b.name, "folder": folder.unwrap_or_else(|| ".".into()), "messages": snap.messages.len()}));
        }
        if let Ok(d) = std::fs::File::open(&dest) {
            d.sync_all()?;
        }
        if !refused.is_empty() {
            bail!("exported {written} messages; mailboxes not exported: {}", refused.join("; "));
        }
        Ok(json!({
            "user": user,
            "dest": dest,
            "written": written,
            "already_there": kept,
            "keywords_without_letter": dropped_kw,
            "folders": folders,
        }))
    })
    .await?
}

pub fn cli_import(config: &Config, mut args: ImportArgs) -> anyhow::Result<()> {
    args.src = super::absolute(&args.src)?;
    let json = args.json;
    let v = super::control::call(config, super::Request::Import(args))?;
    super::emit_line(json, &v, || {
        format!(
            "imported {} messages into {} ({} already there) from {}",
            v["imported"],
            v["user"].as_str().unwrap_or(""),
            v["already_there"],
            v["source"].as_str().unwrap_or("")
        )
    })?;
    Ok(())
}

pub fn cli_export(config: &Config, mut args: ExportArgs) -> anyhow::Result<()> {
    args.dest = super::absolute(&args.dest)?;
    let json = args.json;
    let v = super::control::call(config, super::Request::Export(args))?;
    super::emit_line(json, &v, || {
        format!(
            "exported {} messages of {} to {} ({} already there)",
            v["written"],
            v["user"].as_str().unwrap_or(""),
            v["dest"].as_str().unwrap_or(""),
            v["already_there"]
        )
    })?;
    Ok(())
}
