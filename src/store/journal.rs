//! The per-user JMAP change journal (RFC 8620 5.2 `Foo/changes`) and the
//! indexes JMAP needs beside the mboxlist: where an email id lives and
//! which emails a thread has.
//!
//! Tables (all keyed by user first, so one user's rows are one range):
//! - JOURNAL (user, seq) -> (kind, op, id): what changed at each position.
//!   `seq` counts per user from 1; a state string is a position.
//! - JSTATE (user, slot) -> u64: per kind the position of its last entry
//!   (slots 0..=15), `FLOOR` the oldest position changes can be computed
//!   from, `LAST` the user's last position.
//! - EMAIL_PLACES (user, email id, mailbox id, uid) -> thread id: every
//!   copy of a message; an email exists while it has a place.
//! - THREAD_EMAILS (user, thread id, email id) -> 1: a thread's emails.
//!
//! Invariants:
//! - Entries are written by the writer in the transaction of the change
//!   itself (`Pending`, filled by the write jobs through the hooks below,
//!   written by `flush` just before the commit), so a state never names a
//!   change that did not happen, and IMAP's changes are JMAP's: both go
//!   through the same store calls.
//! - Within one transaction the entries of one object collapse (created
//!   then updated: created; created then destroyed: nothing; destroyed
//!   then created again, as a MOVE does: updated).
//! - Bounded: a user keeps the last `keep` entries (`http.changes_kept`);
//!   a state older than that answers `cannotCalculateChanges`.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::*;

const JOURNAL: TableDefinition<(&str, u64), (u8, u8, u64)> = TableDefinition::new("jmap_journal");
const JSTATE: TableDefinition<(&str, u8), u64> = TableDefinition::new("jmap_state");
const EMAIL_PLACES: TableDefinition<(&str, u64, u64, u32), u64> =
    TableDefinition::new("jmap_email_places");
const THREAD_EMAILS: TableDefinition<(&str, u64, u64), u8> =
    TableDefinition::new("jmap_thread_emails");

const FLOOR: u8 = 254;
const LAST: u8 = 255;

/// The JMAP data types whose changes are journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Mailbox = 0,
    Email = 1,
    Thread = 2,
    /// New mail delivered (not copied or moved): push's `EmailDelivery`.
    EmailDelivery = 3,
    Identity = 4,
    EmailSubmission = 5,
    VacationResponse = 6,
    AddressBook = 7,
    ContactCard = 8,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Mailbox,
        Kind::Email,
        Kind::Thread,
        Kind::EmailDelivery,
        Kind::Identity,
        Kind::EmailSubmission,
        Kind::VacationResponse,
        Kind::AddressBook,
        Kind::ContactCard,
    ];

    /// The JMAP type name (push `StateChange`, `types=`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mailbox => "Mailbox",
            Kind::Email => "Email",
            Kind::Thread => "Thread",
            Kind::EmailDelivery => "EmailDelivery",
            Kind::Identity => "Identity",
            Kind::EmailSubmission => "EmailSubmission",
            Kind::VacationResponse => "VacationResponse",
            Kind::AddressBook => "AddressBook",
            Kind::ContactCard => "ContactCard",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    Created = 0,
    Updated = 1,
    Destroyed = 2,
}

impl Op {
    fn from_u8(v: u8) -> Op {
        match v {
            0 => Op::Created,
            2 => Op::Destroyed,
            _ => Op::Updated,
        }
    }
}

/// What `Foo/changes` answers (RFC 8620 5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalChanges {
    pub old_state: u64,
    pub new_state: u64,
    pub has_more: bool,
    pub created: Vec<u64>,
    pub updated: Vec<u64>,
    pub destroyed: Vec<u64>,
    /// Mailbox only: every update in the range changed counts alone
    /// (RFC 8621 2.2 `updatedProperties`).
    pub counts_only: bool,
}

/// Why changes cannot be given.
#[derive(Debug, Clone)]
pub enum ChangesError {
    /// The state is older than what the journal keeps, or not one of ours.
    CannotCalculate,
    Store(StoreError),
}

impl From<StoreError> for ChangesError {
    fn from(e: StoreError) -> Self {
        ChangesError::Store(e)
    }
}

/// Entries of the transaction in progress, collapsed per object; written
/// by `flush` before the commit.
#[derive(Default)]
pub struct Pending {
    order: Vec<(String, Kind, u64)>,
    ops: HashMap<(String, Kind, u64), Option<Op>>,
    /// Mailboxes (user, id) whose updates so far only changed counters.
    counts_only: Vec<(String, u64)>,
}

/// `Op::Updated` with this bit: only counters changed (a Mailbox's
/// totals). Stored in the op byte.
const COUNTS: u8 = 0x10;

impl Pending {
    /// Records a change of one object, collapsing with earlier ones of the
    /// same transaction.
    pub fn record(&mut self, user: &str, kind: Kind, id: u64, op: Op) {
        self.record_raw(user, kind, id, op as u8);
    }

    fn record_raw(&mut self, user: &str, kind: Kind, id: u64, op: u8) {
        let key = (user.to_string(), kind, id);
        let new = Op::from_u8(op & 0x0f);
        match self.ops.get_mut(&key) {
            None => {
                self.order.push(key.clone());
                self.ops.insert(key, Some(new));
                if op & COUNTS != 0 {
                    self.counts_only.push((user.to_string(), id));
                }
            }
            Some(slot) => {
                *slot = match (*slot, new) {
                    (None, Op::Created) => Some(Op::Created),
                    (None, _) => Some(new),
                    (Some(Op::Created), Op::Destroyed) => None,
                    (Some(Op::Created), _) => Some(Op::Created),
                    (Some(Op::Destroyed), Op::Created) => Some(Op::Updated),
                    (Some(_), Op::Destroyed) => Some(Op::Destroyed),
                    (Some(_), _) => Some(Op::Updated),
                };
                if op & COUNTS == 0 {
                    self.counts_only.retain(|(u, i)| !(u == user && *i == id));
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(JOURNAL).map_err(ie)?;
    txn.open_table(JSTATE).map_err(ie)?;
    txn.open_table(EMAIL_PLACES).map_err(ie)?;
    txn.open_table(THREAD_EMAILS).map_err(ie)?;
    Ok(())
}

/// Builds EMAIL_PLACES and THREAD_EMAILS once for a database made before
/// them (every message's place; a message without a thread is its own).
pub(super) fn build_index(txn: &WriteTransaction) -> Result<()> {
    let done = txn
        .open_table(META)
        .map_err(ie)?
        .get("jmap_index")
        .map_err(ie)?
        .is_some();
    if done {
        return Ok(());
    }
    let mut rows = Vec::new();
    {
        let boxes = txn.open_table(MAILBOXES).map_err(ie)?;
        let msgs = txn.open_table(MESSAGES).map_err(ie)?;
        let mut owner: Option<(u64, String)> = None;
        for item in msgs.iter().map_err(ie)? {
            let (k, _) = item.map_err(ie)?;
            let (mailbox, uid) = k.value();
            if owner.as_ref().map(|o| o.0) != Some(mailbox) {
                let user = match boxes.get(mailbox).map_err(ie)? {
                    Some(v) => dec::<MailboxRec>(v.value())?.user,
                    None => continue,
                };
                owner = Some((mailbox, user));
            }
            if let Some((_, user)) = &owner {
                rows.push((user.clone(), mailbox, uid));
            }
        }
    }
    let mut places = txn.open_table(EMAIL_PLACES).map_err(ie)?;
    let mut threads = txn.open_table(THREAD_EMAILS).map_err(ie)?;
    for (user, mailbox, uid) in rows {
        let (email, thread) = extra::object_ids(txn, mailbox, uid)?;
        let thread = if thread == 0 { email } else { thread };
        places
            .insert((user.as_str(), email, mailbox, uid), thread)
            .map_err(ie)?;
        threads
            .insert((user.as_str(), thread, email), 1)
            .map_err(ie)?;
    }
    drop(places);
    drop(threads);
    txn.open_table(META)
        .map_err(ie)?
        .insert("jmap_index", 1)
        .map_err(ie)?;
    Ok(())
}

/// Writes the pending entries of the batch, then trims every touched
/// user's journal to `keep` entries. Called by the writer before commit.
pub(in crate::store) fn flush(
    txn: &WriteTransaction,
    pending: &mut Pending,
    keep: u64,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut journal = txn.open_table(JOURNAL).map_err(ie)?;
    let mut state = txn.open_table(JSTATE).map_err(ie)?;
    let mut lasts: HashMap<String, u64> = HashMap::new();
    let order = std::mem::take(&mut pending.order);
    for key in order {
        let Some(Some(op)) = pending.ops.remove(&key) else {
            continue;
        };
        let (user, kind, id) = key;
        let last = match lasts.get(&user) {
            Some(l) => *l,
            None => state
                .get((user.as_str(), LAST))
                .map_err(ie)?
                .map_or(0, |v| v.value()),
        };
        let seq = last + 1;
        let counts = kind == Kind::Mailbox
            && op == Op::Updated
            && pending
                .counts_only
                .iter()
                .any(|(u, i)| *u == user && *i == id);
        let byte = op as u8 | if counts { COUNTS } else { 0 };
        journal
            .insert((user.as_str(), seq), (kind as u8, byte, id))
            .map_err(ie)?;
        state.insert((user.as_str(), kind as u8), seq).map_err(ie)?;
        lasts.insert(user, seq);
    }
    pending.counts_only.clear();
    for (user, last) in lasts {
        state.insert((user.as_str(), LAST), last).map_err(ie)?;
        let floor = state
            .get((user.as_str(), FLOOR))
            .map_err(ie)?
            .map_or(0, |v| v.value());
        if last > keep && last - keep > floor {
            let new_floor = last - keep;
            let old: Vec<u64> = journal
                .range((user.as_str(), floor)..=(user.as_str(), new_floor))
                .map_err(ie)?
                .filter_map(|i| i.ok().map(|(k, _)| k.value().1))
                .collect();
            for s in old {
                journal.remove((user.as_str(), s)).map_err(ie)?;
            }
            state
                .insert((user.as_str(), FLOOR), new_floor)
                .map_err(ie)?;
        }
    }
    Ok(())
}

/// A message got a place (append, copy, move's destination). `email` and
/// `thread` are its ids; `delivered` for new mail (not a copy).
pub(super) fn message_added(
    txn: &WriteTransaction,
    pending: &mut Pending,
    user: &str,
    place: (MailboxId, Uid),
    email: u64,
    thread: u64,
    delivered: bool,
) -> Result<()> {
    let thread = if thread == 0 { email } else { thread };
    let mut places = txn.open_table(EMAIL_PLACES).map_err(ie)?;
    let existed = places
        .range((user, email, 0u64, 0u32)..=(user, email, u64::MAX, u32::MAX))
        .map_err(ie)?
        .next()
        .is_some();
    places
        .insert((user, email, place.0, place.1), thread)
        .map_err(ie)?;
    pending.record_raw(user, Kind::Mailbox, place.0, Op::Updated as u8 | COUNTS);
    if existed {
        pending.record(user, Kind::Email, email, Op::Updated);
    } else {
        pending.record(user, Kind::Email, email, Op::Created);
        let mut threads = txn.open_table(THREAD_EMAILS).map_err(ie)?;
        let thread_existed = threads
            .range((user, thread, 0u64)..=(user, thread, u64::MAX))
            .map_err(ie)?
            .next()
            .is_some();
        threads.insert((user, thread, email), 1).map_err(ie)?;
        let op = if thread_existed {
            Op::Updated
        } else {
            Op::Created
        };
        pending.record(user, Kind::Thread, thread, op);
        if delivered {
            pending.record(user, Kind::EmailDelivery, email, Op::Created);
        }
    }
    Ok(())
}

/// A message left a place (expunge, move's source, mailbox deleted).
pub(super) fn message_removed(
    txn: &WriteTransaction,
    pending: &mut Pending,
    user: &str,
    place: (MailboxId, Uid),
    email: u64,
) -> Result<()> {
    let mut places = txn.open_table(EMAIL_PLACES).map_err(ie)?;
    let Some(thread) = places
        .remove((user, email, place.0, place.1))
        .map_err(ie)?
        .map(|v| v.value())
    else {
        return Ok(());
    };
    pending.record_raw(user, Kind::Mailbox, place.0, Op::Updated as u8 | COUNTS);
    let still = places
        .range((user, email, 0u64, 0u32)..=(user, email, u64::MAX, u32::MAX))
        .map_err(ie)?
        .next()
        .is_some();
    if still {
        pending.record(user, Kind::Email, email, Op::Updated);
        return Ok(());
    }
    pending.record(user, Kind::Email, email, Op::Destroyed);
    let mut threads = txn.open_table(THREAD_EMAILS).map_err(ie)?;
    threads.remove((user, thread, email)).map_err(ie)?;
    let left = threads
        .range((user, thread, 0u64)..=(user, thread, u64::MAX))
        .map_err(ie)?
        .next()
        .is_some();
    let op = if left { Op::Updated } else { Op::Destroyed };
    pending.record(user, Kind::Thread, thread, op);
    Ok(())
}

/// A message's flags changed: the Email is updated, and its mailbox's
/// counters may be.
pub(super) fn flags_changed(pending: &mut Pending, user: &str, mailbox: MailboxId, email: u64) {
    pending.record(user, Kind::Email, email, Op::Updated);
    pending.record_raw(user, Kind::Mailbox, mailbox, Op::Updated as u8 | COUNTS);
}

/// Forgets `user`'s journal and email indexes (reconstruct rebuilds the
/// indexes): every state moves one past the last, and states before it
/// answer `cannotCalculateChanges`, so clients resynchronise.
pub(super) fn reset_user(txn: &WriteTransaction, user: &str) -> Result<()> {
    {
        let mut t = txn.open_table(JOURNAL).map_err(ie)?;
        let seqs: Vec<u64> = t
            .range((user, 0u64)..=(user, u64::MAX))
            .map_err(ie)?
            .filter_map(|i| i.ok().map(|(k, _)| k.value().1))
            .collect();
        for s in seqs {
            t.remove((user, s)).map_err(ie)?;
        }
    }
    {
        let mut t = txn.open_table(EMAIL_PLACES).map_err(ie)?;
        let keys: Vec<(u64, u64, u32)> = t
            .range((user, 0u64, 0u64, 0u32)..=(user, u64::MAX, u64::MAX, u32::MAX))
            .map_err(ie)?
            .filter_map(|i| {
                i.ok().map(|(k, _)| {
                    let (_, e, m, u) = k.value();
                    (e, m, u)
                })
            })
            .collect();
        for (e, m, u) in keys {
            t.remove((user, e, m, u)).map_err(ie)?;
        }
    }
    {
        let mut t = txn.open_table(THREAD_EMAILS).map_err(ie)?;
        let keys: Vec<(u64, u64)> = t
            .range((user, 0u64, 0u64)..=(user, u64::MAX, u64::MAX))
            .map_err(ie)?
            .filter_map(|i| {
                i.ok().map(|(k, _)| {
                    let (_, th, e) = k.value();
                    (th, e)
                })
            })
            .collect();
        for (th, e) in keys {
            t.remove((user, th, e)).map_err(ie)?;
        }
    }
    let mut state = txn.open_table(JSTATE).map_err(ie)?;
    let last = state
        .get((user, LAST))
        .map_err(ie)?
        .map_or(0, |v| v.value())
        + 1;
    for k in Kind::ALL {
        state.insert((user, k as u8), last).map_err(ie)?;
    }
    state.insert((user, FLOOR), last).map_err(ie)?;
    state.insert((user, LAST), last).map_err(ie)?;
    Ok(())
}

/// Position of the last change of `kind` for `user` (0: none yet).
pub(super) fn state_sync(txn: &ReadTransaction, user: &str, kind: Kind) -> Result<u64> {
    let t = txn.open_table(JSTATE).map_err(ie)?;
    let v = t
        .get((user, kind as u8))
        .map_err(ie)?
        .map_or(0, |v| v.value());
    Ok(v)
}

/// Changes of `kind` after position `since`, at most `max` ids (RFC 8620
/// 5.2: `newState` then names the position up to which they were given).
pub(super) fn changes_sync(
    txn: &ReadTransaction,
    user: &str,
    kind: Kind,
    since: u64,
    max: usize,
) -> std::result::Result<JournalChanges, ChangesError> {
    let state = txn.open_table(JSTATE).map_err(ie)?;
    let get = |slot: u8| -> Result<u64> {
        Ok(state
            .get((user, slot))
            .map_err(ie)?
            .map_or(0, |v| v.value()))
    };
    let current = get(kind as u8)?;
    let last = get(LAST)?;
    let floor = get(FLOOR)?;
    let mut out = JournalChanges {
        old_state: since,
        new_state: current,
        counts_only: true,
        ..Default::default()
    };
    if since == current {
        out.counts_only = false;
        return Ok(out);
    }
    if since > last || since < floor {
        return Err(ChangesError::CannotCalculate);
    }
    let journal = txn.open_table(JOURNAL).map_err(ie)?;
    // id -> (first op seen, last op seen)
    let mut seen: HashMap<u64, (Op, Op)> = HashMap::new();
    let mut order: Vec<u64> = Vec::new();
    let max = max.max(1);
    let mut any_update = false;
    for item in journal
        .range((user, since + 1)..=(user, current))
        .map_err(ie)?
    {
        let (k, v) = item.map_err(ie)?;
        let seq = k.value().1;
        let (kv, op, id) = v.value();
        if Kind::from_u8(kv) != Some(kind) {
            continue;
        }
        if !seen.contains_key(&id) && seen.len() >= max {
            out.has_more = true;
            break;
        }
        let o = Op::from_u8(op & 0x0f);
        if o == Op::Updated {
            any_update = true;
            if op & COUNTS == 0 {
                out.counts_only = false;
            }
        }
        match seen.get_mut(&id) {
            Some(e) => e.1 = o,
            None => {
                seen.insert(id, (o, o));
                order.push(id);
            }
        }
        out.new_state = seq;
    }
    if !out.has_more {
        out.new_state = current;
    }
    for id in order {
        let (first, last) = seen[&id];
        match (first, last) {
            (Op::Created, Op::Destroyed) => {}
            (Op::Created, _) => out.created.push(id),
            (_, Op::Destroyed) => out.destroyed.push(id),
            _ => out.updated.push(id),
        }
    }
    if !any_update {
        out.counts_only = false;
    }
    Ok(out)
}

/// Where an email of `user` lives: (mailbox, uid, thread), empty when it
/// is not (or not theirs).
pub(super) fn places_sync(
    txn: &ReadTransaction,
    user: &str,
    email: u64,
) -> Result<Vec<(MailboxId, Uid, u64)>> {
    let t = txn.open_table(EMAIL_PLACES).map_err(ie)?;
    let mut out = Vec::new();
    for item in t
        .range((user, email, 0u64, 0u32)..=(user, email, u64::MAX, u32::MAX))
        .map_err(ie)?
    {
        let (k, v) = item.map_err(ie)?;
        let (_, _, m, u) = k.value();
        out.push((m, u, v.value()));
    }
    Ok(out)
}

/// The emails of a thread of `user`, in the order they arrived (ids grow
/// with arrival); empty when the thread is not theirs.
pub(super) fn thread_sync(txn: &ReadTransaction, user: &str, thread: u64) -> Result<Vec<u64>> {
    let t = txn.open_table(THREAD_EMAILS).map_err(ie)?;
    let mut out = Vec::new();
    for item in t
        .range((user, thread, 0u64)..=(user, thread, u64::MAX))
        .map_err(ie)?
    {
        let (k, _) = item.map_err(ie)?;
        out.push(k.value().2);
    }
    Ok(out)
}

/// Every email of `user` as (email, thread) with its places, for
/// `Email/query` over all mailboxes.
pub(super) fn all_places_sync(
    txn: &ReadTransaction,
    user: &str,
) -> Result<Vec<(u64, MailboxId, Uid, u64)>> {
    let t = txn.open_table(EMAIL_PLACES).map_err(ie)?;
    let mut out = Vec::new();
    for item in t
        .range((user, 0u64, 0u64, 0u32)..=(user, u64::MAX, u64::MAX, u32::MAX))
        .map_err(ie)?
    {
        let (k, v) = item.map_err(ie)?;
        let (_, e, m, u) = k.value();
        out.push((e, m, u, v.value()));
    }
    Ok(out)
}

impl Inner {
    pub async fn jmap_state(&self, user: &str, kind: Kind) -> Result<u64> {
        let user = user.to_string();
        self.read_txn(move |txn| state_sync(txn, &user, kind)).await
    }

    pub async fn jmap_changes(
        &self,
        user: &str,
        kind: Kind,
        since: u64,
        max: usize,
    ) -> std::result::Result<JournalChanges, ChangesError> {
        let user = user.to_string();
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(ie)?;
            changes_sync(&txn, &user, kind, since, max)
        })
        .await
        .map_err(|e| ChangesError::Store(ie(e)))?
    }

    pub async fn email_places(
        &self,
        user: &str,
        emails: Vec<u64>,
    ) -> Result<Vec<Vec<(MailboxId, Uid, u64)>>> {
        let user = user.to_string();
        self.read_txn(move |txn| emails.iter().map(|e| places_sync(txn, &user, *e)).collect())
            .await
    }

    pub async fn thread_emails(&self, user: &str, threads: Vec<u64>) -> Result<Vec<Vec<u64>>> {
        let user = user.to_string();
        self.read_txn(move |txn| {
            threads
                .iter()
                .map(|t| thread_sync(txn, &user, *t))
                .collect()
        })
        .await
    }

    pub async fn all_email_places(&self, user: &str) -> Result<Vec<(u64, MailboxId, Uid, u64)>> {
        let user = user.to_string();
        self.read_txn(move |txn| all_places_sync(txn, &user)).await
    }

    /// Every copy of each email of `user`: (mailbox, meta, thread id);
    /// empty for an id that is not theirs or gone.
    pub async fn email_entries(
        &self,
        user: &str,
        emails: Vec<u64>,
    ) -> Result<Vec<Vec<(MailboxId, MessageMeta, u64)>>> {
        let u = user.to_string();
        self.read_txn(move |txn| {
            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut out = Vec::with_capacity(emails.len());
            for e in emails {
                let mut v = Vec::new();
                for (m, uid, thread) in places_sync(txn, &u, e)? {
                    if let Some(x) = msgs.get((m, uid)).map_err(ie)? {
                        v.push((m, dec::<MessageMeta>(x.value())?, thread));
                    }
                }
                out.push(v);
            }
            Ok(out)
        })
        .await
    }

    /// The bytes of an email of `user` (its first place); None when it is
    /// not theirs or gone.
    pub async fn read_email(&self, user: &str, email: u64) -> Result<Option<Vec<u8>>> {
        // The file can go between the lookup and the read (moved or
        // expunged meanwhile): look again, a few times.
        let mut tries = 3;
        loop {
            let u = user.to_string();
            let found = self
                .read_txn(move |txn| {
                    let places = places_sync(txn, &u, email)?;
                    let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                    for (m, uid, _) in places {
                        if let Some(v) = msgs.get((m, uid)).map_err(ie)? {
                            return Ok(Some((m, dec::<MessageMeta>(v.value())?)));
                        }
                    }
                    Ok(None)
                })
                .await?;
            let Some((m, meta)) = found else {
                return Ok(None);
            };
            tries -= 1;
            match self.read(m, &meta).await {
                Err(StoreError::NoSuchMailbox) if tries > 0 => continue,
                r => return r.map(Some),
            }
        }
    }

    pub async fn jmap_record(&self, user: &str, changes: Vec<(Kind, u64, Op)>) -> Result<()> {
        let user = user.to_string();
        self.submit(move |_txn, batch| {
            for (k, id, op) in changes {
                batch.journal.record(&user, k, id, op);
            }
            batch.users.insert(user.clone());
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FlagOp, Flags, NewMessage, Quota, Store};
    use std::sync::Arc;

    fn msg(subject: &str) -> NewMessage {
        NewMessage {
            data: Arc::new(
                format!(
                    "From: a@b\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\nhi\r\n"
                )
                .into_bytes(),
            ),
            flags: Flags::default(),
            internal_date: None,
        }
    }

    fn open(dir: &std::path::Path, keep: u64) -> Store {
        let s = crate::services::test_services(dir, |c| c.http.changes_kept = keep);
        s.store().clone()
    }

    #[tokio::test]
    async fn rfc8620_5_2_changes_follow_store_writes() {
        let dir = tempfile::tempdir().unwrap();
        let st = open(dir.path(), 1000);
        let u = "u@x";
        st.ensure_user(u, None).await.unwrap();
        let s0 = st.jmap_state(u, Kind::Email).await.unwrap();
        let m0 = st.jmap_state(u, Kind::Mailbox).await.unwrap();
        let p = st
            .append(u, "INBOX", msg("one"), Quota::default())
            .await
            .unwrap();
        st.append(u, "INBOX", msg("two"), Quota::default())
            .await
            .unwrap();
        let c = st.jmap_changes(u, Kind::Email, s0, 100).await.unwrap();
        assert_eq!(c.created.len(), 2);
        assert!(!c.has_more);
        assert_eq!(c.new_state, st.jmap_state(u, Kind::Email).await.unwrap());
        let mc = st.jmap_changes(u, Kind::Mailbox, m0, 100).await.unwrap();
        assert_eq!(mc.updated, vec![p.mailbox]);
        assert!(mc.counts_only);
        let e1 = st.email_ids(p.mailbox, vec![p.uid]).await.unwrap()[0];
        assert_eq!(st.email_places(u, vec![e1]).await.unwrap()[0].len(), 1);
        assert!(st.email_places("other@x", vec![e1]).await.unwrap()[0].is_empty());
        // maxChanges: one at a time, then the rest.
        let c = st.jmap_changes(u, Kind::Email, s0, 1).await.unwrap();
        assert_eq!(c.created.len(), 1);
        assert!(c.has_more);
        let c2 = st
            .jmap_changes(u, Kind::Email, c.new_state, 1)
            .await
            .unwrap();
        assert_eq!(c2.created.len(), 1);
        assert!(!c2.has_more);
        // Flags (an IMAP STORE): updated. Copy: updated, same id.
        let s1 = st.jmap_state(u, Kind::Email).await.unwrap();
        st.store_flags(
            p.mailbox,
            vec![p.uid],
            FlagOp::Add,
            Flags::from_names(&["\\Seen"]),
            None,
        )
        .await
        .unwrap();
        st.copy(p.mailbox, vec![p.uid], u, "Trash", false, Quota::default())
            .await
            .unwrap();
        let c = st.jmap_changes(u, Kind::Email, s1, 100).await.unwrap();
        assert_eq!(
            (c.created.len(), c.updated.clone(), c.destroyed.len()),
            (0, vec![e1], 0)
        );
        assert_eq!(st.email_places(u, vec![e1]).await.unwrap()[0].len(), 2);
        let entries = st.email_entries(u, vec![e1]).await.unwrap();
        assert_eq!(entries[0].len(), 2);
        assert!(entries[0].iter().all(|(_, m, _)| m.flags.has(Flags::SEEN)));
        // Expunge one copy: updated; the other: destroyed, with its thread.
        let s2 = st.jmap_state(u, Kind::Email).await.unwrap();
        let t2 = st.jmap_state(u, Kind::Thread).await.unwrap();
        st.store_flags(
            p.mailbox,
            vec![p.uid],
            FlagOp::Add,
            Flags::from_names(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
        st.expunge(p.mailbox, None).await.unwrap();
        st.delete_mailbox(u, "Trash").await.unwrap();
        let c = st.jmap_changes(u, Kind::Email, s2, 100).await.unwrap();
        assert_eq!(c.destroyed, vec![e1]);
        let t = st.jmap_changes(u, Kind::Thread, t2, 100).await.unwrap();
        assert_eq!(t.destroyed.len(), 1);
        let mc = st.jmap_changes(u, Kind::Mailbox, m0, 100).await.unwrap();
        assert_eq!(mc.destroyed.len(), 1);
        assert!(st.email_places(u, vec![e1]).await.unwrap()[0].is_empty());
    }

    #[tokio::test]
    async fn journal_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let st = open(dir.path(), 5);
        let u = "u@x";
        st.ensure_user(u, None).await.unwrap();
        let s0 = st.jmap_state(u, Kind::Email).await.unwrap();
        for i in 0..4 {
            st.append(u, "INBOX", msg(&format!("m{i}")), Quota::default())
                .await
                .unwrap();
        }
        assert!(matches!(
            st.jmap_changes(u, Kind::Email, s0, 100).await,
            Err(ChangesError::CannotCalculate)
        ));
        let now = st.jmap_state(u, Kind::Email).await.unwrap();
        assert!(st
            .jmap_changes(u, Kind::Email, now, 100)
            .await
            .unwrap()
            .created
            .is_empty());
        assert!(matches!(
            st.jmap_changes(u, Kind::Email, now + 100, 100).await,
            Err(ChangesError::CannotCalculate)
        ));
    }

    #[test]
    fn pending_collapses_per_object() {
        let mut p = Pending::default();
        p.record("u", Kind::Email, 1, Op::Created);
        p.record("u", Kind::Email, 1, Op::Updated);
        p.record("u", Kind::Email, 2, Op::Created);
        p.record("u", Kind::Email, 2, Op::Destroyed);
        p.record("u", Kind::Email, 3, Op::Destroyed);
        p.record("u", Kind::Email, 3, Op::Created);
        assert_eq!(p.ops[&("u".into(), Kind::Email, 1)], Some(Op::Created));
        assert_eq!(p.ops[&("u".into(), Kind::Email, 2)], None);
        assert_eq!(p.ops[&("u".into(), Kind::Email, 3)], Some(Op::Updated));
    }
}
