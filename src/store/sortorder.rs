//! JMAP `Mailbox.sortOrder` (RFC 8621 2), kept per mailbox: table
//! `mailbox_sort_order` mailbox id -> the value a client set. A mailbox
//! without a row has the default (INBOX 1, others 10, decided by the
//! caller). Setting it records a Mailbox change in the JMAP journal in the
//! same transaction, so `Mailbox/changes` reports it. Mailbox ids are
//! never reused: the row of a deleted mailbox is an orphan nobody reads
//! (a few bytes per deleted mailbox that had a sortOrder set).

use redb::{TableDefinition, WriteTransaction};

use super::*;

/// Mailbox id -> sortOrder.
const SORT: TableDefinition<u64, u32> = TableDefinition::new("mailbox_sort_order");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(SORT).map_err(ie)?;
    Ok(())
}

impl Inner {
    /// Sets `user`'s mailbox's sortOrder (`None`: back to the default).
    pub async fn set_sort_order(
        &self,
        user: &str,
        mailbox: MailboxId,
        order: Option<u32>,
    ) -> Result<()> {
        let user = user.to_string();
        self.submit(move |txn, batch| {
            get_mailbox(txn, mailbox)?;
            let mut t = txn.open_table(SORT).map_err(ie)?;
            match order {
                Some(o) => {
                    t.insert(mailbox, o).map_err(ie)?;
                }
                None => {
                    t.remove(mailbox).map_err(ie)?;
                }
            }
            batch
                .journal
                .record(&user, journal::Kind::Mailbox, mailbox, journal::Op::Updated);
            batch.users.insert(user.clone());
            Ok(())
        })
        .await
    }

    /// The sortOrder set for each of `mailboxes` that has one.
    pub async fn sort_orders(&self, mailboxes: Vec<MailboxId>) -> Result<HashMap<MailboxId, u32>> {
        self.read_txn(move |txn| {
            let t = txn.open_table(SORT).map_err(ie)?;
            let mut out = HashMap::new();
            for id in mailboxes {
                if let Some(v) = t.get(id).map_err(ie)? {
                    out.insert(id, v.value());
                }
            }
            Ok(out)
        })
        .await
    }
}
