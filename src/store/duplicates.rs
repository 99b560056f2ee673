//! Duplicate delivery suppression (Cyrus's duplicate delivery database):
//! a durable, bounded record of the delivery ids each user's mailbox has
//! recently taken, so a delivery repeated after a crash (the sender never
//! saw our 250, or died before it recorded it) is answered "delivered"
//! without a second copy.
//!
//! Invariants:
//! - The id is recorded in the same write transaction as the append it
//!   belongs to (`Inner::append_impl`): "stored" and "recorded" become
//!   durable in one commit, so there is no moment where one is on disk
//!   without the other.
//! - An id is looked up inside that transaction too (the single writer
//!   serialises it against a concurrent delivery of the same id).
//! - Bounded per user by age (`store.duplicate_window` seconds: an older
//!   record no longer counts and is pruned) and by count
//!   (`store.duplicate_max`: the oldest go first). Pruning is done a few
//!   rows at a time by each recording append, so the cost per delivery is
//!   bounded; a user who gets no more mail keeps at most `duplicate_max`
//!   rows.
//!
//! Tables: `delivery_ids` (user, id) -> unix seconds recorded;
//! `delivery_ids_by_time` (user, seconds, id) for pruning oldest first;
//! `delivery_ids_count` user -> rows.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::*;

/// (user, delivery id) -> when recorded (unix seconds).
const IDS: TableDefinition<(&str, &str), i64> = TableDefinition::new("delivery_ids");
/// (user, when, delivery id): the same rows by age.
const BY_TIME: TableDefinition<(&str, i64, &str), u8> =
    TableDefinition::new("delivery_ids_by_time");
/// user -> number of rows in `delivery_ids`.
const COUNT: TableDefinition<&str, u64> = TableDefinition::new("delivery_ids_count");

/// Rows an append prunes at most besides the count bound (expired ones).
const PRUNE_STEP: usize = 8;

/// Longest delivery id accepted (the LMTP parameter is checked against it
/// too).
pub const MAX_ID_LEN: usize = 200;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(IDS).map_err(ie)?;
    txn.open_table(BY_TIME).map_err(ie)?;
    txn.open_table(COUNT).map_err(ie)?;
    Ok(())
}

/// A delivery that must happen at most once per mailbox: its id and the
/// bounds of the record (`store.duplicate_window`, `store.duplicate_max`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Once {
    /// Stable over every retry of the same delivery (docs/delivery.md).
    pub id: String,
    /// Seconds a record counts.
    pub window: u64,
    /// Most records kept per user (0: none kept, no suppression).
    pub max: u64,
    /// Unix seconds of this delivery (now; tests set it).
    pub at: i64,
}

impl Once {
    /// A delivery now under the store's configured bounds.
    pub fn new(id: &str, store: &crate::config::StoreConfig) -> Once {
        Once {
            id: id.to_string(),
            window: store.duplicate_window,
            max: store.duplicate_max,
            at: now(),
        }
    }

    /// The oldest record time that still counts.
    fn horizon(&self) -> i64 {
        self.at
            .saturating_sub(i64::try_from(self.window).unwrap_or(i64::MAX))
    }
}

/// `user` has taken delivery `once.id` within the window.
pub(super) fn seen<T>(ids: &T, user: &str, once: &Once) -> Result<bool>
where
    T: ReadableTable<(&'static str, &'static str), i64>,
{
    if once.max == 0 {
        return Ok(false);
    }
    Ok(match ids.get((user, once.id.as_str())).map_err(ie)? {
        Some(t) => t.value() > once.horizon(),
        None => false,
    })
}

/// `seen`, in a read transaction (the cheap check before the message file
/// is written).
pub(super) fn seen_read(txn: &ReadTransaction, user: &str, once: &Once) -> Result<bool> {
    let ids = txn.open_table(IDS).map_err(ie)?;
    seen(&ids, user, once)
}

/// `seen`, inside the append's write transaction.
pub(super) fn seen_write(txn: &WriteTransaction, user: &str, once: &Once) -> Result<bool> {
    let ids = txn.open_table(IDS).map_err(ie)?;
    seen(&ids, user, once)
}

/// Records `once.id` for `user` in the append's transaction and prunes
/// what the bounds no longer keep.
pub(super) fn record(txn: &WriteTransaction, user: &str, once: &Once) -> Result<()> {
    if once.max == 0 {
        return Ok(());
    }
    let mut ids = txn.open_table(IDS).map_err(ie)?;
    let mut by_time = txn.open_table(BY_TIME).map_err(ie)?;
    let mut count = txn.open_table(COUNT).map_err(ie)?;
    let mut n = count.get(user).map_err(ie)?.map_or(0, |v| v.value());
    // A stale record of the same id (outside the window) is replaced.
    let old = ids
        .insert((user, once.id.as_str()), once.at)
        .map_err(ie)?
        .map(|v| v.value());
    match old {
        Some(t) => {
            by_time.remove((user, t, once.id.as_str())).map_err(ie)?;
        }
        None => n += 1,
    }
    by_time
        .insert((user, once.at, once.id.as_str()), 0)
        .map_err(ie)?;
    // Oldest first: everything past the count bound, and a few expired.
    let horizon = once.horizon();
    let mut doomed: Vec<(i64, String)> = Vec::new();
    for row in by_time
        .range((user, i64::MIN, "")..=(user, i64::MAX, ""))
        .map_err(ie)?
    {
        let (k, _) = row.map_err(ie)?;
        let (_, t, id) = k.value();
        let over = n.saturating_sub(doomed.len() as u64) > once.max;
        let expired = t <= horizon && doomed.len() < PRUNE_STEP;
        if !(over || expired) || id == once.id {
            break;
        }
        doomed.push((t, id.to_string()));
    }
    for (t, id) in &doomed {
        by_time.remove((user, *t, id.as_str())).map_err(ie)?;
        ids.remove((user, id.as_str())).map_err(ie)?;
    }
    n = n.saturating_sub(doomed.len() as u64);
    count.insert(user, n).map_err(ie)?;
    Ok(())
}

/// Rows recorded for `user` (tests, tools).
pub(super) fn count(txn: &ReadTransaction, user: &str) -> Result<u64> {
    let count = txn.open_table(COUNT).map_err(ie)?;
    Ok(count.get(user).map_err(ie)?.map_or(0, |v| v.value()))
}
