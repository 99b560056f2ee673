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
use crate::services::Services;
use crate::store::{Flags, NewMessage, Quota, Store, StoreError};

/// Where this process delivers.
#[derive(Clone)]
pub enum Delivery {
    /// Append into the in-process store.
    LocalStore(Store),
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
}

/// One delivery in progress.
pub struct DeliveryTx {
    backend: Delivery,
    envelope: Envelope,
    targets: Vec<Target>,
}

impl Delivery {
    pub fn from_services(services: &Services) -> Delivery {
        match &services.store {
            Some(store) => Delivery::LocalStore(store.clone()),
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
            Delivery::LocalStore(store) => {
                let mut set = JoinSet::new();
                for (i, t) in self.targets.iter().enumerate() {
                    let store = store.clone();
                    let t = t.clone();
                    let data = data.clone();
                    set.spawn(async move { (i, append_local(&store, &t, data).await) });
                }
                let mut outcomes = vec![Outcome::Failed; self.targets.len()];
                while let Some(joined) = set.join_next().await {
                    match joined {
                        Ok((i, result)) => {
                            let o = match result {
                                Ok(()) => Outcome::Delivered,
                                Err(e) => {
                                    let rcpt = self.targets.get(i).map(|t| t.address.as_str());
                                    outcome_of_error(&self.envelope.id, rcpt.unwrap_or("?"), &e)
                                }
                            };
                            if let Some(slot) = outcomes.get_mut(i) {
                                *slot = o;
                            }
                        }
                        Err(e) => {
                            error!(id = %self.envelope.id, error = %e, "delivery task failed")
                        }
                    }
                }
                outcomes
            }
        }
    }

    /// Makes the delivery final. Local store: already final in `body`.
    pub fn commit(self) {}

    /// Gives the delivery up. Local store: copies already appended stay.
    pub fn abort(self) {}
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
                messages: None,
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
