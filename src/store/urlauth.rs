//! URLAUTH mailbox access keys (RFC 4467 2.1): one random key per user and
//! mailbox, made on first need (GENURLAUTH, URLFETCH) and replaced by
//! RESETKEY, which invalidates every URL signed with the old one.
//!
//! Table `urlauth_keys`: (user, mailbox id) -> 32 random bytes. The user
//! is the one whose URLs the key signs (the URL's userid), the mailbox
//! may be another user's shared one. Mailbox ids are never reused, so the
//! key of a deleted mailbox is an orphan row nobody can reach; RESETKEY
//! without a mailbox removes all of a user's rows.

use rand::RngCore;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::*;

/// (user, mailbox id) -> key.
const KEYS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("urlauth_keys");

/// Length of a key, in bytes.
pub const KEY_LEN: usize = 32;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(KEYS).map_err(ie)?;
    Ok(())
}

fn fresh() -> Vec<u8> {
    let mut k = vec![0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

impl Inner {
    /// The user's key for a mailbox, made now if it has none.
    pub async fn urlauth_key(&self, user: &str, mailbox: MailboxId) -> Result<Vec<u8>> {
        let u = user.to_string();
        let found = self
            .read_txn(move |txn| {
                let t = txn.open_table(KEYS).map_err(ie)?;
                Ok(t.get((u.as_str(), mailbox))
                    .map_err(ie)?
                    .map(|v| v.value().to_vec()))
            })
            .await?;
        if let Some(k) = found {
            return Ok(k);
        }
        let u = user.to_string();
        self.submit(move |txn, _| {
            let mut t = txn.open_table(KEYS).map_err(ie)?;
            // Another session may have made it meanwhile.
            if let Some(k) = t.get((u.as_str(), mailbox)).map_err(ie)? {
                return Ok(k.value().to_vec());
            }
            let k = fresh();
            t.insert((u.as_str(), mailbox), k.as_slice()).map_err(ie)?;
            Ok(k)
        })
        .await
    }

    /// RESETKEY: a new key for one mailbox, or no key for any (new ones
    /// are made on next need).
    pub async fn reset_urlauth_keys(&self, user: &str, mailbox: Option<MailboxId>) -> Result<()> {
        let u = user.to_string();
        self.submit(move |txn, _| {
            let mut t = txn.open_table(KEYS).map_err(ie)?;
            match mailbox {
                Some(m) => {
                    t.insert((u.as_str(), m), fresh().as_slice()).map_err(ie)?;
                }
                None => {
                    let ids: Vec<u64> = t
                        .range((u.as_str(), 0)..=(u.as_str(), u64::MAX))
                        .map_err(ie)?
                        .map(|r| r.map(|(k, _)| k.value().1))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(ie)?;
                    for id in ids {
                        t.remove((u.as_str(), id)).map_err(ie)?;
                    }
                }
            }
            Ok(())
        })
        .await
    }
}
