//! `msgd backup USER|--all DEST` and `msgd restore SRC [USER]`: per-user,
//! consistent, incremental backups into a folder, with a manifest of
//! sha256 checksums per run; restore into the same or another store, user
//! or mailbox name, without duplicating what is there. Format: docs/backup.md.
//!
//! Two encodings of the same records (kept stable for `msgd user move`):
//! - the **folder** (`DEST/msgd-backup.json`, `DEST/users/<user>/`): a
//!   manifest per run (`manifest-<run>.json`) naming content-addressed
//!   blobs (`blobs/<ab>/<sha256>`), shared by every run of that user, so a
//!   later run writes only blobs it does not have;
//! - the **stream** ([`StreamWriter`], [`StreamReader`]): one user after
//!   another as JSON record lines, each message record followed by its raw
//!   bytes, for a pipe or an HTTP body.
//!
//! Consistency: a user's index comes from one read transaction
//! (`Store::user_index`); message files are immutable until expunged, so a
//! file that is gone when copied was expunged meanwhile: it is left out
//! and counted (`vanished`). Restore goes through `Store::restore_mailbox`
//! (same UIDs and UIDVALIDITY; the writer, group commit, fsync, journal),
//! falling back to plain appends with checksum de-duplication when the
//! target mailbox was used under another UIDVALIDITY.
//!
//! Everything read back is hostile: a manifest may only name blobs inside
//! its user's folder under SRC (relative, no `..`, no symlink out), every
//! blob is read only up to its recorded size and checked against its
//! sha256, record lines are bounded; a bad blob is an error for that
//! message, the rest is restored, and the command then fails.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::backup_target::Target as BackupTarget;
use super::{Ctx, Progress};
use crate::config::Config;
use crate::store::{
    Flags, MailboxIndex, MessageMeta, NewMessage, Quota, RestoreMailbox, RestoreMessage,
    SpecialUse, Store, StoreError, Uid, UserIndex,
};

/// Format name and version of the folder and of the stream.
pub const FORMAT: &str = "msgd-backup";
pub const VERSION: u32 = 1;
/// First line of a stream.
pub const STREAM_MAGIC: &[u8] = b"MSGD-BACKUP-STREAM 1\n";
/// Longest record line of a stream (a mailbox name is at most 512 bytes,
/// flags are few).
pub const MAX_RECORD_LINE: usize = 64 * 1024;
/// Largest manifest read back (100,000 messages take about 25 MB).
pub const MAX_MANIFEST: u64 = 512 << 20;
/// Largest message read back from a backup.
pub const MAX_BLOB: u64 = 1 << 30;
/// Messages per restore transaction, and their bytes.
const CHUNK_MESSAGES: usize = 256;
const CHUNK_BYTES: u64 = 32 << 20;
/// Parallel users by default, and at most.
const DEFAULT_JOBS: usize = 2;
const MAX_JOBS: usize = 16;

// ------------------------------------------------------------------------
// arguments

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
#[command(allow_missing_positional = true)]
pub struct BackupArgs {
    /// Back up every user of the store.
    #[arg(long)]
    pub all: bool,
    /// The user to back up (not with --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub user: Option<String>,
    /// The backup folder, or s3://bucket/prefix (`[backup.s3]`).
    pub dest: PathBuf,
    /// Users backed up in parallel (at most 16).
    #[arg(long, default_value_t = DEFAULT_JOBS)]
    #[serde(default = "default_jobs")]
    pub jobs: usize,
    /// Print the result as JSON.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct RestoreArgs {
    /// The backup folder, or s3://bucket/prefix (`[backup.s3]`).
    pub src: PathBuf,
    /// Restore only this user (as named in the backup).
    pub user: Option<String>,
    /// Restore into this user instead (one user only).
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// Put every restored mailbox below this one (`P/INBOX`, `P/Sent`, ...).
    #[arg(long, value_name = "NAME")]
    pub mailbox_prefix: Option<String>,
    /// Users restored in parallel (at most 16).
    #[arg(long, default_value_t = DEFAULT_JOBS)]
    #[serde(default = "default_jobs")]
    pub jobs: usize,
    /// Print the result as JSON.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

fn default_jobs() -> usize {
    DEFAULT_JOBS
}

// ------------------------------------------------------------------------
// records (shared by the folder's manifest and the stream)

/// A mailbox as recorded: everything needed to put it back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxRecord {
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highestmodseq: u64,
    #[serde(default)]
    pub special_use: Option<SpecialUse>,
    #[serde(default)]
    pub subscribed: bool,
}

/// A message as recorded (its bytes are the blob / follow the record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub uid: Uid,
    /// IMAP flag names (`\Seen`, `$Label`).
    pub flags: Vec<String>,
    /// INTERNALDATE, unix seconds, and the zone offset in minutes.
    pub internal_date: i64,
    #[serde(default)]
    pub tz_offset_min: i16,
    #[serde(default)]
    pub modseq: u64,
    /// Message bytes.
    pub size: u64,
    /// sha256 of the message bytes, lowercase hex.
    pub sha256: String,
}

impl MailboxRecord {
    fn of(info: &crate::store::MailboxInfo) -> MailboxRecord {
        MailboxRecord {
            name: info.name.clone(),
            uidvalidity: info.uidvalidity,
            uidnext: info.uidnext,
            highestmodseq: info.highestmodseq,
            special_use: info.special_use,
            subscribed: info.subscribed,
        }
    }
}

impl MessageRecord {
    fn of(m: &MessageMeta, sha256: String) -> MessageRecord {
        MessageRecord {
            uid: m.uid,
            flags: m.flags.names(),
            internal_date: m.internal_date,
            tz_offset_min: m.tz_offset_min,
            modseq: m.modseq,
            size: m.size,
            sha256,
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ------------------------------------------------------------------------
// the stream

/// One item of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// Starts a user: the mailboxes and messages that follow are theirs.
    User {
        user: String,
        #[serde(default)]
        subscriptions: Vec<String>,
    },
    /// Starts a mailbox of the current user.
    Mailbox(MailboxRecord),
    /// A message of the current mailbox; exactly `size` raw bytes follow
    /// the record's line.
    Message(MessageRecord),
    /// The end: totals of the whole stream (a stream without it was cut).
    End { messages: u64, bytes: u64 },
    /// The current user's ACLs, JMAP data and METADATA
    /// (`backup_extra::Extras`); exactly `size` bytes of JSON follow the
    /// line.
    Extras { size: u64, sha256: String },
}

/// Writes a stream: the magic line, then records.
pub struct StreamWriter<W: Write> {
    w: W,
    messages: u64,
    bytes: u64,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(mut w: W) -> std::io::Result<StreamWriter<W>> {
        w.write_all(STREAM_MAGIC)?;
        Ok(StreamWriter {
            w,
            messages: 0,
            bytes: 0,
        })
    }

    fn line(&mut self, r: &Record) -> std::io::Result<()> {
        let mut b = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        if b.len() >= MAX_RECORD_LINE {
            return Err(std::io::Error::other("record line too long"));
        }
        b.push(b'\n');
        self.w.write_all(&b)
    }

    pub fn user(&mut self, user: &str, subscriptions: &[String]) -> std::io::Result<()> {
        self.line(&Record::User {
            user: user.to_string(),
            subscriptions: subscriptions.to_vec(),
        })
    }

    pub fn mailbox(&mut self, m: &MailboxRecord) -> std::io::Result<()> {
        self.line(&Record::Mailbox(m.clone()))
    }

    /// A message record and its bytes (`m.size` and `m.sha256` must be
    /// those of `data`).
    pub fn message(&mut self, m: &MessageRecord, data: &[u8]) -> std::io::Result<()> {
        if m.size != data.len() as u64 {
            return Err(std::io::Error::other(
                "message size differs from its record",
            ));
        }
        self.line(&Record::Message(m.clone()))?;
        self.w.write_all(data)?;
        self.messages += 1;
        self.bytes += m.size;
        Ok(())
    }

    /// The current user's extras (`backup_extra.rs`): a record line and
    /// the JSON bytes it announces.
    pub fn extras(&mut self, x: &super::backup_extra::Extras) -> std::io::Result<()> {
        let data = serde_json::to_vec(x).map_err(std::io::Error::other)?;
        if data.len() as u64 > super::backup_extra::MAX_EXTRAS {
            return Err(std::io::Error::other("extras record too large"));
        }
        self.line(&Record::Extras {
            size: data.len() as u64,
            sha256: sha256_hex(&data),
        })?;
        self.w.write_all(&data)
    }

    /// Writes the end record and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        let (messages, bytes) = (self.messages, self.bytes);
        self.line(&Record::End { messages, bytes })?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// One item read from a stream; a message comes with its checked bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    User {
        user: String,
        subscriptions: Vec<String>,
    },
    Mailbox(MailboxRecord),
    Message(MessageRecord, Vec<u8>),
    End {
        messages: u64,
        bytes: u64,
    },
    Extras(Box<super::backup_extra::Extras>),
}

/// Reads a stream, checking as it goes: bounded record lines, messages no
/// larger than `max_message` (memory is what is really there, never what
/// a record claims beyond that), sha256 of every message, records in a
/// sensible order, totals at the end. Any violation is an error.
pub struct StreamReader<R: BufRead> {
    r: R,
    max_message: u64,
    in_user: bool,
    in_mailbox: bool,
    ended: bool,
    messages: u64,
    bytes: u64,
}

impl<R: BufRead> StreamReader<R> {
    pub fn new(mut r: R, max_message: u64) -> anyhow::Result<StreamReader<R>> {
        let mut magic = vec![0u8; STREAM_MAGIC.len()];
        r.read_exact(&mut magic)
            .context("not a backup stream (too short)")?;
        anyhow::ensure!(
            magic == STREAM_MAGIC,
            "not a backup stream of version {VERSION}"
        );
        Ok(StreamReader {
            r,
            max_message,
            in_user: false,
            in_mailbox: false,
            ended: false,
            messages: 0,
            bytes: 0,
        })
    }

    /// The next item; `None` after the end record. A stream that stops
    /// before its end record is an error.
    pub fn next_item(&mut self) -> anyhow::Result<Option<Item>> {
        if self.ended {
            return Ok(None);
        }
        let mut line = Vec::new();
        (&mut self.r)
            .take(MAX_RECORD_LINE as u64)
            .read_until(b'\n', &mut line)?;
        anyhow::ensure!(!line.is_empty(), "backup stream cut short (no end record)");
        anyhow::ensure!(
            line.last() == Some(&b'\n'),
            "backup stream: record line too long or cut"
        );
        let rec: Record =
            serde_json::from_slice(&line[..line.len() - 1]).context("backup stream: bad record")?;
        Ok(Some(match rec {
            Record::User {
                user,
                subscriptions,
            } => {
                self.in_user = true;
                self.in_mailbox = false;
                Item::User {
                    user,
                    subscriptions,
                }
            }
            Record::Mailbox(m) => {
                anyhow::ensure!(self.in_user, "backup stream: mailbox before any user");
                self.in_mailbox = true;
                Item::Mailbox(m)
            }
            Record::Message(m) => {
                anyhow::ensure!(self.in_mailbox, "backup stream: message outside a mailbox");
                anyhow::ensure!(
                    m.size <= self.max_message,
                    "backup stream: message of {} bytes (limit {})",
                    m.size,
                    self.max_message
                );
                anyhow::ensure!(
                    is_sha256_hex(&m.sha256),
                    "backup stream: bad checksum field"
                );
                let mut data = Vec::new();
                (&mut self.r).take(m.size).read_to_end(&mut data)?;
                anyhow::ensure!(
                    data.len() as u64 == m.size,
                    "backup stream cut inside message UID {}",
                    m.uid
                );
                anyhow::ensure!(
                    sha256_hex(&data) == m.sha256,
                    "backup stream: checksum mismatch of message UID {}",
                    m.uid
                );
                self.messages += 1;
                self.bytes += m.size;
                Item::Message(m, data)
            }
            Record::End { messages, bytes } => {
                anyhow::ensure!(
                    messages == self.messages && bytes == self.bytes,
                    "backup stream: end record counts {messages} messages / {bytes} bytes, read {} / {}",
                    self.messages,
                    self.bytes
                );
                self.ended = true;
                Item::End { messages, bytes }
            }
            Record::Extras { size, sha256 } => {
                anyhow::ensure!(self.in_user, "backup stream: extras before any user");
                anyhow::ensure!(
                    size <= super::backup_extra::MAX_EXTRAS,
                    "backup stream: extras record of {size} bytes (limit {})",
                    super::backup_extra::MAX_EXTRAS
                );
                let mut data = Vec::new();
                (&mut self.r).take(size).read_to_end(&mut data)?;
                anyhow::ensure!(
                    data.len() as u64 == size,
                    "backup stream cut inside the extras record"
                );
                anyhow::ensure!(
                    sha256_hex(&data) == sha256,
                    "backup stream: checksum mismatch of the extras record"
                );
                // Messages after it need a mailbox record again.
                self.in_mailbox = false;
                Item::Extras(Box::new(
                    serde_json::from_slice(&data).context("backup stream: bad extras record")?,
                ))
            }
        }))
    }
}

/// Reads the message bytes of an index entry from the store's file.
/// `Ok(None)`: the file is gone (expunged since the index was read).
pub fn read_indexed(mb: &MailboxIndex, m: &MessageMeta) -> anyhow::Result<Option<Vec<u8>>> {
    let path = mb.message_file(m.uid);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(u64::from(m.offset)))?;
    let mut data = Vec::with_capacity(m.size.min(MAX_BLOB) as usize);
    f.take(m.size).read_to_end(&mut data)?;
    anyhow::ensure!(
        data.len() as u64 == m.size,
        "{} is shorter than its index entry",
        path.display()
    );
    Ok(Some(data))
}

/// Writes one user's index as stream records (user, mailboxes, messages;
/// no end record: the caller finishes the stream). Messages for which
/// `skip(mailbox, meta)` is true are left out (what the receiver already
/// has); files gone meanwhile are left out. Returns (messages, vanished).
pub fn write_index_stream<W: Write>(
    idx: &UserIndex,
    w: &mut StreamWriter<W>,
    mut skip: impl FnMut(&MailboxRecord, &MessageMeta) -> bool,
    progress: &Progress,
) -> anyhow::Result<(u64, u64)> {
    w.user(&idx.user, &idx.subscriptions)?;
    let (mut sent, mut vanished) = (0, 0);
    for mb in &idx.mailboxes {
        let rec = MailboxRecord::of(&mb.info);
        w.mailbox(&rec)?;
        for m in &mb.messages {
            progress.inc(1);
            if skip(&rec, m) {
                continue;
            }
            let Some(data) = read_indexed(mb, m)? else {
                vanished += 1;
                continue;
            };
            w.message(&MessageRecord::of(m, sha256_hex(&data)), &data)?;
            sent += 1;
        }
    }
    Ok((sent, vanished))
}

// ------------------------------------------------------------------------
// restoring records into a store (folder and stream alike)

/// Where restored mail goes.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Restore into this user instead of the recorded one.
    pub as_user: Option<String>,
    /// Put mailboxes below this one.
    pub mailbox_prefix: Option<String>,
}

impl Target {
    pub fn user<'a>(&'a self, recorded: &'a str) -> &'a str {
        self.as_user.as_deref().unwrap_or(recorded)
    }

    pub fn mailbox(&self, recorded: &str) -> String {
        match &self.mailbox_prefix {
            Some(p) => format!("{}/{recorded}", p.trim_end_matches('/')),
            None => recorded.to_string(),
        }
    }
}

/// Counts of a restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applied {
    /// Messages written at their recorded UID.
    pub restored: u64,
    /// Messages appended with a new UID (the target mailbox had another
    /// UIDVALIDITY).
    pub renumbered: u64,
    /// Messages already there (same UID and UIDVALIDITY, or same checksum).
    pub present: u64,
    pub bytes: u64,
}

impl Applied {
    fn add(&mut self, o: &Applied) {
        self.restored += o.restored;
        self.renumbered += o.renumbered;
        self.present += o.present;
        self.bytes += o.bytes;
    }
}

/// Puts one chunk of a recorded mailbox's messages (bytes already checked)
/// into `user`'s mailbox `name`: at their UIDs with the recorded
/// UIDVALIDITY when possible, else appended after a checksum
/// de-duplication against what the mailbox holds. Used by restore and
/// by the user move.
pub async fn apply_chunk(
    store: &Store,
    user: &str,
    name: &str,
    mailbox: &MailboxRecord,
    messages: Vec<(MessageRecord, Vec<u8>)>,
) -> anyhow::Result<Applied> {
    let want = RestoreMailbox {
        name: name.to_string(),
        uidvalidity: mailbox.uidvalidity,
        uidnext: mailbox.uidnext,
        highestmodseq: mailbox.highestmodseq,
        special_use: mailbox.special_use,
    };
    let bytes: HashMap<Uid, u64> = messages.iter().map(|(m, _)| (m.uid, m.size)).collect();
    let list: Vec<RestoreMessage> = messages
        .iter()
        .map(|(m, d)| RestoreMessage {
            uid: m.uid,
            flags: Flags::from_names(&m.flags),
            internal_date: m.internal_date,
            tz_offset_min: m.tz_offset_min,
            data: Arc::new(d.clone()),
        })
        .collect();
    match store.restore_mailbox(user, want, list).await {
        Ok(r) => Ok(Applied {
            restored: r.inserted.len() as u64,
            renumbered: 0,
            present: r.present.len() as u64,
            bytes: r.inserted.iter().filter_map(|u| bytes.get(u)).sum(),
        }),
        Err(StoreError::UidValidityChanged) => append_new(store, user, name, messages).await,
        Err(e) => Err(e).with_context(|| format!("restoring into {user} {name}")),
    }
}

/// The fallback: append the messages whose checksum the mailbox does not
/// hold yet, with their flags and dates (new UIDs).
async fn append_new(
    store: &Store,
    user: &str,
    name: &str,
    messages: Vec<(MessageRecord, Vec<u8>)>,
) -> anyhow::Result<Applied> {
    let snap = store.snapshot(user, name).await?;
    let mut have = HashSet::new();
    for part in snap.messages.chunks(CHUNK_MESSAGES) {
        for d in store
            .read_many(snap.info.id, part)
            .await?
            .into_iter()
            .flatten()
        {
            have.insert(sha256_hex(&d));
        }
    }
    let mut out = Applied::default();
    let mut batch = Vec::new();
    for (m, d) in messages {
        if !have.insert(m.sha256.clone()) {
            out.present += 1;
            continue;
        }
        out.renumbered += 1;
        out.bytes += m.size;
        batch.push(NewMessage {
            data: Arc::new(d),
            flags: Flags::from_names(&m.flags),
            internal_date: Some((m.internal_date, m.tz_offset_min)),
        });
    }
    if !batch.is_empty() {
        store
            .append_batch(user, name, batch, Quota::default(), None)
            .await
            .with_context(|| format!("appending to {user} {name}"))?;
    }
    Ok(out)
}

/// Subscribes the restored names that were subscribed (never
/// unsubscribes anything).
async fn apply_subscriptions(
    store: &Store,
    user: &str,
    target: &Target,
    recorded: &[String],
) -> anyhow::Result<()> {
    let have: HashSet<String> = store.subscriptions(user).await?.into_iter().collect();
    for n in recorded {
        let name = target.mailbox(n);
        if !have.contains(&name) && crate::store::normalize_name(&name).is_ok() {
            store.subscribe(user, &name, true).await?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------
// the folder

/// The folder's marker file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderMarker {
    pub format: String,
    pub version: u32,
}

/// A mailbox of a manifest: its record and its messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestMailbox {
    #[serde(flatten)]
    pub mailbox: MailboxRecord,
    pub messages: Vec<ManifestMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestMessage {
    #[serde(flatten)]
    pub message: MessageRecord,
    /// The blob, relative to the user's folder (`blobs/ab/<sha256>`).
    pub blob: String,
}

/// Totals of one backup run of one user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunTotals {
    pub messages: u64,
    pub bytes: u64,
    /// Blobs this run wrote (the incremental part).
    pub new_blobs: u64,
    pub new_bytes: u64,
    /// Messages expunged between the index read and their copy.
    pub vanished: u64,
}

/// One run's manifest (`users/<user>/manifest-<run>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub user: String,
    /// `<unix seconds>-<nanoseconds>`, zero-padded: sorts by time.
    pub run: String,
    /// RFC 3339 time of the run.
    pub created: String,
    /// The run this one was incremental to, if any.
    pub previous: Option<String>,
    pub subscriptions: Vec<String>,
    pub mailboxes: Vec<ManifestMailbox>,
    /// METADATA entries (RFC 5464) of the user's mailboxes and the user's
    /// private server entries.
    #[serde(default)]
    pub metadata: Vec<MetadataRecord>,
    pub totals: RunTotals,
    /// ACLs, JMAP sortOrder, contacts (`backup_extra.rs`); absent in
    /// manifests written before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<super::backup_extra::Extras>,
}

/// One METADATA entry (RFC 5464).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRecord {
    /// The mailbox; None: a server entry.
    pub mailbox: Option<String>,
    /// `/private/...` or `/shared/...`.
    pub entry: String,
    /// The value, base64.
    pub value: String,
}

/// Largest METADATA value restored.
const MAX_META_VALUE: usize = 1 << 20;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The METADATA entries of a user's mailboxes and their private server
/// entries.
pub(crate) async fn read_metadata(
    store: &Store,
    idx: &UserIndex,
) -> anyhow::Result<Vec<MetadataRecord>> {
    use base64::Engine;
    let roots = || vec!["/private".to_string(), "/shared".to_string()];
    let mut out = Vec::new();
    let mut places: Vec<(Option<String>, u64, Vec<String>)> =
        vec![(None, 0, vec!["/private".into()])];
    places.extend(
        idx.mailboxes
            .iter()
            .map(|m| (Some(m.info.name.clone()), m.info.id, roots())),
    );
    for (mailbox, id, entries) in places {
        let got = match store
            .get_metadata(id, &idx.user, entries, crate::store::MetaDepth::Infinity)
            .await
        {
            Ok(g) => g,
            // Deleted since the index was read.
            Err(StoreError::NoSuchMailbox) => continue,
            Err(e) => return Err(e.into()),
        };
        for (entry, value) in got {
            if let Some(v) = value {
                out.push(MetadataRecord {
                    mailbox: mailbox.clone(),
                    entry,
                    value: b64().encode(v),
                });
            }
        }
    }
    Ok(out)
}

/// Restores METADATA entries the target does not have yet (never
/// overwrites a value set since).
async fn apply_metadata(
    store: &Store,
    user: &str,
    target: &Target,
    records: &[MetadataRecord],
) -> anyhow::Result<()> {
    use base64::Engine;
    let limits = crate::store::MetaLimits {
        max_value: MAX_META_VALUE,
        // The store compares as i64: the largest that stays positive.
        max_entries: i64::MAX as u64,
        max_bytes: i64::MAX as u64,
    };
    for r in records {
        anyhow::ensure!(
            (r.entry.starts_with("/private/") || r.entry.starts_with("/shared/"))
                && r.entry.len() <= 1024
                && !r.entry.chars().any(|c| c.is_control()),
            "bad METADATA entry name in the manifest: {:?}",
            r.entry
        );
        anyhow::ensure!(
            r.value.len() <= MAX_META_VALUE * 4 / 3 + 4,
            "METADATA value of {} too large",
            r.entry
        );
        let value = b64()
            .decode(&r.value)
            .with_context(|| format!("METADATA value of {}", r.entry))?;
        let id = match &r.mailbox {
            None => 0,
            Some(name) => store.status(user, &target.mailbox(name)).await?.id,
        };
        let have = store
            .get_metadata(
                id,
                user,
                vec![r.entry.clone()],
                crate::store::MetaDepth::Zero,
            )
            .await?;
        if have.first().is_some_and(|(_, v)| v.is_some()) {
            continue;
        }
        match store
            .set_metadata(id, user, user, vec![(r.entry.clone(), Some(value))], limits)
            .await?
        {
            Ok(()) => {}
            Err(e) => anyhow::bail!("METADATA {}: refused ({e:?})", r.entry),
        }
    }
    Ok(())
}

/// A user's folder name: safe characters kept, everything else %XX (so
/// no user name makes a path of its own).
pub fn user_folder(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b'+') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

fn blob_rel(sha: &str) -> String {
    format!("blobs/{}/{sha}", &sha[..2])
}

/// Checks a blob path named by a manifest: relative, plain components
/// only, under `blobs/`, and (after resolving links) inside `root`.
pub fn safe_blob_path(root: &Path, user_dir: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(rel);
    anyhow::ensure!(
        !rel.is_empty()
            && p.components().all(|c| matches!(c, Component::Normal(_)))
            && p.starts_with("blobs"),
        "manifest names a path outside the backup: {rel:?}"
    );
    let full = user_dir.join(p);
    if let Ok(real) = full.canonicalize() {
        anyhow::ensure!(
            real.starts_with(root),
            "manifest names a path outside the backup: {rel:?}"
        );
    }
    Ok(full)
}

/// Reads a blob (confined to the user's `blobs/`, at most `m.size`
/// bytes): exactly `m.size` bytes and the right sha256, or an error
/// saying what is wrong.
fn read_blob(
    t: &BackupTarget,
    udir: &str,
    rel: &str,
    m: &MessageRecord,
) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(m.size <= MAX_BLOB, "message of {} bytes: too large", m.size);
    let path = t.describe_key(&format!("{udir}/{rel}"));
    let data = t
        .get_blob(udir, rel, m.size)
        .with_context(|| format!("blob {path} (truncated or corrupted?)"))?;
    anyhow::ensure!(
        data.len() as u64 == m.size,
        "blob {path} is {} bytes, the manifest says {} (truncated or corrupted)",
        data.len(),
        m.size
    );
    anyhow::ensure!(
        sha256_hex(&data) == m.sha256,
        "blob {path} does not match its checksum (corrupted)"
    );
    Ok(data)
}

#[cfg(test)]
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, max: u64) -> anyhow::Result<T> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        f.metadata()?.len() <= max,
        "{} is larger than {max} bytes",
        path.display()
    );
    let mut b = Vec::new();
    f.take(max).read_to_end(&mut b)?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))
}

/// `read_json` through a target.
fn read_json_at<T: for<'de> Deserialize<'de>>(
    t: &BackupTarget,
    key: &str,
    max: u64,
) -> anyhow::Result<T> {
    let b = t
        .get(key, max)
        .with_context(|| format!("reading {}", t.describe_key(key)))?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", t.describe_key(key)))
}

/// The key of the newest manifest of a user's folder (`users/<user>`).
fn latest_manifest(t: &BackupTarget, user_dir: &str) -> anyhow::Result<Option<String>> {
    let mut best: Option<String> = None;
    for name in t.list_files(user_dir)? {
        if name.starts_with("manifest-") && name.ends_with(".json") && best.as_ref() < Some(&name) {
            best = Some(name);
        }
    }
    Ok(best.map(|n| format!("{user_dir}/{n}")))
}

fn run_id() -> (String, String) {
    let now = chrono::Utc::now();
    (
        format!(
            "{:012}-{:09}",
            now.timestamp(),
            now.timestamp_subsec_nanos()
        ),
        now.to_rfc3339(),
    )
}

/// Makes sure `dest` is (or becomes) a backup folder.
fn open_dest(dest: &BackupTarget) -> anyhow::Result<()> {
    if dest.size("msgd-backup.json")?.is_some() {
        check_marker(dest)?;
    } else {
        let m = FolderMarker {
            format: FORMAT.into(),
            version: VERSION,
        };
        dest.put_durable("msgd-backup.json", &serde_json::to_vec_pretty(&m)?)
            .with_context(|| format!("creating {}", dest.describe()))?;
    }
    Ok(())
}

fn check_marker(root: &BackupTarget) -> anyhow::Result<()> {
    let m: FolderMarker = read_json_at(root, "msgd-backup.json", 4096)
        .with_context(|| format!("{} is not a msgd backup folder", root.describe()))?;
    anyhow::ensure!(
        m.format == FORMAT && m.version == VERSION,
        "{}: backup format {} version {} (this msgd reads {FORMAT} {VERSION})",
        root.describe(),
        m.format,
        m.version
    );
    Ok(())
}

/// Backs up one user into `dest` (blocking: runs on a blocking thread).
fn backup_user_blocking(
    idx: UserIndex,
    metadata: Vec<MetadataRecord>,
    dest: &BackupTarget,
    progress: &Progress,
    extras: Option<super::backup_extra::Extras>,
) -> anyhow::Result<(String, RunTotals)> {
    let udir = format!("users/{}", user_folder(&idx.user));
    // The sizes of the blobs there (one listing for an object store).
    let _listed = dest.index(&format!("{udir}/blobs"))?;
    // What the previous run recorded: (mailbox, UIDVALIDITY, UID) ->
    // checksum, so unchanged messages are neither read nor written.
    let prev_path = latest_manifest(dest, &udir)?;
    let mut known: HashMap<(String, u32, Uid), (String, u64)> = HashMap::new();
    if let Some(p) = &prev_path {
        let prev: Manifest = read_json_at(dest, p, MAX_MANIFEST)?;
        for mb in prev.mailboxes {
            for m in mb.messages {
                if is_sha256_hex(&m.message.sha256) {
                    known.insert(
                        (
                            mb.mailbox.name.clone(),
                            mb.mailbox.uidvalidity,
                            m.message.uid,
                        ),
                        (m.message.sha256, m.message.size),
                    );
                }
            }
        }
    }
    let mut totals = RunTotals::default();
    let mut mailboxes = Vec::with_capacity(idx.mailboxes.len());
    for mb in &idx.mailboxes {
        let rec = MailboxRecord::of(&mb.info);
        let mut messages = Vec::with_capacity(mb.messages.len());
        for m in &mb.messages {
            progress.inc(1);
            let key = (rec.name.clone(), rec.uidvalidity, m.uid);
            let reuse = known.get(&key).filter(|(sha, size)| {
                *size == m.size
                    && is_sha256_hex(sha)
                    && dest
                        .size(&format!("{udir}/{}", blob_rel(sha)))
                        .is_ok_and(|s| s == Some(m.size))
            });
            let sha = match reuse {
                Some((sha, _)) => sha.clone(),
                None => {
                    let Some(data) = read_indexed(mb, m)? else {
                        totals.vanished += 1;
                        continue;
                    };
                    let sha = sha256_hex(&data);
                    if write_blob(dest, &udir, &sha, &data)? {
                        totals.new_blobs += 1;
                        totals.new_bytes += m.size;
                    }
                    sha
                }
            };
            totals.messages += 1;
            totals.bytes += m.size;
            messages.push(ManifestMessage {
                blob: blob_rel(&sha),
                message: MessageRecord::of(m, sha),
            });
        }
        mailboxes.push(ManifestMailbox {
            mailbox: rec,
            messages,
        });
    }
    // Blobs durable before the manifest that names them.
    dest.sync()?;
    let (run, created) = run_id();
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        user: idx.user.clone(),
        run: run.clone(),
        created,
        previous: prev_path
            .as_ref()
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string),
        subscriptions: idx.subscriptions.clone(),
        mailboxes,
        metadata,
        totals: totals.clone(),
        extras,
    };
    let key = format!("{udir}/manifest-{run}.json");
    dest.put_durable(&key, &serde_json::to_vec(&manifest)?)?;
    Ok((dest.describe_key(&key), totals))
}

/// Writes a blob unless it is there with the right size; true if written.
/// Durable after `dest.sync()` (called before the manifest is written).
fn write_blob(dest: &BackupTarget, udir: &str, sha: &str, data: &[u8]) -> anyhow::Result<bool> {
    let key = format!("{udir}/{}", blob_rel(sha));
    if dest.size(&key)? == Some(data.len() as u64) {
        return Ok(false);
    }
    dest.put(&key, data)?;
    Ok(true)
}

/// Runs `f` over `items` with at most `jobs` at a time; results in order.
async fn bounded<T, R, F, Fut>(items: Vec<T>, jobs: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.clamp(1, MAX_JOBS)));
    let f = Arc::new(f);
    let mut handles = Vec::with_capacity(items.len());
    for it in items {
        let (sem, f) = (sem.clone(), f.clone());
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            f(it).await
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(r) => out.push(r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// (user or None for all, DEST) from the arguments.
fn backup_target(a: &BackupArgs) -> anyhow::Result<(Option<String>, PathBuf)> {
    match (a.all, &a.user) {
        (true, None) => Ok((None, a.dest.clone())),
        (false, Some(u)) => Ok((Some(u.clone()), a.dest.clone())),
        _ => anyhow::bail!("usage: msgd backup USER DEST, or msgd backup --all DEST"),
    }
}

pub async fn run_backup(c: &Ctx, a: BackupArgs, p: &Progress) -> anyhow::Result<serde_json::Value> {
    let (user, dest) = backup_target(&a)?;
    anyhow::ensure!(
        dest.is_absolute() || super::backup_target::is_remote(&dest),
        "DEST must be an absolute path or s3://bucket/prefix"
    );
    let users = match user {
        Some(u) => vec![u],
        None => c.store.users().await?,
    };
    let dest = Arc::new(BackupTarget::open(&dest, &c.config)?);
    {
        let dest = dest.clone();
        tokio::task::spawn_blocking(move || open_dest(&dest)).await??;
    }
    p.stage(
        format!("backing up {} user(s)", users.len()),
        Some(0),
        "messages",
    );
    let total = Arc::new(AtomicU64::new(0));
    let store = c.store.clone();
    let (p2, dest2) = (p.clone(), dest.clone());
    let (directory, config) = (c.directory.clone(), c.config.clone());
    let results = bounded(users, a.jobs, move |user: String| {
        let (store, p, dest, total) = (store.clone(), p2.clone(), dest2.clone(), total.clone());
        let (directory, config) = (directory.clone(), config.clone());
        async move {
            let r = async {
                let idx = store
                    .user_index(&user)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no such user in this store"))?;
                let n: u64 = idx.mailboxes.iter().map(|m| m.messages.len() as u64).sum();
                p.set_total(Some(total.fetch_add(n, Ordering::Relaxed) + n));
                let meta = read_metadata(&store, &idx).await?;
                let extras =
                    super::backup_extra::read(&store, &directory, &config, &idx, false).await?;
                let p = p.clone();
                tokio::task::spawn_blocking(move || {
                    backup_user_blocking(idx, meta, &dest, &p, Some(extras))
                })
                .await?
            }
            .await;
            (user, r)
        }
    })
    .await;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut sum = RunTotals::default();
    for (user, r) in results {
        match r {
            Ok((manifest, t)) => {
                sum.messages += t.messages;
                sum.bytes += t.bytes;
                sum.new_blobs += t.new_blobs;
                sum.new_bytes += t.new_bytes;
                sum.vanished += t.vanished;
                out.push(serde_json::json!({
                    "user": user, "manifest": manifest, "totals": t,
                }));
            }
            Err(e) => errors.push(format!("{user}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "backup failed for {} user(s) ({} backed up): {}",
            errors.len(),
            out.len(),
            errors.join("; ")
        );
    }
    Ok(serde_json::json!({ "dest": dest.describe(), "users": out, "totals": sum }))
}

/// A user found in a backup folder: their folder (`users/<user>`) and
/// newest manifest.
struct Found {
    dir: String,
    manifest: Manifest,
}

fn find_users(root: &BackupTarget, only: Option<&str>) -> anyhow::Result<Vec<Found>> {
    check_marker(root)?;
    let mut dirs: Vec<String> = match only {
        Some(u) => vec![format!("users/{}", user_folder(u))],
        None => root
            .list_dirs("users")
            .with_context(|| format!("listing {}", root.describe_key("users")))?
            .into_iter()
            .map(|d| format!("users/{d}"))
            .collect(),
    };
    let mut out = Vec::new();
    for dir in dirs.drain(..) {
        let Some(path) = latest_manifest(root, &dir)? else {
            if let Some(u) = only {
                anyhow::bail!("the backup holds no user {u}");
            }
            continue;
        };
        let manifest: Manifest = read_json_at(root, &path, MAX_MANIFEST)?;
        anyhow::ensure!(
            manifest.format == FORMAT && manifest.version == VERSION,
            "{}: format {} version {} not readable here",
            root.describe_key(&path),
            manifest.format,
            manifest.version
        );
        anyhow::ensure!(
            format!("users/{}", user_folder(&manifest.user)) == dir,
            "{}: names user {:?}, which is not its folder's",
            root.describe_key(&path),
            manifest.user
        );
        out.push(Found { dir, manifest });
    }
    Ok(out)
}

/// Restores one user's newest manifest. Errors of single messages are
/// collected (the rest is restored); others end the user.
async fn restore_user(
    ctx: Ctx,
    root: Arc<BackupTarget>,
    found: Found,
    target: Target,
    progress: Progress,
) -> (String, anyhow::Result<Applied>, Vec<String>) {
    let recorded = found.manifest.user.clone();
    let extras = found.manifest.extras.clone();
    let mut errors = Vec::new();
    let r = async {
        let partition = user_partition(&ctx, target.user(&recorded)).await?;
        let applied = restore_user_inner(
            &ctx.store,
            partition.as_deref(),
            &root,
            found,
            &target,
            &progress,
            &mut errors,
        )
        .await?;
        // After the mailboxes: ACLs and sortOrders name them.
        if let Some(x) = extras {
            let a = super::backup_extra::apply(
                &ctx.store,
                &ctx.directory,
                &ctx.config,
                target.user(&recorded),
                &target,
                &x,
                super::backup_extra::Mode::Restore,
            )
            .await
            .context("ACLs, JMAP data and contacts")?;
            tracing::info!(
                user = target.user(&recorded),
                acl = a.acl,
                sort_order = a.sort_order,
                contacts = a.contacts,
                "restored ACLs, sortOrders and contacts"
            );
        }
        Ok(applied)
    }
    .await;
    (recorded, r, errors)
}

/// The partition the directory gives a user (None: the default, also for
/// a user the directory does not know); refuses a user whose mailHost is
/// another store (their mail would be invisible here).
async fn user_partition(ctx: &Ctx, user: &str) -> anyhow::Result<Option<String>> {
    match ctx
        .directory
        .lookup(user)
        .await
        .map_err(|e| anyhow::anyhow!("directory lookup of {user}: {e}"))?
    {
        Some(crate::directory::Recipient::User(a)) => {
            anyhow::ensure!(
                crate::deliver::is_own_store(&ctx.config, a.mail_host.as_deref()),
                "{user} lives on store {} (mailHost), not this one",
                a.mail_host.as_deref().unwrap_or_default()
            );
            Ok(a.partition)
        }
        _ => Ok(None),
    }
}

async fn restore_user_inner(
    store: &Store,
    partition: Option<&str>,
    root: &Arc<BackupTarget>,
    found: Found,
    target: &Target,
    progress: &Progress,
    errors: &mut Vec<String>,
) -> anyhow::Result<Applied> {
    let user = target.user(&found.manifest.user).to_string();
    store.ensure_user(&user, partition).await?;
    let mut total = Applied::default();
    for mb in found.manifest.mailboxes {
        let name = target.mailbox(&mb.mailbox.name);
        crate::store::normalize_name(&name)
            .map_err(|_| anyhow::anyhow!("bad mailbox name in the manifest: {name:?}"))?;
        let mut messages = mb.messages.into_iter().peekable();
        let mut first = true;
        while first || messages.peek().is_some() {
            first = false;
            // Read (and check) one chunk on a blocking thread.
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while let Some(m) = messages.next_if(|_| {
                chunk.len() < CHUNK_MESSAGES && (bytes < CHUNK_BYTES || chunk.is_empty())
            }) {
                bytes += m.message.size;
                chunk.push(m);
            }
            let (dir, root2) = (found.dir.clone(), root.clone());
            let n = chunk.len() as u64;
            let read: Vec<Result<(MessageRecord, Vec<u8>), String>> =
                tokio::task::spawn_blocking(move || {
                    chunk
                        .into_iter()
                        .map(|m| {
                            let uid = m.message.uid;
                            read_blob(&root2, &dir, &m.blob, &m.message)
                                .map(|d| (m.message, d))
                                .map_err(|e| format!("UID {uid}: {e:#}"))
                        })
                        .collect()
                })
                .await?;
            let mut good = Vec::with_capacity(read.len());
            for r in read {
                match r {
                    Ok(x) => good.push(x),
                    Err(e) => errors.push(format!("{user} {name} {e}")),
                }
            }
            let a = apply_chunk(store, &user, &name, &mb.mailbox, good).await?;
            total.add(&a);
            progress.inc(n);
        }
    }
    let mut subs = found.manifest.subscriptions.clone();
    subs.sort();
    apply_subscriptions(store, &user, target, &subs).await?;
    apply_metadata(store, &user, target, &found.manifest.metadata).await?;
    Ok(total)
}

pub async fn run_restore(
    c: &Ctx,
    a: RestoreArgs,
    p: &Progress,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        a.src.is_absolute() || super::backup_target::is_remote(&a.src),
        "SRC must be an absolute path or s3://bucket/prefix"
    );
    let root = Arc::new(BackupTarget::open(&a.src, &c.config)?.canonicalize()?);
    let target = Target {
        as_user: a.as_user.clone(),
        mailbox_prefix: a.mailbox_prefix.clone(),
    };
    if let Some(pfx) = &target.mailbox_prefix {
        crate::store::normalize_name(pfx)
            .map_err(|_| anyhow::anyhow!("bad --mailbox-prefix {pfx:?}"))?;
    }
    let (root2, only) = (root.clone(), a.user.clone());
    let found = tokio::task::spawn_blocking(move || find_users(&root2, only.as_deref())).await??;
    anyhow::ensure!(!found.is_empty(), "the backup holds no user");
    anyhow::ensure!(
        target.as_user.is_none() || found.len() == 1,
        "--as restores one user: name which (msgd restore SRC USER --as OTHER)"
    );
    let n: u64 = found
        .iter()
        .flat_map(|f| &f.manifest.mailboxes)
        .map(|m| m.messages.len() as u64)
        .sum();
    p.stage(
        format!("restoring {} user(s)", found.len()),
        Some(n),
        "messages",
    );
    let ctx = c.clone();
    let (p2, root2) = (p.clone(), root.clone());
    let results = bounded(found, a.jobs, move |f: Found| {
        restore_user(ctx.clone(), root2.clone(), f, target.clone(), p2.clone())
    })
    .await;
    let mut sum = Applied::default();
    let mut users = Vec::new();
    let mut errors = Vec::new();
    for (user, r, errs) in results {
        errors.extend(errs);
        match r {
            Ok(t) => {
                sum.add(&t);
                users.push(serde_json::json!({ "user": user, "totals": t }));
            }
            Err(e) => errors.push(format!("{user}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        let shown: Vec<_> = errors.iter().take(10).cloned().collect();
        anyhow::bail!(
            "restore: {} error(s) ({} messages restored, {} renumbered, {} already there): {}{}",
            errors.len(),
            sum.restored,
            sum.renumbered,
            sum.present,
            shown.join("; "),
            if errors.len() > 10 { "; ..." } else { "" }
        );
    }
    Ok(serde_json::json!({ "src": root.describe(), "users": users, "totals": sum }))
}

// ------------------------------------------------------------------------
// CLI

fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MB", b as f64 / f64::from(1 << 20))
    } else if b >= 1024 {
        format!("{:.1} kB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

pub fn cli_backup(config: &Config, mut args: BackupArgs) -> anyhow::Result<()> {
    let json = args.json;
    backup_target(&args)?;
    if !super::backup_target::is_remote(&args.dest) {
        args.dest = super::absolute(&args.dest)?;
    }
    let v = super::control::call(config, super::Request::Backup(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let t: RunTotals = serde_json::from_value(v["totals"].clone()).unwrap_or_default();
    let users = v["users"].as_array().map_or(0, |u| u.len());
    println!(
        "backed up {users} user(s) to {}: {} messages ({}), {} new ({}), {} expunged meanwhile",
        v["dest"].as_str().unwrap_or_default(),
        t.messages,
        human_bytes(t.bytes),
        t.new_blobs,
        human_bytes(t.new_bytes),
        t.vanished
    );
    Ok(())
}

pub fn cli_restore(config: &Config, mut args: RestoreArgs) -> anyhow::Result<()> {
    let json = args.json;
    if !super::backup_target::is_remote(&args.src) {
        args.src = super::absolute(&args.src)?;
    }
    let v = super::control::call(config, super::Request::Restore(args))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let t: Applied = serde_json::from_value(v["totals"].clone()).unwrap_or_default();
    let users = v["users"].as_array().map_or(0, |u| u.len());
    println!(
        "restored {users} user(s): {} messages at their UIDs, {} with new UIDs, {} already there ({})",
        t.restored,
        t.renumbered,
        t.present,
        human_bytes(t.bytes)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_config(dir: &Path) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_path_buf();
        c.store.min_free_disk = 0;
        c.store.partition.insert(
            "primary".into(),
            crate::config::PartitionConfig {
                path: "partition/primary".into(),
            },
        );
        c
    }

    fn rec(uid: Uid, data: &[u8]) -> MessageRecord {
        MessageRecord {
            uid,
            flags: vec!["\\Seen".into(), "$Work".into()],
            internal_date: 1_650_000_000,
            tz_offset_min: -300,
            modseq: 7,
            size: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }

    fn mbox(name: &str) -> MailboxRecord {
        MailboxRecord {
            name: name.into(),
            uidvalidity: 99,
            uidnext: 5,
            highestmodseq: 9,
            special_use: Some(SpecialUse::Sent),
            subscribed: true,
        }
    }

    type Boxes<'a> = [(&'a MailboxRecord, &'a [(Uid, &'a [u8])])];

    fn stream_of(items: &Boxes) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new()).unwrap();
        w.user("a@x", &["INBOX".to_string()]).unwrap();
        for (m, msgs) in items {
            w.mailbox(m).unwrap();
            for (uid, d) in msgs.iter() {
                w.message(&rec(*uid, d), d).unwrap();
            }
        }
        w.finish().unwrap()
    }

    fn read_all(b: &[u8], max: u64) -> anyhow::Result<Vec<Item>> {
        let mut r = StreamReader::new(std::io::Cursor::new(b), max)?;
        let mut out = Vec::new();
        while let Some(i) = r.next_item()? {
            out.push(i);
        }
        Ok(out)
    }

    #[test]
    fn stream_round_trip_keeps_records_and_bytes() {
        let m = mbox("Sent");
        let data: &[u8] = b"Subject: x\r\n\r\n\x00\xff binary\r\n";
        let b = stream_of(&[(&m, &[(3, data), (4, b"two\r\n")])]);
        assert!(b.starts_with(STREAM_MAGIC));
        let items = read_all(&b, 1 << 20).unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[1], Item::Mailbox(m));
        assert_eq!(items[2], Item::Message(rec(3, data), data.to_vec()));
        assert_eq!(
            items[4],
            Item::End {
                messages: 2,
                bytes: data.len() as u64 + 5
            }
        );
    }

    #[test]
    fn stream_refuses_cut_corrupted_oversized_and_misordered_input() {
        let m = mbox("INBOX");
        let b = stream_of(&[(&m, &[(1, b"hello world\r\n")])]);
        // Cut anywhere before the end record: an error, never a silent end.
        for cut in [b.len() - 1, b.len() - 30, STREAM_MAGIC.len() + 5] {
            assert!(read_all(&b[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        // One flipped byte inside the message.
        let mut bad = b.clone();
        let pos = bad.windows(5).position(|w| w == b"hello").unwrap();
        bad[pos] = b'j';
        let e = read_all(&bad, 1 << 20).unwrap_err();
        assert!(format!("{e:#}").contains("checksum"), "{e:#}");
        // A message larger than allowed is refused before it is read.
        let e = read_all(&b, 4).unwrap_err();
        assert!(format!("{e:#}").contains("limit"), "{e:#}");
        // An endless line is refused after MAX_RECORD_LINE bytes.
        let mut long = STREAM_MAGIC.to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_RECORD_LINE * 2));
        assert!(read_all(&long, 1 << 20).is_err());
        // A message before any mailbox.
        let mut w = StreamWriter::new(Vec::new()).unwrap();
        w.user("a@x", &[]).unwrap();
        w.message(&rec(1, b"x"), b"x").unwrap();
        assert!(read_all(&w.finish().unwrap(), 1 << 20).is_err());
        // Not a stream at all.
        assert!(read_all(b"GARBAGE\n", 1 << 20).is_err());
    }

    #[test]
    fn manifest_blob_paths_outside_the_backup_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let udir = root.join("users").join("a@x");
        std::fs::create_dir_all(udir.join("blobs/ab")).unwrap();
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "blobs/../../x",
            "other/ab/cd",
            "",
        ] {
            assert!(safe_blob_path(&root, &udir, bad).is_err(), "{bad}");
        }
        // A link inside blobs/ that leads out of the backup.
        std::os::unix::fs::symlink("/etc", udir.join("blobs/ln")).unwrap();
        assert!(safe_blob_path(&root, &udir, "blobs/ln/passwd").is_err());
        assert!(safe_blob_path(&root, &udir, "blobs/ab/abcd").is_ok());
    }

    #[test]
    fn user_folder_names_are_one_safe_component() {
        for u in ["a@x", "..", ".", "../../x", "a/b", "", "x\0y"] {
            let f = user_folder(u);
            assert!(
                !f.contains('/') && !f.contains('\0') && f != "." && f != "..",
                "{u:?}"
            );
            assert!(!f.is_empty());
        }
        assert_eq!(
            user_folder("bob+tag@example.test"),
            "bob+tag@example%2Etest"
        );
        assert_ne!(user_folder("a.b"), user_folder("a%2Eb"));
    }

    #[test]
    fn manifest_json_round_trip_with_version() {
        let m = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            user: "a@x".into(),
            run: "000001700000-000000001".into(),
            created: "2026-12-02T08:00:00Z".into(),
            previous: None,
            subscriptions: vec!["INBOX".into()],
            metadata: vec![],
            mailboxes: vec![ManifestMailbox {
                mailbox: mbox("INBOX"),
                messages: vec![ManifestMessage {
                    message: rec(1, b"x"),
                    blob: blob_rel(&sha256_hex(b"x")),
                }],
            }],
            totals: RunTotals::default(),
            extras: None,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["mailboxes"][0]["uidvalidity"], 99);
        assert_eq!(v["mailboxes"][0]["special_use"], "Sent");
        assert_eq!(v["mailboxes"][0]["messages"][0]["uid"], 1);
        assert!(v["mailboxes"][0]["messages"][0]["blob"]
            .as_str()
            .unwrap()
            .starts_with("blobs/"));
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back.mailboxes[0].messages[0].message, rec(1, b"x"));
    }

    async fn ctx(dir: &Path) -> Ctx {
        let config = test_config(dir);
        Ctx {
            store: Store::open(&config).unwrap(),
            directory: crate::directory::Directory::open(&config).unwrap(),
            config: Arc::new(config),
            online: false,
            history: None,
        }
    }

    async fn deliver(s: &Store, n: usize, tag: &str) {
        for i in 0..n {
            s.append(
                "a@x",
                "INBOX",
                NewMessage {
                    data: Arc::new(format!("Subject: {tag}{i}\r\n\r\nbody {tag} {i}\r\n").into()),
                    flags: Flags::from_names(&["$Tag"]),
                    internal_date: Some((1_600_000_000 + i as i64, 60)),
                },
                Quota::default(),
            )
            .await
            .unwrap();
        }
    }

    fn blobs(udir: &Path) -> usize {
        walk(&udir.join("blobs"))
    }

    fn walk(d: &Path) -> usize {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn backup_is_incremental_and_restore_is_exact_and_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path()).await;
        deliver(&c.store, 5, "a").await;
        let inbox = c.store.status("a@x", "INBOX").await.unwrap().id;
        let limits = crate::store::MetaLimits {
            max_value: 1000,
            max_entries: 10,
            max_bytes: 10_000,
        };
        let items = vec![
            ("/private/comment".to_string(), Some(b"mine \xff".to_vec())),
            ("/shared/comment".to_string(), Some(b"ours".to_vec())),
        ];
        c.store
            .set_metadata(inbox, "a@x", "a@x", items.clone(), limits)
            .await
            .unwrap()
            .unwrap();
        let dest = d.path().join("bk");
        let args = |all: bool| BackupArgs {
            all,
            user: (!all).then(|| "a@x".to_string()),
            dest: dest.clone(),
            jobs: 2,
            json: false,
        };
        let p = Progress::new();
        let v = run_backup(&c, args(false), &p).await.unwrap();
        assert_eq!(v["totals"]["new_blobs"], 5);
        assert_eq!(p.snapshot().done, 5);
        let udir = dest.join("users").join(user_folder("a@x"));
        assert_eq!(blobs(&udir), 5);
        deliver(&c.store, 3, "b").await;
        let v = run_backup(&c, args(true), &p).await.unwrap();
        assert_eq!(v["totals"]["messages"], 8);
        assert_eq!(v["totals"]["new_blobs"], 3);
        assert_eq!(blobs(&udir), 8);
        // Restore into a fresh store: same UIDs, UIDVALIDITY, flags, bytes.
        let d2 = tempfile::tempdir().unwrap();
        let c2 = ctx(d2.path()).await;
        let ra = RestoreArgs {
            src: dest.clone(),
            user: None,
            as_user: None,
            mailbox_prefix: None,
            jobs: 2,
            json: false,
        };
        let v = run_restore(&c2, ra.clone(), &p).await.unwrap();
        assert_eq!(v["totals"]["restored"], 8);
        let a = c.store.snapshot("a@x", "INBOX").await.unwrap();
        let b = c2.store.snapshot("a@x", "INBOX").await.unwrap();
        assert_eq!(a.info.uidvalidity, b.info.uidvalidity);
        assert_eq!(a.info.uidnext, b.info.uidnext);
        for (x, y) in a.messages.iter().zip(&b.messages) {
            assert_eq!(
                (x.uid, &x.flags, x.internal_date),
                (y.uid, &y.flags, y.internal_date)
            );
            assert_eq!(
                c.store.read(a.info.id, x).await.unwrap(),
                c2.store.read(b.info.id, y).await.unwrap()
            );
        }
        assert_eq!(b.messages.len(), 8);
        let meta = c2
            .store
            .get_metadata(
                b.info.id,
                "a@x",
                vec!["/private".into(), "/shared".into()],
                crate::store::MetaDepth::Infinity,
            )
            .await
            .unwrap();
        let meta: Vec<_> = meta.into_iter().filter(|(_, v)| v.is_some()).collect();
        assert_eq!(meta, items);
        // Twice: nothing new.
        let v = run_restore(&c2, ra.clone(), &p).await.unwrap();
        assert_eq!(v["totals"]["restored"], 0);
        assert_eq!(v["totals"]["present"], 8);
        assert_eq!(
            c2.store
                .snapshot("a@x", "INBOX")
                .await
                .unwrap()
                .messages
                .len(),
            8
        );
        // Into the same store under a prefix, and as another user.
        let mut r = ra.clone();
        r.mailbox_prefix = Some("Restored".into());
        run_restore(&c, r, &p).await.unwrap();
        assert_eq!(
            c.store
                .status("a@x", "Restored/INBOX")
                .await
                .unwrap()
                .exists,
            8
        );
        let mut r = ra.clone();
        r.as_user = Some("b@x".into());
        run_restore(&c, r, &p).await.unwrap();
        assert_eq!(c.store.status("b@x", "INBOX").await.unwrap().exists, 8);
        // Into a used INBOX of another UIDVALIDITY: appended, once.
        let d3 = tempfile::tempdir().unwrap();
        let c3 = ctx(d3.path()).await;
        deliver(&c3.store, 1, "a").await; // same bytes as the first of the backup
        run_restore(&c3, ra.clone(), &p).await.unwrap();
        let v = run_restore(&c3, ra, &p).await.unwrap();
        assert_eq!(v["totals"]["renumbered"], 0);
        assert_eq!(c3.store.status("a@x", "INBOX").await.unwrap().exists, 8);
    }

    #[tokio::test]
    async fn a_message_expunged_after_the_index_read_is_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path()).await;
        deliver(&c.store, 3, "e").await;
        let idx = c.store.user_index("a@x").await.unwrap().unwrap();
        // Expunge UID 2 after the index was read, before the copy.
        let inbox = c.store.status("a@x", "INBOX").await.unwrap().id;
        c.store
            .store_flags(
                inbox,
                vec![2],
                crate::store::FlagOp::Add,
                Flags::from_names(&["\\Deleted"]),
                None,
            )
            .await
            .unwrap();
        c.store.expunge(inbox, None).await.unwrap();
        let dest = BackupTarget::open(&d.path().join("bk"), &c.config).unwrap();
        open_dest(&dest).unwrap();
        let (path, totals) =
            backup_user_blocking(idx, Vec::new(), &dest, &Progress::new(), None).unwrap();
        assert_eq!((totals.messages, totals.vanished), (2, 1));
        let m: Manifest = read_json(Path::new(&path), MAX_MANIFEST).unwrap();
        let inbox = m
            .mailboxes
            .iter()
            .find(|b| b.mailbox.name == "INBOX")
            .unwrap();
        let uids: Vec<_> = inbox.messages.iter().map(|x| x.message.uid).collect();
        assert_eq!(uids, vec![1, 3]);
    }

    #[tokio::test]
    async fn restore_reports_a_corrupted_blob_and_restores_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let c = ctx(d.path()).await;
        deliver(&c.store, 4, "c").await;
        let dest = d.path().join("bk");
        let p = Progress::new();
        run_backup(
            &c,
            BackupArgs {
                all: false,
                user: Some("a@x".into()),
                dest: dest.clone(),
                jobs: 1,
                json: false,
            },
            &p,
        )
        .await
        .unwrap();
        let udir = dest.join("users").join(user_folder("a@x"));
        let t = BackupTarget::open(&dest, &c.config).unwrap();
        let key = latest_manifest(&t, "users/a@x").unwrap().unwrap();
        let manifest: Manifest = read_json(&dest.join(key), MAX_MANIFEST).unwrap();
        let victim = &manifest
            .mailboxes
            .iter()
            .find(|m| m.mailbox.name == "INBOX")
            .unwrap()
            .messages[1];
        let path = udir.join(&victim.blob);
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, &data[..data.len() / 2]).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let c2 = ctx(d2.path()).await;
        let e = run_restore(
            &c2,
            RestoreArgs {
                src: dest.clone(),
                user: Some("a@x".into()),
                as_user: None,
                mailbox_prefix: None,
                jobs: 1,
                json: false,
            },
            &p,
        )
        .await
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("truncated or corrupted"), "{msg}");
        assert!(msg.contains("UID 2"), "{msg}");
        let s = c2.store.snapshot("a@x", "INBOX").await.unwrap();
        let uids: Vec<_> = s.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![1, 3, 4]);
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[tokio::test]
    async fn a_user_streamed_and_applied_keeps_uids_flags_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        let mk = |sub: &str| {
            let mut c = Config::default();
            c.server.data_dir = d.path().join(sub);
            c.store.min_free_disk = 0;
            c.store.partition.insert(
                "primary".into(),
                crate::config::PartitionConfig {
                    path: "partition/primary".into(),
                },
            );
            Store::open(&c).unwrap()
        };
        let (src, dst) = (mk("a"), mk("b"));
        for i in 0..7 {
            src.append(
                "u@x",
                if i % 2 == 0 { "INBOX" } else { "Sent" },
                NewMessage {
                    data: Arc::new(format!("Subject: {i}\r\n\r\nbody {i}\r\n").into()),
                    flags: Flags::from_names(&["\\Seen", "$K"]),
                    internal_date: Some((1_500_000_000 + i, -60)),
                },
                Quota::default(),
            )
            .await
            .unwrap();
        }
        let idx = src.user_index("u@x").await.unwrap().unwrap();
        let mut w = StreamWriter::new(Vec::new()).unwrap();
        // Skip INBOX UID 1, as a receiver that already has it would ask.
        let (sent, vanished) = write_index_stream(
            &idx,
            &mut w,
            |mb, m| mb.name == "INBOX" && m.uid == 1,
            &Progress::new(),
        )
        .unwrap();
        assert_eq!((sent, vanished), (6, 0));
        let bytes = w.finish().unwrap();
        let mut r = StreamReader::new(std::io::Cursor::new(bytes), 1 << 20).unwrap();
        let mut user = String::new();
        let mut mailbox: Option<MailboxRecord> = None;
        let mut batch = Vec::new();
        let mut applied = Applied::default();
        loop {
            let item = r.next_item().unwrap();
            if matches!(item, Some(Item::Mailbox(_)) | Some(Item::End { .. }) | None) {
                if let Some(mb) = mailbox.take() {
                    let a = apply_chunk(
                        &dst,
                        &user,
                        &mb.name.clone(),
                        &mb,
                        std::mem::take(&mut batch),
                    )
                    .await
                    .unwrap();
                    applied.add(&a);
                }
            }
            match item {
                Some(Item::User { user: u, .. }) => user = u,
                Some(Item::Mailbox(m)) => mailbox = Some(m),
                Some(Item::Message(m, data)) => batch.push((m, data)),
                Some(Item::End { messages, .. }) => assert_eq!(messages, 6),
                Some(Item::Extras(_)) => unreachable!("none written"),
                None => break,
            }
        }
        assert_eq!(applied.restored, 6);
        for name in ["INBOX", "Sent"] {
            let a = src.snapshot("u@x", name).await.unwrap();
            let b = dst.snapshot("u@x", name).await.unwrap();
            assert_eq!(a.info.uidvalidity, b.info.uidvalidity);
            assert_eq!(a.info.uidnext, b.info.uidnext);
            let want: Vec<_> = a
                .messages
                .iter()
                .filter(|m| !(name == "INBOX" && m.uid == 1))
                .collect();
            assert_eq!(want.len(), b.messages.len());
            for (x, y) in want.into_iter().zip(&b.messages) {
                assert_eq!(
                    (x.uid, &x.flags, x.internal_date, x.tz_offset_min),
                    (y.uid, &y.flags, y.internal_date, y.tz_offset_min)
                );
                assert_eq!(
                    src.read(a.info.id, x).await.unwrap(),
                    dst.read(b.info.id, y).await.unwrap()
                );
            }
        }
    }
}
