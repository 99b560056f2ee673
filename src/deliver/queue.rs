//! The queue of this process as a delivery target, and the queue
//! runner's way out (`Router`).
//!
//! As a target: `body` writes one durable queue file for all queued
//! recipients of the transaction (`write`); `commit` hands it to the
//! runner (`commit`), `abort` removes it (`discard`). A crash between the
//! two leaves the file on disk: it is loaded and delivered after the
//! restart (never lost; a duplicate at worst if the client retries).
//!
//! As the runner's transport: every recipient goes with its delivery id
//! (`delivery_id`: queue id, recipient index, this host), the same on
//! every retry, so a store that already took it (we crashed before
//! recording its 250) answers 250 without a second copy. Each pending
//! recipient is looked up again
//! in the directory at delivery time (a user moved to another store while
//! the message waited goes to the new one), becomes a `Target`, and the
//! whole attempt is one `Delivery` transaction in `Mode::Now`, which
//! groups the targets per destination (this store, a store by LMTP, an
//! mta-in, the smarthost, the MX hosts of a domain).

use std::sync::Arc;

use super::{Delivery, Envelope, Outcome, Recipient, Target};
use crate::directory::{DirError, Directory, Recipient as DirRecipient};
use crate::queue::{BoxFuture, Queue, Transport};
use crate::services::Services;

/// A queue file written by `body`, not yet scheduled.
pub struct Pending {
    id: String,
    envelope: Envelope,
    /// The bytes written, for the first attempt (`Queue::schedule`).
    data: Arc<Vec<u8>>,
    /// Recipients a cut-through attempt delivered (recorded in the file).
    delivered: Vec<usize>,
}

/// The queue's envelope of `targets`.
fn queued(envelope: &Envelope, targets: &[&Target]) -> Envelope {
    Envelope {
        sender: envelope.sender.clone(),
        recipients: targets
            .iter()
            .map(|t| Recipient {
                address: t.address.clone(),
                orcpt: t.orcpt.clone(),
                notify: t.notify.unwrap_or_default(),
                route: t.mail_host.clone().unwrap_or_default(),
            })
            .collect(),
        received: envelope.received,
        envid: envelope.envid.clone(),
        ret_full: envelope.ret_full,
        junk: envelope.junk,
    }
}

/// Writes one queue file for `targets` (durable on return).
pub async fn write(
    queue: &Arc<Queue>,
    id: &str,
    envelope: &Envelope,
    targets: &[&Target],
    data: Arc<Vec<u8>>,
) -> Result<Pending, Outcome> {
    let qid = queue.new_id();
    write_rest(queue, id, qid, queued(envelope, targets), data, Vec::new()).await
}

/// Cut-through (`queue.cut_through`, `Queue::deliver_now`): `targets`,
/// all mailboxes on stores, are delivered now under a new queue id;
/// `Ok(None)` when every copy was delivered (nothing written), else the
/// queue file of the message with the delivered recipients recorded, for
/// the runner to deliver the rest under the same ids. Without cut-through
/// (off, or a recipient asked for a success notice) it is `write`.
pub async fn deliver_or_write(
    queue: &Arc<Queue>,
    id: &str,
    envelope: &Envelope,
    targets: &[&Target],
    data: Arc<Vec<u8>>,
) -> Result<Option<Pending>, Outcome> {
    let env = queued(envelope, targets);
    let qid = queue.new_id();
    let delivered = match queue.deliver_now(&qid, &env, data.clone()).await {
        Some(d) if d.len() == env.recipients.len() => return Ok(None),
        Some(d) => d,
        None => Vec::new(),
    };
    write_rest(queue, id, qid, env, data, delivered)
        .await
        .map(Some)
}

/// Writes queue file `qid` and records `delivered` in it.
async fn write_rest(
    queue: &Arc<Queue>,
    id: &str,
    qid: String,
    env: Envelope,
    data: Arc<Vec<u8>>,
    mut delivered: Vec<usize>,
) -> Result<Pending, Outcome> {
    match queue.write_as(&qid, &env, data.clone()).await {
        Ok(()) => {
            if !delivered.is_empty() {
                if let Err(e) = queue.record_delivered(&qid, &delivered).await {
                    // The runner tries them again under the same delivery
                    // ids: the stores answer without a second copy.
                    tracing::warn!(queue_id = %qid, error = %e, "cannot record cut-through deliveries");
                    delivered.clear();
                }
            }
            Ok(Pending {
                id: qid,
                envelope: env,
                data,
                delivered,
            })
        }
        Err(e) => {
            // Copies a store took stay (the client's retry may double
            // them): only a failing queue disk gets here.
            tracing::error!(id, queue_id = %qid, delivered = delivered.len(), error = %e, "cannot queue the message");
            Err(Outcome::Temporary(
                "451 4.3.0 local error in processing".into(),
            ))
        }
    }
}

/// Schedules a written file; returns its queue id.
pub fn commit(queue: &Queue, p: Pending) -> String {
    queue.schedule_rest(&p.id, p.envelope, p.data, &p.delivered);
    p.id
}

/// Removes a written file that was never scheduled.
pub async fn discard(queue: &Queue, p: Pending) {
    match queue.discard(&p.id).await {
        Ok(()) => tracing::info!(queue_id = %p.id, "delivery aborted; queue file removed"),
        Err(e) => {
            // It will be delivered after the next restart: a duplicate
            // at worst, never a loss.
            tracing::warn!(queue_id = %p.id, error = %e, "cannot remove an aborted queue file")
        }
    }
}

/// The queue runner's transport: every attempt is one `Mode::Now`
/// transaction.
pub struct Router {
    directory: Arc<Directory>,
    delivery: Delivery,
    /// This host's name, in every delivery id (queue ids of two mta-ins
    /// feeding one store must not meet).
    hostname: String,
}

impl Router {
    pub fn new(services: &Services) -> Arc<Router> {
        Arc::new(Router {
            directory: services.directory.clone(),
            delivery: Delivery::for_queue(services),
            hostname: services.config.server.hostname.clone(),
        })
    }

    /// The target of queued recipient `r`, or why there is none.
    async fn target(&self, r: &Recipient) -> Result<Target, Outcome> {
        let addr = &r.address;
        let with_dsn = |t: Target| Target {
            notify: Some(r.notify),
            orcpt: r.orcpt.clone(),
            ..t
        };
        let domain = crate::directory::domain_of(addr)
            .unwrap_or("")
            .to_lowercase();
        match self.directory.domain_status(&domain).await {
            Ok(None | Some(crate::directory::EntryStatus::Deleted)) => {
                return Ok(with_dsn(Target::remote(addr.clone())))
            }
            // An inactive domain's mail waits in the queue.
            Ok(Some(crate::directory::EntryStatus::Inactive)) => {
                return Err(Outcome::Temporary(
                    "450 4.2.1 mailbox temporarily unavailable".into(),
                ))
            }
            Ok(Some(crate::directory::EntryStatus::Active)) => {}
            Err(DirError::Temporary(e)) => {
                tracing::warn!(error = %e, "directory unavailable during queue delivery");
                return Err(Outcome::Temporary(DIRECTORY_DOWN.into()));
            }
        }
        let config = &self.delivery.config;
        if matches!(config.mta.local_via, crate::config::LocalVia::Smtp(_)) {
            // The mta-in resolves aliases and users itself.
            return Ok(with_dsn(Target::mailbox(addr.clone())));
        }
        match self.directory.lookup(addr).await {
            Ok(Some(DirRecipient::User(a)))
                if a.active
                    || (a.deleted
                        && config.provision.deleted_mail == crate::config::DeletedMail::Keep) =>
            {
                Ok(with_dsn(Target {
                    address: a.address,
                    partition: a.partition,
                    quota: a.quota,
                    msg_quota: a.msg_quota,
                    mail_host: a.mail_host,
                    ..Target::mailbox(String::new())
                }))
            }
            Ok(Some(DirRecipient::User(a))) if a.deleted => {
                Err(Outcome::Permanent("550 5.1.1 no such user here".into()))
            }
            Ok(Some(DirRecipient::User(_))) => {
                Err(Outcome::Permanent("550 5.2.1 mailbox disabled".into()))
            }
            Ok(Some(DirRecipient::List(_))) | Ok(None) => {
                Err(Outcome::Permanent("550 5.1.1 no such user here".into()))
            }
            Err(DirError::Temporary(e)) => {
                tracing::warn!(error = %e, "directory unavailable during queue delivery");
                Err(Outcome::Temporary(DIRECTORY_DOWN.into()))
            }
        }
    }
}

impl Transport for Router {
    fn deliver<'a>(
        &'a self,
        id: &'a str,
        env: &'a Envelope,
        rcpts: Vec<usize>,
        data: Arc<Vec<u8>>,
    ) -> BoxFuture<'a, Vec<(usize, Outcome)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut tx = self.delivery.start(
                id,
                Envelope {
                    recipients: Vec::new(),
                    ..env.clone()
                },
            );
            let mut sent = Vec::new();
            for i in rcpts {
                let Some(r) = env.recipients.get(i) else {
                    continue;
                };
                match self.target(r).await {
                    Ok(t) => {
                        tx.add_rcpt(Target {
                            delivery_id: Some(delivery_id(id, i, &self.hostname)),
                            ..t
                        });
                        sent.push(i);
                    }
                    Err(o) => out.push((i, o)),
                }
            }
            if !sent.is_empty() {
                let outcomes = tx.body(data).await;
                out.extend(sent.into_iter().zip(outcomes));
            }
            // The queue records every outcome per recipient: what was
            // accepted stays accepted.
            tx.commit().await;
            out
        })
    }
}

/// The delivery id of recipient `rcpt` of queue entry `queue_id` queued
/// on `host`: `<queue id>.<index>@<host>`, the same on every retry of the
/// entry (duplicate delivery suppression; docs/delivery.md). Only
/// `[A-Za-z0-9.@_-]`, as the LMTP server accepts it, and at most
/// `store::MAX_DELIVERY_ID_LEN` characters.
pub fn delivery_id(queue_id: &str, rcpt: usize, host: &str) -> String {
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    let mut id = format!("{queue_id}.{rcpt}@{host}");
    id.truncate(crate::store::MAX_DELIVERY_ID_LEN);
    id
}

/// Temporary failure text when the directory cannot answer (the cause is
/// logged; it never goes into a DSN).
const DIRECTORY_DOWN: &str = "451 4.4.3 directory temporarily unavailable";
