//! Per-partition totals for `msgd store stats` and the metrics (issue 14):
//! users, messages and bytes, from each user's usage record (the figures
//! quotas are checked against), in one read transaction over the users
//! table: no message is read.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::{dec, ie, Inner, UserRec, USERS};
use crate::store::Result;

/// What one partition holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionTotals {
    pub users: u64,
    pub messages: u64,
    pub bytes: u64,
}

impl Inner {
    /// Totals of every configured partition (empty ones included).
    pub fn partition_totals(&self) -> Result<BTreeMap<String, PartitionTotals>> {
        let mut out: BTreeMap<String, PartitionTotals> = self
            .partitions
            .keys()
            .map(|p| (p.clone(), PartitionTotals::default()))
            .collect();
        let txn = self.db.begin_read().map_err(ie)?;
        let users = txn.open_table(USERS).map_err(ie)?;
        for row in users.iter().map_err(ie)? {
            let (_, v) = row.map_err(ie)?;
            let rec: UserRec = dec(v.value())?;
            let t = out.entry(rec.partition).or_default();
            t.users += 1;
            t.messages += rec.usage.messages;
            t.bytes += rec.usage.bytes;
        }
        Ok(out)
    }
}
