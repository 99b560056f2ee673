//! Annotations of RFC 5464 (METADATA): server and mailbox entries, shared
//! and private, in the mboxlist database.
//!
//! Table `metadata`: (mailbox id, who, entry) -> value. Mailbox id 0 is
//! the server (real mailbox ids start at 1). `who` is "" for `/shared`
//! entries and the user's name for `/private` ones, so each user has its
//! own private entries on a mailbox shared with it. Entry names arrive
//! checked and lowercased from the IMAP layer (entry names are
//! case-insensitive, RFC 5464 3.2).
//!
//! Table `metadata_usage`: user -> (entries, bytes) that user is charged
//! for: its private entries anywhere and the shared entries of mailboxes
//! it owns (whoever set them). A SETMETADATA is checked against the
//! caller's limits inside the writer's transaction, all its entries or
//! none (RFC 5464 4.3). Entries are keyed by mailbox id, so RENAME keeps
//! them; DELETE drops them and their charge (`on_delete_mailbox`).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::*;

/// (mailbox id or 0 for the server, "" or user, entry) -> value.
const METADATA: TableDefinition<(u64, &str, &str), &[u8]> = TableDefinition::new("metadata");
/// user -> (entries, bytes) charged to that user.
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("metadata_usage");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(METADATA).map_err(ie)?;
    txn.open_table(USAGE).map_err(ie)?;
    Ok(())
}

/// Caps of one user's annotations (see docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLimits {
    /// Largest value, in bytes.
    pub max_value: usize,
    /// Most entries charged to one user.
    pub max_entries: u64,
    /// Most bytes (names and values) charged to one user.
    pub max_bytes: u64,
}

/// Why a SETMETADATA changed nothing (RFC 5464 4.3 response codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaRefusal {
    /// `[METADATA MAXSIZE n]`: a value is larger than n.
    MaxSize(usize),
    /// `[METADATA TOOMANY]`: the user's entries or bytes would pass a cap.
    TooMany,
}

/// How deep below a requested entry GETMETADATA goes (RFC 5464 4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Zero,
    One,
    Infinity,
}

fn who<'a>(entry: &str, user: &'a str) -> &'a str {
    if entry.starts_with("/private") {
        user
    } else {
        ""
    }
}

fn size(entry: &str, value: &[u8]) -> u64 {
    (entry.len() + value.len()) as u64
}

fn charge(txn: &WriteTransaction, user: &str, entries: i64, bytes: i64) -> Result<(u64, u64)> {
    let mut t = txn.open_table(USAGE).map_err(ie)?;
    let (n, b) = t.get(user).map_err(ie)?.map_or((0, 0), |v| v.value());
    let n = (n as i64).saturating_add(entries).max(0) as u64;
    let b = (b as i64).saturating_add(bytes).max(0) as u64;
    if n == 0 && b == 0 {
        t.remove(user).map_err(ie)?;
    } else {
        t.insert(user, (n, b)).map_err(ie)?;
    }
    Ok((n, b))
}

/// A mailbox of `owner` is deleted: its entries and their charges go.
pub(super) fn on_delete_mailbox(
    txn: &WriteTransaction,
    mailbox: MailboxId,
    owner: &str,
) -> Result<()> {
    let rows: Vec<(String, String, u64)> = {
        let t = txn.open_table(METADATA).map_err(ie)?;
        let mut rows = Vec::new();
        for item in t.range((mailbox, "", "")..).map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            let (m, w, e) = k.value();
            if m != mailbox {
                break;
            }
            rows.push((w.to_string(), e.to_string(), size(e, v.value())));
        }
        rows
    };
    let mut t = txn.open_table(METADATA).map_err(ie)?;
    for (w, e, _) in &rows {
        t.remove((mailbox, w.as_str(), e.as_str())).map_err(ie)?;
    }
    drop(t);
    for (w, _, bytes) in rows {
        let payer = if w.is_empty() { owner.to_string() } else { w };
        charge(txn, &payer, -1, -(bytes as i64))?;
    }
    Ok(())
}

impl Inner {
    /// Entries of a mailbox (0: the server) as seen by `user`: each of
    /// `entries` (None: no such entry) and, with a depth, the entries below
    /// it, in name order.
    pub async fn get_metadata(
        &self,
        mailbox: MailboxId,
        user: &str,
        entries: Vec<String>,
        depth: Depth,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let user = user.to_string();
        self.read_txn(move |txn| {
            let t = txn.open_table(METADATA).map_err(ie)?;
            let mut out = Vec::new();
            for entry in &entries {
                let w = who(entry, &user);
                let value = t
                    .get((mailbox, w, entry.as_str()))
                    .map_err(ie)?
                    .map(|v| v.value().to_vec());
                out.push((entry.clone(), value));
                if depth == Depth::Zero {
                    continue;
                }
                let prefix = format!("{entry}/");
                for item in t.range((mailbox, w, prefix.as_str())..).map_err(ie)? {
                    let (k, v) = item.map_err(ie)?;
                    let (m, kw, e) = k.value();
                    if m != mailbox || kw != w || !e.starts_with(&prefix) {
                        break;
                    }
                    let below = e.get(prefix.len()..).unwrap_or_default();
                    if depth == Depth::One && below.contains('/') {
                        continue;
                    }
                    out.push((e.to_string(), Some(v.value().to_vec())));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Sets (`Some`) or removes (`None`) entries of a mailbox (0: the
    /// server) for `user`; shared entries are charged to `owner`, private
    /// ones to `user`. All or nothing: a refusal changes nothing.
    pub async fn set_metadata(
        &self,
        mailbox: MailboxId,
        user: &str,
        owner: &str,
        items: Vec<(String, Option<Vec<u8>>)>,
        limits: MetaLimits,
    ) -> Result<std::result::Result<(), MetaRefusal>> {
        if items
            .iter()
            .filter_map(|(_, v)| v.as_ref())
            .any(|v| v.len() > limits.max_value)
        {
            return Ok(Err(MetaRefusal::MaxSize(limits.max_value)));
        }
        let user = user.to_string();
        let owner = owner.to_string();
        self.submit(move |txn, batch| {
            // Validate first, write after (a job that refuses has written
            // nothing: writer.rs).
            if mailbox != 0 {
                get_mailbox(txn, mailbox)?;
            }
            // Charges per payer: (entries, bytes) deltas.
            let mut deltas: HashMap<String, (i64, i64)> = HashMap::new();
            {
                let t = txn.open_table(METADATA).map_err(ie)?;
                for (entry, value) in &items {
                    let w = who(entry, &user);
                    let payer = if w.is_empty() { owner.as_str() } else { w };
                    let old = t
                        .get((mailbox, w, entry.as_str()))
                        .map_err(ie)?
                        .map(|v| size(entry, v.value()));
                    let d = deltas.entry(payer.to_string()).or_default();
                    if let Some(old) = old {
                        d.0 -= 1;
                        d.1 -= old as i64;
                    }
                    if let Some(v) = value {
                        d.0 += 1;
                        d.1 += size(entry, v) as i64;
                    }
                }
                let usage = txn.open_table(USAGE).map_err(ie)?;
                for (payer, (n, b)) in &deltas {
                    let (cn, cb) = usage
                        .get(payer.as_str())
                        .map_err(ie)?
                        .map_or((0, 0), |v| v.value());
                    let total_n = (cn as i64).saturating_add(*n);
                    let total_b = (cb as i64).saturating_add(*b);
                    let grows = *n > 0 || *b > 0;
                    if grows
                        && (total_n > limits.max_entries as i64
                            || total_b > limits.max_bytes as i64)
                    {
                        return Ok(Err(MetaRefusal::TooMany));
                    }
                }
            }
            {
                let mut t = txn.open_table(METADATA).map_err(ie)?;
                for (entry, value) in &items {
                    let w = who(entry, &user);
                    match value {
                        Some(v) => {
                            t.insert((mailbox, w, entry.as_str()), v.as_slice())
                                .map_err(ie)?;
                        }
                        None => {
                            t.remove((mailbox, w, entry.as_str())).map_err(ie)?;
                        }
                    }
                }
            }
            for (payer, (n, b)) in deltas {
                charge(txn, &payer, n, b)?;
            }
            if mailbox != 0 {
                batch.notify.entry(mailbox).or_insert(0);
            }
            Ok(Ok(()))
        })
        .await
    }
}
