//! Delivery: one contract for every back end (maddy's shape): `start` a
//! transaction with its envelope, `add_rcpt` each mailbox, hand over the
//! `body` (which returns one outcome per recipient once each copy is
//! durable or has failed), then `commit` or `abort`.
//!
//! Back ends: the in-process store (all-in-one, store role). Later: LMTP
//! to the store named by mailHost, and the outbound queue; the session code
//! does not change when they are added.
//!
//! The local store makes each copy durable and visible inside `body`
//! (append returns only after fsync and index commit), so `commit` and
//! `abort` have nothing left to do: an aborted transaction cannot take back
//! copies already appended. SMTP therefore answers a partial failure with
//! a 4xx and the retry may duplicate the copies that succeeded.

use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{error, warn};

use super::session::{Outcome, Target};
use crate::config::Config;
use crate::queue::{Envelope as QueueEnvelope, Queue, Recipient as QueueRecipient};
use crate::services::Services;
use crate::store::{Flags, NewMessage, Quota, Store, StoreError};

/// Where this process delivers.
#[derive(Clone)]
pub enum Delivery {
    /// Append into the in-process store.
    LocalStore(Store),
    /// MTA roles: mailboxes of this process's store are appended directly;
    /// everything else (other stores by mailHost, forwards to other
    /// domains) goes into the durable queue, which delivers it by LMTP or
    /// SMTP. Queued is as good as delivered for the reply: the queue file
    /// is fsynced first.
    Routed {
        store: Option<Store>,
        queue: Arc<Queue>,
        config: Arc<Config>,
        /// Submission: every recipient goes through the queue, even
        /// mailboxes of this process's store (one path for DSNs,
        /// NOTIFY=SUCCESS and the queue tools).
        queue_all: bool,
    },
    /// No back end in this process (mta-in without a store, until LMTP
    /// delivery exists): recipients are refused temporarily.
    Unavailable,
}

/// The envelope of one transaction.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Message id, for logs.
    pub id: String,
    /// Reverse path; empty for the null sender.
    pub sender: String,
    /// RFC 3461 ENVID and RET=FULL, carried into the queue.
    pub envid: Option<String>,
    pub ret_full: bool,
}

/// One delivery in progress.
pub struct DeliveryTx {
    backend: Delivery,
    envelope: Envelope,
    targets: Vec<Target>,
}

impl Delivery {
    pub fn from_services(services: &Services) -> Delivery {
        match (&services.queue, &services.store) {
            (Some(queue), store) => Delivery::Routed {
                store: store.clone(),
                queue: queue.clone(),
                config: services.config.clone(),
                queue_all: false,
            },
            (None, Some(store)) => Delivery::LocalStore(store.clone()),
            (None, None) => Delivery::Unavailable,
        }
    }

    /// Submission: everything is queued (see `Routed::queue_all`).
    pub fn for_submission(services: &Services) -> Delivery {
        match &services.queue {
            Some(queue) => Delivery::Routed {
                store: None,
                queue: queue.clone(),
                config: services.config.clone(),
                queue_all: true,
            },
            None => Delivery::Unavailable,
        }
    }

    pub fn available(&self) -> bool {
        !matches!(self, Delivery::Unavailable)
    }

    pub fn start(&self, envelope: Envelope) -> DeliveryTx {
        DeliveryTx {
            backend: self.clone(),
            envelope,
            targets: Vec::new(),
        }
    }
}

impl DeliveryTx {
    pub fn add_rcpt(&mut self, target: Target) {
        self.targets.push(target);
    }

    /// Delivers the message to every recipient (concurrently: the store
    /// group-commits). One outcome per `add_rcpt`, in that order.
    pub async fn body(&mut self, data: Arc<Vec<u8>>) -> Vec<Outcome> {
        match &self.backend {
            Delivery::Unavailable => vec![Outcome::Failed; self.targets.len()],
            Delivery::Routed {
                store,
                queue,
                config,
                queue_all,
            } => {
                let (local, queued): (Vec<usize>, Vec<usize>) =
                    (0..self.targets.len()).partition(|&i| {
                        let t = &self.targets[i];
                        !queue_all
                            && store.is_some()
                            && !t.remote
                            && crate::route::is_own_store(config, t.mail_host.as_deref())
                    });
                let mut outcomes = vec![Outcome::Failed; self.targets.len()];
                if let Some(store) = store {
                    let local_targets: Vec<Target> =
                        local.iter().map(|&i| self.targets[i].clone()).collect();
                    let res =
                        deliver_local(store, &self.envelope.id, &local_targets, data.clone()).await;
                    for (k, &i) in local.iter().enumerate() {
                        outcomes[i] = res[k];
                    }
                }
                if !queued.is_empty() {
                    let env = QueueEnvelope {
                        sender: self.envelope.sender.clone(),
                        recipients: queued
                            .iter()
                            .map(|&i| QueueRecipient {
                                address: self.targets[i].address.clone(),
                                orcpt: self.targets[i].orcpt.clone(),
                                notify: self.targets[i].notify.unwrap_or_default(),
                                route: self.targets[i].mail_host.clone().unwrap_or_default(),
                            })
                            .collect(),
                        received: crate::queue::unix_now(),
                        envid: self.envelope.envid.clone(),
                        ret_full: self.envelope.ret_full,
                    };
                    let o = match queue.enqueue(env, data).await {
                        Ok(qid) => {
                            tracing::info!(id = %self.envelope.id, queue_id = %qid, rcpts = queued.len(), "queued");
                            Outcome::Delivered
                        }
                        Err(e) => {
                            error!(id = %self.envelope.id, error = %e, "cannot queue the message");
                            Outcome::Failed
                        }
                    };
                    for &i in &queued {
                        outcomes[i] = o;
                    }
                }
                outcomes
            }
            Delivery::LocalStore(store) => {
                deliver_local(store, &self.envelope.id, &self.targets, data).await
            }
        }
    }

    /// Makes the delivery final. Local store: already final in `body`.
    pub fn commit(self) {}

    /// Gives the delivery up. Local store: copies already appended stay.
    pub fn abort(self) {}
}

/// Appends to every target concurrently (the store group-commits); one
/// outcome per target, in order.
async fn deliver_local(
    store: &Store,
    id: &str,
    targets: &[Target],
    data: Arc<Vec<u8>>,
) -> Vec<Outcome> {
    let mut set = JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let store = store.clone();
        let t = t.clone();
        let data = data.clone();
        set.spawn(async move { (i, append_local(&store, &t, data).await) });
    }
    let mut outcomes = vec![Outcome::Failed; targets.len()];
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, result)) => {
                let o = match result {
                    Ok(()) => Outcome::Delivered,
                    Err(e) => {
                        let rcpt = targets.get(i).map(|t| t.address.as_str());
                        outcome_of_error(id, rcpt.unwrap_or("?"), &e)
                    }
                };
                if let Some(slot) = outcomes.get_mut(i) {
                    *slot = o;
                }
            }
            Err(e) => {
                error!(id, error = %e, "delivery task failed")
            }
        }
    }
    outcomes
}

async fn append_local(store: &Store, t: &Target, data: Arc<Vec<u8>>) -> Result<(), StoreError> {
    store
        .ensure_user(&t.address, t.partition.as_deref())
        .await?;
    store
        .append(
            &t.address,
            "INBOX",
            NewMessage {
                data,
                flags: Flags::default(),
                internal_date: None,
            },
            Quota {
                storage: t.quota,
                messages: t.message_quota,
            },
        )
        .await?;
    Ok(())
}

fn outcome_of_error(id: &str, rcpt: &str, e: &StoreError) -> Outcome {
    match e {
        StoreError::OverQuota => {
            warn!(id, rcpt, "delivery refused: over quota");
            Outcome::OverQuota
        }
        StoreError::DiskFull => {
            warn!(id, rcpt, "delivery refused: disk full");
            Outcome::DiskFull
        }
        other => {
            error!(id, rcpt, error = %other, "delivery failed");
            Outcome::Failed
        }
    }
}
