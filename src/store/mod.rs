//! The message store: partitions of message files plus the mboxlist database.
//!
//! Invariants:
//! - A message file is durable (written, renamed into place, synced with
//!   its folder) before its index entry is committed; a call that returns
//!   `Ok` has both durable.
//! - Every mutation goes through one writer thread (`writer.rs`) that takes
//!   whatever requests are waiting and applies them in one redb transaction:
//!   concurrent deliveries share the directory fsyncs and the commit (group
//!   commit) instead of queueing one commit each.
//! - UIDs are allocated inside that transaction, in arrival order, so they
//!   become visible strictly ascending. A failed batch leaves a gap, never a
//!   reuse.
//! - Files live at `<partition>/<xx>/<user>/<mailbox id>/<uid>.msg`; the path
//!   names owner, mailbox and UID, and a one-line prelude in the file keeps
//!   the mailbox name and the flags at delivery, so the mboxlist can be
//!   rebuilt from the partitions (reconstruct); a `mailbox` file per
//!   mailbox folder keeps its name and UIDVALIDITY (`db/reconstruct.rs`).
//! - Expunged message files are moved aside after the commit and purged
//!   after a grace period (`db/expire.rs`).
//! - Readers use redb MVCC read transactions and never wait for the writer.

mod db;
mod files;
pub mod moving;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;

pub use db::duplicates::{Once, MAX_ID_LEN as MAX_DELIVERY_ID_LEN};
pub use db::expire::Expiring;
pub use db::journal::{ChangesError, JournalChanges, Kind as JmapKind, Op as JmapOp};
pub use db::metadata::{Depth as MetaDepth, MetaLimits, MetaRefusal};
pub use db::reconstruct::{NoTick, Problem, ReconstructReport, Tick, VerifyReport};
pub use db::restore::{MailboxIndex, RestoreMailbox, RestoreMessage, Restored, UserIndex};
pub use db::sieve::CompiledScripts;
pub use db::sieve::{valid_script_name, SieveLimits, SieveRefusal, MAX_SCRIPT_NAME};
pub use db::stats::PartitionTotals;
pub use db::StoreStats;
pub use files::MessageBody;

pub type MailboxId = u64;
pub type Uid = u32;
pub type ModSeq = u64;

/// Hierarchy separator of mailbox names (IMAP LIST delimiter).
pub const DELIMITER: char = '/';

/// IMAP system flags as bits; keywords separately.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub bits: u8,
    /// Keywords as given by clients (atoms), kept sorted and deduplicated.
    pub keywords: Vec<String>,
}

impl Flags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;

    pub fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    /// Parses IMAP flag names (`\Seen`, `$Junk`, ...). `\Recent` is not a
    /// stored flag and is ignored.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Flags {
        let mut f = Flags::default();
        for n in names {
            f.add_name(n.as_ref());
        }
        f
    }

    pub fn add_name(&mut self, name: &str) {
        match system_bit(name) {
            Some(bit) => self.bits |= bit,
            None if name.eq_ignore_ascii_case("\\Recent") || name.starts_with('\\') => {}
            None => {
                if let Err(i) = self
                    .keywords
                    .binary_search_by(|k| k.to_ascii_lowercase().cmp(&name.to_ascii_lowercase()))
                {
                    self.keywords.insert(i, name.to_string());
                }
            }
        }
    }

    /// Flag names in IMAP form, system flags first.
    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (bit, name) in SYSTEM_FLAGS {
            if self.bits & bit != 0 {
                v.push(name.to_string());
            }
        }
        v.extend(self.keywords.iter().cloned());
        v
    }

    pub fn union(&self, other: &Flags) -> Flags {
        let mut f = self.clone();
        f.bits |= other.bits;
        for k in &other.keywords {
            f.add_name(k);
        }
        f
    }

    pub fn minus(&self, other: &Flags) -> Flags {
        Flags {
            bits: self.bits & !other.bits,
            keywords: self
                .keywords
                .iter()
                .filter(|k| !other.keywords.iter().any(|o| o.eq_ignore_ascii_case(k)))
                .cloned()
                .collect(),
        }
    }

    pub fn has_keyword(&self, k: &str) -> bool {
        self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k))
    }
}

const SYSTEM_FLAGS: [(u8, &str); 5] = [
    (Flags::ANSWERED, "\\Answered"),
    (Flags::FLAGGED, "\\Flagged"),
    (Flags::DELETED, "\\Deleted"),
    (Flags::SEEN, "\\Seen"),
    (Flags::DRAFT, "\\Draft"),
];

fn system_bit(name: &str) -> Option<u8> {
    SYSTEM_FLAGS
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(b, _)| *b)
}

/// RFC 6154 special-use attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialUse {
    All,
    Archive,
    Drafts,
    Flagged,
    Junk,
    Sent,
    Trash,
}

impl SpecialUse {
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::All => "\\All",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Flagged => "\\Flagged",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
        }
    }

    pub fn from_attribute(s: &str) -> Option<SpecialUse> {
        [
            SpecialUse::All,
            SpecialUse::Archive,
            SpecialUse::Drafts,
            SpecialUse::Flagged,
            SpecialUse::Junk,
            SpecialUse::Sent,
            SpecialUse::Trash,
        ]
        .into_iter()
        .find(|u| u.attribute().eq_ignore_ascii_case(s))
    }
}

/// The mailboxes every new user gets.
pub const DEFAULT_MAILBOXES: [(&str, Option<SpecialUse>); 5] = [
    ("INBOX", None),
    ("Sent", Some(SpecialUse::Sent)),
    ("Drafts", Some(SpecialUse::Drafts)),
    ("Trash", Some(SpecialUse::Trash)),
    ("Junk", Some(SpecialUse::Junk)),
];

/// A mailbox and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub id: MailboxId,
    pub user: String,
    /// Full name, `/`-separated, UTF-8; `INBOX` always spelled so.
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highestmodseq: ModSeq,
    pub special_use: Option<SpecialUse>,
    pub subscribed: bool,
    /// Number of messages.
    pub exists: u32,
    /// Messages without \Seen.
    pub unseen: u32,
    /// Sum of message sizes in bytes.
    pub size: u64,
    /// UIDs at or above this are \Recent for the next session that claims them.
    pub recent_uid: Uid,
}

/// One message in a mailbox, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub uid: Uid,
    pub flags: Flags,
    /// INTERNALDATE, seconds since the epoch (UTC), plus the client's zone
    /// offset in minutes for display.
    pub internal_date: i64,
    pub tz_offset_min: i16,
    /// RFC822.SIZE: the message's own bytes (without the file prelude).
    pub size: u64,
    pub modseq: ModSeq,
    /// Byte offset of the message in its file (after the prelude).
    pub offset: u32,
    /// When the message entered this mailbox (SAVEDATE), seconds since epoch.
    pub save_date: i64,
}

/// A selected mailbox: its info and all its messages in UID order.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub info: MailboxInfo,
    pub messages: Vec<MessageMeta>,
}

/// What changed in a mailbox since a modseq.
#[derive(Debug, Clone)]
pub struct Changes {
    pub info: MailboxInfo,
    /// Messages added or whose flags changed after the modseq, UID order.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged after the modseq, ascending.
    pub expunged: Vec<Uid>,
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// A message handed to the store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The raw message, CRLF line endings, exactly as it will be served.
    pub data: Arc<Vec<u8>>,
    pub flags: Flags,
    /// None: now.
    pub internal_date: Option<(i64, i16)>,
}

/// Where one delivered/appended message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub mailbox: MailboxId,
    pub uidvalidity: u32,
    pub uid: Uid,
}

/// Where a batch of appended messages landed (MULTIAPPEND, REPLACE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub mailbox: MailboxId,
    pub uidvalidity: u32,
    /// Consecutive, in the order the messages were given.
    pub uids: Vec<Uid>,
}

/// Per-user limits the caller knows from the directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes; None: unlimited.
    pub storage: Option<u64>,
    /// Messages; None: unlimited.
    pub messages: Option<u64>,
}

/// Current usage of one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no such mailbox")]
    NoSuchMailbox,
    #[error("mailbox already exists")]
    MailboxExists,
    #[error("mailbox name is not valid")]
    BadName,
    #[error("operation not allowed on this mailbox: {0}")]
    NotAllowed(&'static str),
    #[error("over quota")]
    OverQuota,
    #[error("not enough free disk space")]
    DiskFull,
    #[error("UIDVALIDITY changed")]
    UidValidityChanged,
    #[error("internal store error: {0}")]
    Internal(String),
    /// The user is being moved to another store (`store::moving`): its
    /// mail here only changes through the move itself.
    #[error("the mailbox is being moved to another server; try again later")]
    Moving,
}

impl StoreError {
    pub fn internal(e: impl std::fmt::Display) -> StoreError {
        StoreError::Internal(e.to_string())
    }

    /// A temporary condition worth retrying (SMTP 4xx).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull
                | StoreError::Internal(_)
                | StoreError::OverQuota
                | StoreError::Moving
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Cheap to clone; all clones share one database and one writer.
#[derive(Clone)]
///
/// Client mutations of a user in the Moving/Moved state (`moving`) are
/// refused here, at the one API every protocol (IMAP, POP, JMAP,
/// deliveries, sieve) goes through, with `StoreError::Moving`; only the
/// move's own handle (`for_move`) passes.
pub struct Store {
    inner: Arc<db::Inner>,
    moving: Arc<moving::Moving>,
    /// `msgd user move` and replica requests: passes the hold.
    mover: bool,
    /// Compiled Sieve scripts of this process (`CompiledScripts`).
    compiled: Arc<CompiledScripts>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("mover", &self.mover).finish()
    }
}

/// Held by a client mutation from its check to its commit (see
/// `moving::Moving::begin`).
type Pass<'a> = Option<tokio::sync::RwLockReadGuard<'a, ()>>;

impl Store {
    /// Opens (creating if needed) the mboxlist and partitions from config.
    pub fn open(config: &Config) -> anyhow::Result<Store> {
        let moving = Arc::new(moving::Moving::load(&config.server.data_dir)?);
        Ok(Store {
            inner: db::Inner::open(config)?,
            moving,
            mover: false,
            compiled: Arc::default(),
        })
    }

    /// This store's moves (`msgd user move`): deferred users, arriving
    /// users, the per-user signal that ends sessions at a hold.
    pub fn moving(&self) -> &moving::Moving {
        &self.moving
    }

    /// Ends when `user`'s hold begins or has begun (`msgd user move`);
    /// never for no user. Sessions wait on it to end (IMAP BYE, POP
    /// without deletions).
    pub async fn until_held(store: Option<Store>, user: Option<String>) {
        let (Some(user), Some(store)) = (user, store) else {
            return std::future::pending().await;
        };
        // Subscribe, then look: no hold falls between the two.
        let mut w = store.moving().watch(&user);
        if store.moving().deferred(&user).is_some() {
            return;
        }
        if w.changed().await.is_err() {
            std::future::pending::<()>().await
        }
    }

    /// The handle the move itself uses (and replica requests on the
    /// target): its mutations pass a user's hold.
    pub fn for_move(&self) -> Store {
        Store {
            mover: true,
            ..self.clone()
        }
    }

    /// Refuses a client mutation of a held `user`; the guard keeps a hold
    /// from beginning until the mutation is committed.
    async fn pass(&self, user: &str) -> Result<Pass<'_>> {
        if self.mover {
            return Ok(None);
        }
        let g = self.moving.pass().await;
        if self.moving.deferred(user).is_some() {
            return Err(StoreError::Moving);
        }
        Ok(Some(g))
    }

    /// `pass` for the owner of a mailbox (looked up only while some user
    /// is held).
    async fn pass_mailbox(&self, mailbox: MailboxId) -> Result<Pass<'_>> {
        if self.mover {
            return Ok(None);
        }
        let g = self.moving.pass().await;
        self.held_owner(mailbox).await?;
        Ok(Some(g))
    }

    async fn held_owner(&self, mailbox: MailboxId) -> Result<()> {
        if self.moving.any() {
            if let Ok(info) = self.inner.mailbox_info(mailbox).await {
                if self.moving.deferred(&info.user).is_some() {
                    return Err(StoreError::Moving);
                }
            }
        }
        Ok(())
    }

    /// Creates the user's default mailboxes if the user is new. `partition`
    /// is the directory's mailMessageStore (None: the default partition).
    /// Refused (`Moving`) for a held user, like every client mutation.
    pub async fn ensure_user(&self, user: &str, partition: Option<&str>) -> Result<()> {
        let _pass = self.pass(user).await?;
        self.inner.ensure_user(user, partition).await
    }

    /// Final delivery's first step: `ensure_user`, and the name of the
    /// user's active Sieve script, in one read for a known user.
    pub async fn delivery_user(
        &self,
        user: &str,
        partition: Option<&str>,
    ) -> Result<Option<String>> {
        let _pass = self.pass(user).await?;
        self.inner.delivery_user(user, partition).await
    }

    /// `pass_mailbox` for cache writes: None when the owner is held, and
    /// the write is skipped (a cache is rebuilt on need; the client's read
    /// that wanted to fill it is still answered).
    async fn pass_cache(&self, mailbox: MailboxId) -> Result<Option<Pass<'_>>> {
        match self.pass_mailbox(mailbox).await {
            Ok(p) => Ok(Some(p)),
            Err(StoreError::Moving) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Appends one message to a mailbox (delivery or IMAP APPEND). Returns
    /// once file and index are durable. Creates the user (default mailboxes)
    /// if needed. `quota` is checked against the user's usage.
    pub async fn append(
        &self,
        user: &str,
        mailbox: &str,
        msg: NewMessage,
        quota: Quota,
    ) -> Result<Placed> {
        let _pass = self.pass(user).await?;
        self.inner.append(user, mailbox, msg, quota).await
    }

    /// Final delivery of one message that must happen at most once per
    /// mailbox: unless `user` has taken delivery `once.id` within
    /// `store.duplicate_window`, appends it and records the id in the same
    /// transaction (`Some`); a repeat stores nothing (`None`). Duplicate
    /// delivery suppression, `db/duplicates.rs`.
    pub async fn append_once(
        &self,
        user: &str,
        mailbox: &str,
        msg: NewMessage,
        quota: Quota,
        once: Once,
    ) -> Result<Option<Placed>> {
        let _pass = self.pass(user).await?;
        self.inner
            .append_once(user, mailbox, msg, quota, once)
            .await
    }

    /// How many delivery ids are recorded for `user` (tests, tools).
    pub async fn delivery_ids(&self, user: &str) -> Result<u64> {
        self.inner.delivery_ids(user).await
    }

    /// Appends several messages in one transaction: all or none (IMAP
    /// MULTIAPPEND, RFC 3502). With `replace` that message is expunged in
    /// the same transaction, and only if the append succeeds (REPLACE,
    /// RFC 8508); it must still exist. `quota` is checked for the whole
    /// batch, less what the replaced message frees for the same user.
    pub async fn append_batch(
        &self,
        user: &str,
        mailbox: &str,
        msgs: Vec<NewMessage>,
        quota: Quota,
        replace: Option<(MailboxId, Uid)>,
    ) -> Result<Appended> {
        let _pass = self.pass(user).await?;
        self.inner
            .append_batch(user, mailbox, msgs, quota, replace)
            .await
    }

    /// All mailboxes of a user, sorted by name, with counters.
    pub async fn list(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        self.inner.list(user).await
    }

    /// One mailbox's info and counters.
    pub async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxInfo> {
        self.inner.status(user, mailbox).await
    }

    pub async fn create_mailbox(
        &self,
        user: &str,
        mailbox: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxInfo> {
        let _pass = self.pass(user).await?;
        self.inner.create_mailbox(user, mailbox, special_use).await
    }

    /// Deletes a mailbox and its messages. INBOX cannot be deleted.
    pub async fn delete_mailbox(&self, user: &str, mailbox: &str) -> Result<()> {
        let _pass = self.pass(user).await?;
        self.inner.delete_mailbox(user, mailbox).await
    }

    /// Renames a mailbox and its children. Renaming INBOX moves its messages
    /// into the new mailbox and leaves INBOX empty (RFC 3501 6.3.5).
    pub async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        let _pass = self.pass(user).await?;
        self.inner.rename_mailbox(user, from, to).await
    }

    pub async fn subscribe(&self, user: &str, mailbox: &str, on: bool) -> Result<()> {
        let _pass = self.pass(user).await?;
        self.inner.subscribe(user, mailbox, on).await
    }

    /// Subscribed names (may include names of mailboxes that no longer exist).
    pub async fn subscriptions(&self, user: &str) -> Result<Vec<String>> {
        self.inner.subscriptions(user).await
    }

    /// Opens a mailbox for SELECT/EXAMINE: info plus every message's meta.
    pub async fn snapshot(&self, user: &str, mailbox: &str) -> Result<Snapshot> {
        self.inner.snapshot(user, mailbox).await
    }

    /// Claims the \Recent messages of a mailbox for one session: returns the
    /// first UID that is recent for the caller; every UID from there up to
    /// the current UIDNEXT is the caller's alone.
    ///
    /// For a held owner nothing is claimed (nothing is written): the
    /// caller sees no message as \Recent.
    pub async fn claim_recent(&self, mailbox: MailboxId) -> Result<Uid> {
        match self.pass_cache(mailbox).await? {
            Some(_pass) => self.inner.claim_recent(mailbox).await,
            None => Ok(self.inner.mailbox_info(mailbox).await?.uidnext),
        }
    }

    /// What changed since `modseq` (new messages, flag changes, expunges).
    pub async fn changes(&self, mailbox: MailboxId, since: ModSeq) -> Result<Changes> {
        self.inner.changes(mailbox, since).await
    }

    /// Changes flags of the given UIDs (missing UIDs are ignored). With
    /// `unchanged_since`, messages whose modseq is higher are left alone and
    /// their UIDs returned in the second value (CONDSTORE). Returns the
    /// updated metas.
    pub async fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: Vec<Uid>,
        op: FlagOp,
        flags: Flags,
        unchanged_since: Option<ModSeq>,
    ) -> Result<(Vec<MessageMeta>, Vec<Uid>)> {
        let _pass = self.pass_mailbox(mailbox).await?;
        self.inner
            .store_flags(mailbox, uids, op, flags, unchanged_since)
            .await
    }

    /// Removes messages flagged \Deleted (only those in `uids` when given).
    /// Returns the expunged UIDs, ascending.
    pub async fn expunge(&self, mailbox: MailboxId, uids: Option<Vec<Uid>>) -> Result<Vec<Uid>> {
        let _pass = self.pass_mailbox(mailbox).await?;
        self.inner.expunge(mailbox, uids).await
    }

    /// Copies messages to another mailbox of `user` (hard links: no bytes
    /// are copied). With `remove_source` it is a MOVE: the sources are
    /// expunged in the same transaction. Returns the destination
    /// UIDVALIDITY and (source uid, new uid) pairs.
    pub async fn copy(
        &self,
        from: MailboxId,
        uids: Vec<Uid>,
        user: &str,
        to: &str,
        remove_source: bool,
        quota: Quota,
    ) -> Result<(u32, Vec<(Uid, Uid)>)> {
        let _pass = self.pass(user).await?;
        if _pass.is_some() {
            self.held_owner(from).await?;
        }
        self.inner
            .copy(from, uids, user, to, remove_source, quota)
            .await
    }

    /// The message's bytes exactly as delivered.
    pub async fn read(&self, mailbox: MailboxId, meta: &MessageMeta) -> Result<Vec<u8>> {
        self.inner.read(mailbox, meta).await
    }

    /// Several messages' bytes, in the order of `metas`, read in one
    /// blocking task (SEARCH over bodies); `None` for a message that
    /// cannot be read. The caller bounds the total size.
    pub async fn read_many<'m>(
        &self,
        mailbox: MailboxId,
        metas: impl IntoIterator<Item = &'m MessageMeta>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let list = metas
            .into_iter()
            .map(|m| (m.uid, m.offset, m.size))
            .collect();
        self.inner.read_many(mailbox, list).await
    }

    /// Usage of a user (for QUOTA and delivery checks).
    pub async fn usage(&self, user: &str) -> Result<Usage> {
        self.inner.usage(user).await
    }

    /// A receiver that changes whenever the mailbox changes (its value is
    /// the new HIGHESTMODSEQ). Sessions wait on it in IDLE and poll it
    /// between commands.
    pub fn watch(&self, mailbox: MailboxId) -> watch::Receiver<ModSeq> {
        self.inner.watch(mailbox)
    }

    /// Database cache figures (the seed's db_stat hit rate).
    /// Changes after every commit touching `user`'s mailboxes, names or
    /// subscriptions (NOTIFY, RFC 5465).
    pub fn watch_user(&self, user: &str) -> watch::Receiver<u64> {
        self.inner.watch_user(user)
    }

    pub fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    /// Users, messages and bytes per partition (`msgd store stats`).
    pub fn partition_totals(&self) -> Result<std::collections::BTreeMap<String, PartitionTotals>> {
        self.inner.partition_totals()
    }

    /// EMAILIDs (RFC 8474) of messages, in the order of `uids`: assigned at
    /// append, kept by COPY and MOVE.
    pub async fn email_ids(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<Vec<u64>> {
        self.inner.email_ids(mailbox, uids).await
    }

    /// METADATA entries (RFC 5464) of a mailbox (0: the server) as `user`
    /// sees them: each of `entries` (None: absent) and those below it.
    pub async fn get_metadata(
        &self,
        mailbox: MailboxId,
        user: &str,
        entries: Vec<String>,
        depth: MetaDepth,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        self.inner.get_metadata(mailbox, user, entries, depth).await
    }

    /// Sets or removes METADATA entries, all or none; shared entries are
    /// charged to the mailbox `owner`, private ones to `user`.
    pub async fn set_metadata(
        &self,
        mailbox: MailboxId,
        user: &str,
        owner: &str,
        items: Vec<(String, Option<Vec<u8>>)>,
        limits: MetaLimits,
    ) -> Result<std::result::Result<(), MetaRefusal>> {
        let _pass = self.pass(owner).await?;
        if _pass.is_some() && self.moving.deferred(user).is_some() {
            return Err(StoreError::Moving);
        }
        let r = self
            .inner
            .set_metadata(mailbox, user, owner, items, limits)
            .await;
        if mailbox == 0 {
            // After the commit (or the refusal): see `server_settings`.
            self.inner.server_settings.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    /// Changes with every committed change of server METADATA entries
    /// (the users' settings: JMAP's vacation response, identities). A
    /// setting found absent or off at generation g is still so while this
    /// returns g (the vacation responder skips its read per delivery).
    pub fn server_settings_generation(&self) -> u64 {
        self.inner.server_settings.load(Ordering::SeqCst)
    }

    /// Was `user`'s setting `name` found absent or off (`note_setting_off`)
    /// with no server METADATA change since?
    pub fn setting_known_off(&self, user: &str, name: &'static str) -> bool {
        let now = self.server_settings_generation();
        let map = self
            .inner
            .settings_off
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(name).and_then(|m| m.get(user)) == Some(&now)
    }

    /// Remembers that `user`'s setting `name` was absent or off when read
    /// at `generation` (`server_settings_generation` taken before the read).
    pub fn note_setting_off(&self, user: &str, name: &'static str, generation: u64) {
        /// Users remembered per setting; the map starts over when full.
        const MAX_USERS: usize = 100_000;
        let mut map = self
            .inner
            .settings_off
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let users = map.entry(name).or_default();
        if users.len() >= MAX_USERS {
            users.clear();
        }
        users.insert(user.to_string(), generation);
    }

    /// The URLAUTH key (RFC 4467) of `user` for a mailbox, made on first
    /// need.
    pub async fn urlauth_key(&self, user: &str, mailbox: MailboxId) -> Result<Vec<u8>> {
        self.inner.urlauth_key(user, mailbox).await
    }

    /// RESETKEY (RFC 4467 6): a new key for one mailbox, or for all.
    pub async fn reset_urlauth_keys(&self, user: &str, mailbox: Option<MailboxId>) -> Result<()> {
        let _pass = self.pass(user).await?;
        self.inner.reset_urlauth_keys(user, mailbox).await
    }

    /// Sets a mailbox's JMAP sortOrder (`None`: the default again); a
    /// Mailbox change in the journal.
    pub async fn set_sort_order(
        &self,
        user: &str,
        mailbox: MailboxId,
        order: Option<u32>,
    ) -> Result<()> {
        let _pass = self.pass(user).await?;
        self.inner.set_sort_order(user, mailbox, order).await
    }

    /// The sortOrder set for each of these mailboxes that has one.
    pub async fn sort_orders(
        &self,
        mailboxes: Vec<MailboxId>,
    ) -> Result<std::collections::HashMap<MailboxId, u32>> {
        self.inner.sort_orders(mailboxes).await
    }

    /// The user's Sieve scripts, each with whether it is active.
    pub async fn sieve_list(&self, user: &str) -> Result<Vec<(String, bool)>> {
        self.inner.sieve_list(user).await
    }

    /// One Sieve script's text.
    pub async fn sieve_get(&self, user: &str, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.sieve_get(user, name).await
    }

    /// The active Sieve script (name, text), if any.
    pub async fn sieve_active(&self, user: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.inner.sieve_active(user).await
    }

    /// Stores a Sieve script (already compiled by the caller).
    pub async fn sieve_put(
        &self,
        user: &str,
        name: &str,
        text: Vec<u8>,
        limits: SieveLimits,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        let _pass = self.pass(user).await?;
        let r = self.inner.sieve_put(user, name, text, limits).await;
        self.compiled.forget_user(user);
        r
    }

    /// Makes a script active (`None`: none).
    pub async fn sieve_set_active(
        &self,
        user: &str,
        name: Option<&str>,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        let _pass = self.pass(user).await?;
        let r = self.inner.sieve_set_active(user, name).await;
        self.compiled.forget_user(user);
        r
    }

    /// Deletes a script that is not active.
    pub async fn sieve_delete(
        &self,
        user: &str,
        name: &str,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        let _pass = self.pass(user).await?;
        let r = self.inner.sieve_delete(user, name).await;
        self.compiled.forget_user(user);
        r
    }

    /// Renames a script.
    pub async fn sieve_rename(
        &self,
        user: &str,
        from: &str,
        to: &str,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        let _pass = self.pass(user).await?;
        let r = self.inner.sieve_rename(user, from, to).await;
        self.compiled.forget_user(user);
        r
    }

    /// Removes all of a user's Sieve data (move source, purge).
    pub async fn sieve_remove_user(&self, user: &str) -> Result<u64> {
        let _pass = self.pass(user).await?;
        let r = self.inner.sieve_remove_user(user).await;
        self.compiled.forget_user(user);
        r
    }

    /// The compiled Sieve scripts of this process (src/sieve/).
    pub fn compiled_sieve(&self) -> Arc<CompiledScripts> {
        self.compiled.clone()
    }

    /// Vacation rate limit (RFC 5230 4.2): true if `id` was answered within
    /// its period; else records it and returns false.
    pub async fn sieve_vacation_seen(
        &self,
        user: &str,
        id: &str,
        period: i64,
        now: i64,
    ) -> Result<bool> {
        self.inner.sieve_vacation_seen(user, id, period, now).await
    }

    /// Ends a webmail session everywhere: tokens naming `session_id` are
    /// refused until `until` (unix seconds; see store/sessions.rs).
    pub async fn revoke_session(&self, session_id: &str, until: i64) -> Result<()> {
        self.inner.revoke_session(session_id, until).await
    }

    /// Was this webmail session ended by a logout?
    pub async fn session_revoked(&self, session_id: &str) -> Result<bool> {
        self.inner.session_revoked(session_id).await
    }

    /// Revoked webmail sessions kept.
    pub async fn revoked_sessions(&self) -> Result<u64> {
        self.inner.revoked_sessions().await
    }

    #[cfg(test)]
    pub async fn forget_thread_ids(&self, mailbox: MailboxId) -> Result<()> {
        self.inner.forget_thread_ids(mailbox).await
    }

    /// Cached PREVIEW texts (RFC 8970), in the order of `uids`.
    pub async fn previews(
        &self,
        mailbox: MailboxId,
        uids: Vec<Uid>,
    ) -> Result<Vec<Option<String>>> {
        self.inner.previews(mailbox, uids).await
    }

    /// Caches PREVIEW texts; dropped with the message like its summary.
    /// Skipped for a held owner.
    pub async fn put_previews(&self, mailbox: MailboxId, items: Vec<(Uid, String)>) -> Result<()> {
        let Some(_pass) = self.pass_cache(mailbox).await? else {
            return Ok(());
        };
        self.inner.put_previews(mailbox, items).await
    }

    /// THREADIDs (RFC 8474) of messages, in the order of `uids` (0: gone):
    /// assigned at append from the thread index, computed on first need for
    /// messages stored before it, kept by COPY and MOVE.
    pub async fn thread_ids(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<Vec<u64>> {
        self.inner.thread_ids(mailbox, uids).await
    }

    /// Cached per-message summaries (opaque bytes the IMAP layer computes:
    /// ENVELOPE, BODYSTRUCTURE, sort keys), in the order of `uids`.
    pub async fn summaries(
        &self,
        mailbox: MailboxId,
        uids: Vec<Uid>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // Ascending and dense (SORT, THREAD, FETCH of a range): one scan.
        let ascending = uids.windows(2).all(|w| w[0] < w[1]);
        let span = match (uids.first(), uids.last()) {
            (Some(&a), Some(&b)) => u64::from(b - a.min(b)) + 1,
            _ => 0,
        };
        if ascending && span > 0 && span <= 4 * uids.len() as u64 {
            return self.inner.summaries_scan(mailbox, uids).await;
        }
        self.inner.summaries(mailbox, uids).await
    }

    /// Caches summaries (ignored for messages that no longer exist). Not
    /// an acknowledgement of anything: the cache can always be rebuilt.
    pub async fn put_summaries(
        &self,
        mailbox: MailboxId,
        items: Vec<(Uid, Vec<u8>)>,
    ) -> Result<()> {
        // Skipped for a held owner.
        let Some(_pass) = self.pass_cache(mailbox).await? else {
            return Ok(());
        };
        self.inner.put_summaries(mailbox, items).await
    }

    /// A mailbox's info by id (counters; `subscribed` is false).
    pub async fn mailbox_info(&self, mailbox: MailboxId) -> Result<MailboxInfo> {
        self.inner.mailbox_info(mailbox).await
    }

    /// The access control list of a mailbox (RFC 4314): (identifier,
    /// rights letters). The owner's implicit rights are not stored.
    pub async fn acl(&self, mailbox: MailboxId) -> Result<Vec<(String, String)>> {
        self.inner.acl(mailbox).await
    }

    /// Stored rights of one identifier on a mailbox.
    pub async fn rights(&self, mailbox: MailboxId, identifier: &str) -> Result<Option<String>> {
        self.inner.rights(mailbox, identifier).await
    }

    /// Sets (`Some`, non-empty) or removes the rights of an identifier.
    pub async fn set_acl(
        &self,
        mailbox: MailboxId,
        identifier: &str,
        rights: Option<String>,
    ) -> Result<()> {
        let _pass = self.pass_mailbox(mailbox).await?;
        self.inner.set_acl(mailbox, identifier, rights).await
    }

    /// Mailboxes on which any of `identifiers` (a user, `anyone`) has
    /// rights: (mailbox, identifier, rights).
    pub async fn shared_with(
        &self,
        identifiers: Vec<String>,
    ) -> Result<Vec<(MailboxInfo, String, String)>> {
        self.inner.shared_with(identifiers).await
    }

    /// JMAP state of one data type for `user`: the journal position of its
    /// last change (0: none yet). See `db/journal.rs`.
    pub async fn jmap_state(&self, user: &str, kind: JmapKind) -> Result<u64> {
        self.inner.jmap_state(user, kind).await
    }

    /// Changes of one data type since a state (RFC 8620 5.2): created,
    /// updated, destroyed ids, at most `max` of them (`has_more` then);
    /// `CannotCalculate` for a state older than the journal keeps.
    pub async fn jmap_changes(
        &self,
        user: &str,
        kind: JmapKind,
        since: u64,
        max: usize,
    ) -> std::result::Result<JournalChanges, ChangesError> {
        self.inner.jmap_changes(user, kind, since, max).await
    }

    /// Where each email id of `user` lives: (mailbox, uid, thread id) per
    /// copy; empty for an id that is not theirs or gone.
    pub async fn email_places(
        &self,
        user: &str,
        emails: Vec<u64>,
    ) -> Result<Vec<Vec<(MailboxId, Uid, u64)>>> {
        self.inner.email_places(user, emails).await
    }

    /// The email ids of each thread of `user`, oldest first; empty for a
    /// thread that is not theirs.
    pub async fn thread_emails(&self, user: &str, threads: Vec<u64>) -> Result<Vec<Vec<u64>>> {
        self.inner.thread_emails(user, threads).await
    }

    /// Every copy of each email of `user` with its index entry (flags,
    /// dates, size) and thread id: what Email/get needs, one read
    /// transaction. Empty for an id that is not theirs or gone.
    pub async fn email_entries(
        &self,
        user: &str,
        emails: Vec<u64>,
    ) -> Result<Vec<Vec<(MailboxId, MessageMeta, u64)>>> {
        self.inner.email_entries(user, emails).await
    }

    /// The bytes of an email of `user` (JMAP blob of a message); None
    /// when the id is not theirs or the message is gone.
    pub async fn read_email(&self, user: &str, email: u64) -> Result<Option<Vec<u8>>> {
        self.inner.read_email(user, email).await
    }

    /// Every (email id, mailbox, uid, thread id) of `user`.
    pub async fn all_email_places(&self, user: &str) -> Result<Vec<(u64, MailboxId, Uid, u64)>> {
        self.inner.all_email_places(user).await
    }

    /// Records changes of data kept outside the mailboxes (identities,
    /// submissions, vacation response, contacts) in `user`'s journal, so
    /// their states and `Foo/changes` work like the mail types'. Call it
    /// after the data itself is durable.
    pub async fn jmap_record(
        &self,
        user: &str,
        changes: Vec<(JmapKind, u64, JmapOp)>,
    ) -> Result<()> {
        let _pass = self.pass(user).await?;
        self.inner.jmap_record(user, changes).await
    }

    /// Every user with a folder in a partition: (user, partition name).
    /// Reconstruct and verify, `db/reconstruct.rs`.
    pub async fn users_on_disk(&self) -> Result<Vec<(String, String)>> {
        self.inner.users_on_disk().await
    }

    /// Users the index knows.
    pub async fn indexed_users(&self) -> Result<Vec<String>> {
        self.inner.indexed_users().await
    }

    /// Rebuilds `user`'s index from their message files, replacing it.
    pub async fn reconstruct_user(
        &self,
        user: &str,
        tick: Arc<dyn Tick>,
    ) -> Result<ReconstructReport> {
        self.inner.reconstruct_user(user, tick).await
    }

    /// Checks (and with `repair` fixes) `user`'s index against the files.
    pub async fn verify_user(
        &self,
        user: &str,
        repair: bool,
        tick: Arc<dyn Tick>,
    ) -> Result<VerifyReport> {
        self.inner.verify_user(user, repair, tick).await
    }

    /// Partitions: (name, folder), by name.
    pub fn partition_folders(&self) -> Vec<(String, PathBuf)> {
        self.inner.partition_folders()
    }

    /// Users of the index by partition name.
    pub async fn users_by_partition(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
        self.inner.users_by_partition().await
    }

    /// What retention `rules` remove from `user`'s mailboxes at `now`.
    pub async fn expire_candidates(
        &self,
        user: &str,
        rules: Vec<crate::config::ExpireRule>,
        now: i64,
    ) -> Result<Vec<Expiring>> {
        self.inner.expire_candidates(user, rules, now).await
    }

    /// Removes messages whatever their flags (expire), as an EXPUNGE does.
    pub async fn expire_remove(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<(u64, u64)> {
        self.inner.expire_remove(mailbox, uids).await
    }

    /// Mailboxes of `users` holding more than `keep` expunge records.
    pub async fn expunged_counts(
        &self,
        users: Vec<String>,
        keep: u64,
    ) -> Result<Vec<(MailboxId, u64)>> {
        self.inner.expunged_counts(users, keep).await
    }

    /// Trims a mailbox's expunge records to the newest `keep` (a chunk per
    /// call; returns how many went) and raises its QRESYNC floor.
    pub async fn trim_expunged(&self, mailbox: MailboxId, keep: u64) -> Result<u64> {
        self.inner.trim_expunged(mailbox, keep).await
    }

    /// Highest modseq whose expunge records may be gone (0: none).
    pub async fn expunge_floor(&self, mailbox: MailboxId) -> Result<ModSeq> {
        self.inner.expunge_floor(mailbox).await
    }

    /// Removes set-aside expunged files of a partition older than
    /// `grace` seconds: (files, bytes). The mailboxes' record files learn
    /// the highest UID purged (reconstruct never reuses it).
    pub async fn purge_expunged(
        &self,
        partition: &str,
        now: i64,
        grace: u64,
    ) -> Result<(u64, u64)> {
        self.inner.purge_expunged(partition, now, grace).await
    }

    /// Every user of the store, sorted (backup --all).
    pub async fn users(&self) -> Result<Vec<String>> {
        self.inner.users().await
    }

    /// A user's mailboxes, messages and subscriptions from one read
    /// transaction (backup; see `db/restore.rs`); None for an unknown user.
    pub async fn user_index(&self, user: &str) -> Result<Option<UserIndex>> {
        self.inner.user_index(user).await
    }

    /// Puts messages back at their UIDs into a mailbox with the given
    /// UIDVALIDITY, created if absent; never overwrites a message, refuses
    /// a used mailbox with another UIDVALIDITY (`UidValidityChanged`).
    /// Restore and user move; see `db/restore.rs`.
    pub async fn restore_mailbox(
        &self,
        user: &str,
        mailbox: RestoreMailbox,
        messages: Vec<RestoreMessage>,
    ) -> Result<Restored> {
        self.inner.restore_mailbox(user, mailbox, messages).await
    }

    /// Path of a message file (for tools and tests).
    pub fn message_path(&self, mailbox: MailboxId, uid: Uid) -> Result<PathBuf> {
        self.inner.message_path(mailbox, uid)
    }
}

/// Canonical mailbox name: `INBOX` in any case is `INBOX`, also as the first
/// level of a hierarchy (`inbox/x` -> `INBOX/x`); trailing and repeated
/// delimiters are refused.
pub fn normalize_name(name: &str) -> Result<String> {
    if name.is_empty()
        || name.starts_with(DELIMITER)
        || name.ends_with(DELIMITER)
        || name.contains("//")
        || name.chars().any(|c| c.is_control())
        || name.len() > 512
    {
        return Err(StoreError::BadName);
    }
    let mut parts = name.splitn(2, DELIMITER);
    let first = parts.next().unwrap_or_default();
    let rest = parts.next();
    let first = if first.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        first
    };
    Ok(match rest {
        Some(r) => format!("{first}{DELIMITER}{r}"),
        None => first.to_string(),
    })
}

#[cfg(test)]
mod tests;
