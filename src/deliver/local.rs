//! The store of this process: final delivery into INBOX.
//!
//! The only place that writes Return-Path (RFC 5321 4.4: "When the
//! delivery SMTP server makes the final delivery of a message, it inserts
//! a return-path line at the beginning of the mail data"): the field is
//! built from the envelope sender, and Return-Path fields already in the
//! header section are removed first (4.4 allows it; a relay that should
//! not have added one, or a forged one, never shows). The effective quota
//! (`deliver::quota`) and the over-quota policy (`store.over_quota`) are
//! applied here too.
//!
//! Each copy is durable when `deliver` returns it (the store's append
//! returns after fsync and index commit); `take_back` expunges one when
//! the transaction is aborted.
//!
//! A target with a `delivery_id` (the queue runner's, or an mta-in's over
//! LMTP) is appended with `Store::append_once`: a mailbox that already
//! took that id gets no second copy and the delivery counts as done
//! (duplicate delivery suppression, docs/delivery.md).

use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{error, warn};

use super::client::quote_address;
use super::{Outcome, Target};
use crate::config::{Config, OverQuota};
use crate::store::{FlagOp, Flags, NewMessage, Once, Placed, SpecialUse, Store, StoreError};

/// Appends the message to every target's INBOX concurrently (the store
/// group-commits). One result per target, in order: `Ok(Some)` a new
/// copy, `Ok(None)` a repeat of a delivery the mailbox already took
/// (the target's `delivery_id`, duplicate delivery suppression: nothing
/// stored, and the caller answers it as delivered).
pub async fn deliver(
    store: &Store,
    config: &Config,
    id: &str,
    sender: &str,
    targets: &[&Target],
    data: Arc<Vec<u8>>,
) -> Vec<Result<Option<Placed>, Outcome>> {
    deliver_filtered(store, config, None, id, sender, targets, data, false).await
}

/// `deliver` with the users' Sieve scripts (`crate::sieve`): each target's
/// active script decides the mailboxes and flags of its copies, a
/// rejection (550 5.7.1 with the reason: over LMTP at end of data, else a
/// bounce from the queue), and messages to send (redirect, vacation). A
/// discarded copy counts as delivered (`Ok(None)`: nothing to take back);
/// with several copies the first is the one `take_back` removes.
/// With `junk` (DMARC quarantine, issue 16) every copy goes to the
/// target's `\Junk` mailbox (the mailbox with that special use, else one
/// named "Junk" created with it) and no script runs: the quarantine wins.
#[allow(clippy::too_many_arguments)]
pub async fn deliver_filtered(
    store: &Store,
    config: &Config,
    sieve: Option<&Arc<crate::sieve::Filter>>,
    id: &str,
    sender: &str,
    targets: &[&Target],
    data: Arc<Vec<u8>>,
    junk: bool,
) -> Vec<Result<Option<Placed>, Outcome>> {
    let data = Arc::new(with_return_path(sender, data));
    let quota = |t: &Target| super::account_quota(t.quota, t.msg_quota, &config.store);
    let mut out: Vec<Result<Option<Placed>, Outcome>> = targets
        .iter()
        .map(|_| Err(Outcome::Temporary(LOCAL_ERROR.into())))
        .collect();
    let mut done = |i: usize, r: Result<Option<Placed>, SieveOr>| {
        let r = r.map_err(SieveOr::into_parts);
        let rcpt = targets.get(i).map_or("?", |t| t.address.as_str());
        crate::metrics::messages("delivered", "store", matches!(r, Ok(Some(_))) as u64);
        if let Ok(None) = r {
            tracing::info!(
                id,
                rcpt,
                "repeated delivery id; already in the mailbox, not stored again"
            );
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = r.map_err(|e| match e {
                Ok(reason) => Outcome::Permanent(format!("550 5.7.1 {reason}")),
                Err(e) => outcome_of(config.store.over_quota, id, rcpt, e),
            });
        }
    };
    // One recipient (the usual LMTP transaction) runs here, without a task
    // of its own; several are appended concurrently (the store
    // group-commits them).
    if let [t] = targets {
        let r = one_copy(store, &config.store, sieve, t, sender, data, quota(t), junk).await;
        done(0, r);
    } else {
        let mut set = JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let (store, store_cfg, sieve) = (store.clone(), config.store.clone(), sieve.cloned());
            let (t, sender, data, quota) =
                ((*t).clone(), sender.to_string(), data.clone(), quota(t));
            set.spawn(async move {
                let r = one_copy(
                    &store,
                    &store_cfg,
                    sieve.as_ref(),
                    &t,
                    &sender,
                    data,
                    quota,
                    junk,
                );
                (i, r.await)
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => done(i, r),
                Err(e) => error!(id, error = %e, "delivery task failed"),
            }
        }
    }
    out
}

/// One target's copies: its active Sieve script (unless `junk`) decides
/// the mailboxes, else INBOX (or the `\Junk` mailbox).
#[allow(clippy::too_many_arguments)]
async fn one_copy(
    store: &Store,
    store_cfg: &crate::config::StoreConfig,
    sieve: Option<&Arc<crate::sieve::Filter>>,
    t: &Target,
    sender: &str,
    data: Arc<Vec<u8>>,
    quota: crate::store::Quota,
    junk: bool,
) -> Result<Option<Placed>, SieveOr> {
    // The user (created if new) and its active script, in one read.
    let active = store
        .delivery_user(&t.address, t.partition.as_deref())
        .await?;
    let plan = match sieve {
        Some(f) if !junk => {
            f.plan_for(store, active, &t.address, sender, &t.address, &data)
                .await?
        }
        _ => None,
    };
    let Some(plan) = plan else {
        let mailbox = if junk {
            junk_mailbox(store, &t.address).await?
        } else {
            "INBOX".to_string()
        };
        let msg = NewMessage {
            data,
            flags: Flags::default(),
            internal_date: None,
        };
        return append_to(store, t, &mailbox, msg, quota, store_cfg).await;
    };
    if let Some(reason) = &plan.reject {
        tracing::info!(rcpt = %t.address, "refused by the user's Sieve script");
        return Err(Rejected(reason.clone()).into());
    }
    let mut first = None;
    for c in &plan.copies {
        let mailbox = filed_mailbox(store, &t.address, c).await;
        let msg = NewMessage {
            data: data.clone(),
            flags: sieve_flags(&c.flags),
            internal_date: None,
        };
        let placed = append_to(store, t, &mailbox, msg, quota, store_cfg).await?;
        if first.is_none() {
            first = placed;
        }
    }
    if let Some(f) = sieve {
        f.send(store, &t.address, sender, data.clone(), plan.outgoing);
    }
    Ok(first)
}

/// The name of `user`'s `\Junk` mailbox (RFC 6154), created as "Junk"
/// when the user has none (a concurrent creation is fine).
async fn junk_mailbox(store: &Store, user: &str) -> Result<String, StoreError> {
    let has = |list: &[crate::store::MailboxInfo]| {
        list.iter()
            .find(|m| m.special_use == Some(SpecialUse::Junk))
            .map(|m| m.name.clone())
    };
    if let Some(name) = has(&store.list(user).await?) {
        return Ok(name);
    }
    match store
        .create_mailbox(user, "Junk", Some(SpecialUse::Junk))
        .await
    {
        Ok(info) => Ok(info.name),
        // "Junk" exists without the special use, or was just created.
        Err(StoreError::MailboxExists) => {
            Ok(has(&store.list(user).await?).unwrap_or_else(|| "Junk".into()))
        }
        Err(e) => Err(e),
    }
}

/// A rejection by the user's script (its reason).
struct Rejected(String);

/// A store error or a Sieve rejection.
enum SieveOr {
    Store(StoreError),
    Rejected(Rejected),
}

impl From<StoreError> for SieveOr {
    fn from(e: StoreError) -> Self {
        SieveOr::Store(e)
    }
}

impl From<Rejected> for SieveOr {
    fn from(r: Rejected) -> Self {
        SieveOr::Rejected(r)
    }
}

impl SieveOr {
    /// `Ok(reason)` for a rejection, `Err` for a store error.
    fn into_parts(self) -> Result<String, StoreError> {
        match self {
            SieveOr::Rejected(Rejected(r)) => Ok(r),
            SieveOr::Store(e) => Err(e),
        }
    }
}

/// One copy into `mailbox`, once per delivery id when the target has one.
async fn append_to(
    store: &Store,
    t: &Target,
    mailbox: &str,
    msg: NewMessage,
    quota: crate::store::Quota,
    store_cfg: &crate::config::StoreConfig,
) -> Result<Option<Placed>, SieveOr> {
    let r = match &t.delivery_id {
        Some(did) => {
            let once = Once::new(did, store_cfg);
            store
                .append_once(&t.address, mailbox, msg, quota, once)
                .await
        }
        None => store
            .append(&t.address, mailbox, msg, quota)
            .await
            .map(Some),
    };
    Ok(r?)
}

/// The mailbox a Sieve copy goes to: the named one if it exists or
/// `:create` makes it; else INBOX (RFC 5228 4.1: a failed fileinto must
/// not lose the message).
async fn filed_mailbox(store: &Store, user: &str, c: &crate::sieve::Copy) -> String {
    if c.mailbox.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    if store.status(user, &c.mailbox).await.is_ok() {
        return c.mailbox.clone();
    }
    if c.create {
        match store.create_mailbox(user, &c.mailbox, None).await {
            Ok(_) | Err(StoreError::MailboxExists) => return c.mailbox.clone(),
            Err(e) => warn!(rcpt = user, error = %e, "fileinto :create failed; INBOX"),
        }
    }
    "INBOX".into()
}

/// Sieve flag names (RFC 5232) as stored flags: system flags and keywords
/// that are IMAP atoms; anything else is dropped.
fn sieve_flags(names: &[String]) -> Flags {
    let ok = |n: &&String| {
        !n.is_empty()
            && n.len() <= 64
            && n.trim_start_matches('\\')
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"]\\".contains(&b))
    };
    let names: Vec<&String> = names.iter().filter(ok).collect();
    Flags::from_names(&names)
}

/// Removes a copy `deliver` made (the transaction was aborted). A
/// failure is logged: the copy stays, a duplicate at worst.
pub async fn take_back(store: &Store, id: &str, user: &str, placed: Placed) {
    let deleted = Flags {
        bits: Flags::DELETED,
        keywords: Vec::new(),
    };
    let uids = vec![placed.uid];
    let r = async {
        store
            .store_flags(placed.mailbox, uids.clone(), FlagOp::Add, deleted, None)
            .await?;
        store.expunge(placed.mailbox, Some(uids)).await
    };
    match r.await {
        Ok(_) => tracing::info!(id, rcpt = user, "delivery aborted; copy removed"),
        Err(e) => warn!(id, rcpt = user, error = %e, "cannot remove an aborted copy"),
    }
}

/// The Return-Path field of final delivery (RFC 5321 4.4).
pub fn return_path(sender: &str) -> String {
    format!("Return-Path: <{}>\r\n", quote_address(sender))
}

/// `data` with exactly one Return-Path, first: ours, from `sender`. A
/// buffer nobody else holds is changed in place (the SMTP server reserves
/// room in front for the field, so this is a move, not a second copy of
/// the message); otherwise the message is copied.
pub fn with_return_path(sender: &str, data: Arc<Vec<u8>>) -> Vec<u8> {
    let field = return_path(sender);
    match Arc::try_unwrap(data) {
        Ok(mut v) if !header_has_return_path(&v) => {
            v.splice(0..0, field.bytes());
            v
        }
        Ok(v) => copied(&field, &v),
        Err(shared) => copied(&field, &shared),
    }
}

/// Room the SMTP server leaves in front of a message for the Return-Path
/// field (an address within the command line limit fits).
pub const RETURN_PATH_ROOM: usize = 1100;

fn copied(field: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len() + data.len());
    out.extend_from_slice(field.as_bytes());
    strip_return_path(data, &mut out);
    out
}

/// The header section of `data` has a Return-Path field.
fn header_has_return_path(data: &[u8]) -> bool {
    header_lines(data).any(starts_return_path)
}

/// The lines of the header section (up to the empty line).
fn header_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
        .take_while(|line| *line != b"\r\n" && *line != b"\n")
}

fn starts_return_path(line: &[u8]) -> bool {
    const NAME: &[u8] = b"return-path:";
    line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME)
}

/// Copies `data` into `out` without the Return-Path fields (and their
/// continuation lines) of its header section.
fn strip_return_path(data: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    let mut skipping = false;
    while i < data.len() {
        let end = data[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| i + p + 1);
        let line = &data[i..end];
        if line == b"\r\n" || line == b"\n" {
            // End of the header section: the body is copied as it is.
            out.extend_from_slice(&data[i..]);
            return;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            skipping = starts_return_path(line);
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        i = end;
    }
}

/// The outcome of a store error; `policy` decides whether a full mailbox
/// is temporary or permanent.
pub fn outcome_of(policy: OverQuota, id: &str, rcpt: &str, e: StoreError) -> Outcome {
    match e {
        StoreError::OverQuota => {
            warn!(id, rcpt, "delivery refused: over quota");
            Outcome::OverQuota {
                permanent: policy == OverQuota::Permanent,
            }
        }
        StoreError::DiskFull => {
            warn!(id, rcpt, "delivery refused: disk full");
            Outcome::DiskFull
        }
        StoreError::NoSuchMailbox => Outcome::Permanent("550 5.1.1 no such mailbox".into()),
        // Past RCPT before the hold of `msgd user move`: the MTA retries
        // and then reaches the new store (as LMTP's RCPT answers).
        StoreError::Moving => {
            warn!(
                id,
                rcpt, "delivery deferred: the user is being moved between stores"
            );
            Outcome::Temporary("451 4.2.1 mailbox is being moved, try again later".into())
        }
        other => {
            error!(id, rcpt, error = %other, "delivery failed");
            Outcome::Temporary(LOCAL_ERROR.into())
        }
    }
}

const LOCAL_ERROR: &str = "451 4.3.0 local error in processing";

#[cfg(test)]
mod moving_tests {
    use super::*;

    /// Issue 14: a delivery reaching the store after the user's hold is
    /// deferred like LMTP's RCPT answer (the MTA retries, then reaches
    /// the new store), never lost nor bounced.
    #[test]
    fn deliveries_after_the_hold_are_deferred_451_4_2_1() {
        match outcome_of(OverQuota::Temporary, "id", "u@x", StoreError::Moving) {
            Outcome::Temporary(line) => assert!(line.starts_with("451 4.2.1"), "{line}"),
            other => panic!("{other:?}"),
        }
    }
}
