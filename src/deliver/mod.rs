//! Delivery: the one way a message goes from acceptance to a mailbox or
//! to the next hop (maddy's contract; docs/delivery.md).
//!
//! ```text
//! let mut tx = delivery.start(id, envelope);  // sender, ENVID, RET
//! tx.add_rcpt(target);                        // once per resolved mailbox
//! let outcomes = tx.body(data).await;         // one per add_rcpt, in order
//! tx.commit().await  /  tx.abort().await
//! ```
//!
//! A `Delivery` has exactly four kinds of target, chosen per recipient by
//! `Delivery::dest`:
//! - `local`: the store of this process (append, in process);
//! - `lmtp`: a store over LMTP, by the recipient's mailHost (or SMTP to an
//!   mta-in when `mta.local_via = "smtp:host:port"`);
//! - `relay` / `mx`: an MTA over SMTP, the smarthost or the domain's MX
//!   hosts (`client` is the SMTP/LMTP client they share);
//! - `queue`: the durable queue of this process, which later delivers
//!   through a `Delivery` in `Mode::Now`.
//!
//! Users: the SMTP and LMTP servers (`Mode::Accept`), submission
//! (`Mode::Submission`), the queue runner (`Mode::Now`, through
//! `queue::Router`). JMAP submission and Sieve redirects are to call
//! `Delivery::for_submission(..).start(..)` the same way: nothing else
//! writes into a mailbox on delivery or hands mail to another server.
//!
//! Applied here and nowhere else:
//! - Return-Path (RFC 5321 4.4): only final delivery into a mailbox
//!   (`local`) writes it, from the envelope sender, after removing any
//!   Return-Path the message already carries. Relaying, queueing, LMTP to
//!   another store and SMTP onwards never add one.
//! - Received: added once per hop by the receiving server's session core
//!   (`smtp::trace`), never by a target: the queue and the clients pass
//!   the message on unchanged.
//! - Quota: `quota()` is the effective quota (directory value, else the
//!   store default); `local` applies it. The IMAP session computes the
//!   same thing in `quota_of` and is to call `deliver::quota` instead.
//! - Over-quota policy (`store.over_quota`): `local` turns a full mailbox
//!   into `Outcome::OverQuota { permanent }`; every caller maps that one
//!   value (452 4.2.2 or 552 5.2.2; a bounce from the queue when permanent).
//!
//! Invariants:
//! - `body` returns an outcome for a recipient only once its copy is
//!   durable (local: file and index fsynced; queue: file and folder entry
//!   fsynced; remote: the next server answered 2xx) or has failed.
//! - `commit` makes accepted copies final: queued files are handed to the
//!   queue runner. Until then a queued file is not tried; it is on disk,
//!   so a crash before `commit` loses nothing (it is delivered after the
//!   restart, at worst once more than acknowledged).
//! - `abort` takes back what can be taken back: queued files are removed,
//!   local copies expunged. A copy another server acknowledged cannot be
//!   taken back; the caller decides per recipient (LMTP, the queue) and
//!   so never aborts those.

pub mod client;
pub mod lmtp;
pub mod local;
pub mod mta_sts;
pub mod mx;
pub mod pool;
pub mod queue;
pub mod relay;
pub mod tlsrpt;
// Issue 16: outbound DKIM signing at submission.
pub mod dkim;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Config, StoreConfig};
use crate::queue::Queue;
use crate::services::Services;
use crate::store::{Quota, Store};

/// The envelope of a message (RFC 5321 MAIL FROM and its DSN parameters,
/// and the recipients once queued). Its JSON form is the queue record's
/// first record: fields only ever get serde defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope sender; empty for the null sender (bounces).
    pub sender: String,
    /// The recipients as the queue keeps them (empty while a server
    /// transaction collects `Target`s).
    pub recipients: Vec<Recipient>,
    /// Unix seconds when the message was accepted.
    pub received: i64,
    /// DSN envelope id (RFC 3461 ENVID).
    #[serde(default)]
    pub envid: Option<String>,
    /// DSN RET=FULL (return the whole message in a bounce) vs headers only.
    #[serde(default)]
    pub ret_full: bool,
    /// DMARC asked for quarantine (issue 16, `smtp::auth_results`): final
    /// delivery files the copies into the recipients' `\Junk` mailbox.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub junk: bool,
}

/// One queued recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 ORCPT, when given.
    #[serde(default)]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY: "never", or a set of success/failure/delay.
    #[serde(default)]
    pub notify: Notify,
    /// Where to deliver (a route key the router understands, e.g. the
    /// recipient's mailHost). Empty: decided at delivery time.
    #[serde(default)]
    pub route: String,
}

/// RFC 3461 NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Default for Notify {
    /// RFC 3461 4.1: without NOTIFY, failure (and maybe delay) are reported.
    fn default() -> Self {
        Notify {
            success: false,
            failure: true,
            delay: true,
        }
    }
}

/// One mailbox (or remote address) a message goes to: a recipient as the
/// directory resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The account's canonical address (the store's user key), or the
    /// remote address.
    pub address: String,
    /// mailMessageStore partition; None: the store's default.
    pub partition: Option<String>,
    /// The directory's storage quota in bytes (None: the store default,
    /// see `quota`).
    pub quota: Option<u64>,
    /// The directory's message-count quota (mailMsgQuota; None: the store
    /// default, see `account_quota`).
    pub msg_quota: Option<u64>,
    /// The directory's mailHost: the store that holds the mailbox (None:
    /// this process's store).
    pub mail_host: Option<String>,
    /// An address in another domain (relayed after AUTH, or a forward).
    pub remote: bool,
    /// RFC 3461 NOTIFY of the RCPT that reached this mailbox (None: not given).
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT (`rfc822;addr`) of that RCPT.
    pub orcpt: Option<String>,
    /// The envelope sender of this copy when it is not the message's: a
    /// list's errors-to address (`mgrpErrorsTo`) for the copies made for
    /// the list, so their bounces go to the list's owner.
    pub sender: Option<String>,
    /// Stable id of this delivery, the same on every retry (a queue id,
    /// recipient index and the queue's host; see `queue::Router`): the
    /// store keeps one copy per id and mailbox (duplicate delivery
    /// suppression). Sent to a store over LMTP as `XMSGD-DELIVERY-ID`.
    pub delivery_id: Option<String>,
}

impl Target {
    /// A mailbox of one of our domains.
    pub fn mailbox(address: String) -> Target {
        Target {
            address,
            partition: None,
            quota: None,
            msg_quota: None,
            mail_host: None,
            remote: false,
            notify: None,
            orcpt: None,
            sender: None,
            delivery_id: None,
        }
    }

    /// A mailbox in another domain (relayed after AUTH, or a forward).
    pub fn remote(address: String) -> Target {
        Target {
            remote: true,
            ..Target::mailbox(address)
        }
    }
}

/// What happened to one recipient: the one outcome type of the server,
/// the queue and the clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Final delivery into a mailbox (DSN action `delivered`).
    Delivered,
    /// Durably in this process's queue; the queue reports from now on.
    Queued,
    /// Accepted by another SMTP server. `dsn_passed`: that server took
    /// the DSN request on (RFC 3461 5.2.1), so a SUCCESS notice is its
    /// job; otherwise we send a `relayed` notice (RFC 3461 5.2.2).
    Relayed { dsn_passed: bool },
    /// The mailbox is full; `permanent` per `store.over_quota`.
    OverQuota { permanent: bool },
    /// The store's disk is full (temporary).
    DiskFull,
    /// The process-wide memory budget could not hold the message
    /// (temporary).
    NoResources,
    /// Try again later; the text is a reply line, the remote server's or
    /// our generic reason (it may go into a DSN: never an internal cause).
    Temporary(String),
    /// Give up and bounce; the text as for `Temporary`.
    Permanent(String),
}

impl Outcome {
    /// The copy is durable here or with the next hop.
    pub fn accepted(&self) -> bool {
        matches!(
            self,
            Outcome::Delivered | Outcome::Queued | Outcome::Relayed { .. }
        )
    }

    /// A failure that retrying does not cure (the message bounces).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Outcome::Permanent(_) | Outcome::OverQuota { permanent: true }
        )
    }

    /// The reply line of a failure (for the queue's record and DSNs).
    pub fn text(&self) -> String {
        match self {
            Outcome::Delivered | Outcome::Queued | Outcome::Relayed { .. } => "250 2.0.0 ok".into(),
            Outcome::OverQuota { permanent: false } => "452 4.2.2 mailbox full".into(),
            Outcome::OverQuota { permanent: true } => "552 5.2.2 mailbox full".into(),
            Outcome::DiskFull => "452 4.3.1 insufficient system storage".into(),
            Outcome::NoResources => "452 4.3.1 insufficient system resources".into(),
            Outcome::Temporary(t) | Outcome::Permanent(t) => t.clone(),
        }
    }
}

/// The effective quota of a mailbox: the directory's value, else the
/// store's defaults (0: none). Every delivery and the IMAP QUOTA
/// commands use this one rule.
pub fn quota(directory_quota: Option<u64>, store: &StoreConfig) -> Quota {
    let nonzero = |q: u64| (q > 0).then_some(q);
    Quota {
        storage: directory_quota.or(nonzero(store.default_quota)),
        messages: nonzero(store.default_message_quota),
    }
}

/// The effective quota of an account with both of the directory's
/// limits: bytes (mailQuota) and messages (mailMsgQuota), each else the
/// store's default. The one rule for deliveries, APPEND, COPY/MOVE and
/// GETQUOTA.
pub fn account_quota(storage: Option<u64>, messages: Option<u64>, store: &StoreConfig) -> Quota {
    let q = quota(storage, store);
    Quota {
        messages: messages.or(q.messages),
        ..q
    }
}

pub use crate::config::is_own_store;

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// This process's queue.
    Queue,
    /// LMTP to a store at `host:port`.
    Lmtp(String),
    /// SMTP to an mta-in (`mta.local_via = "smtp:host:port"`).
    Smtp(String),
    /// SMTP to the smarthost (`mta.relay`).
    Relay,
    /// SMTP to the MX hosts of this domain.
    Mx(String),
    /// No target in this process can take it (temporary failure).
    Nowhere,
    /// This process's store. Last in the order `body` goes through the
    /// groups: final delivery may then take the message buffer over and
    /// write Return-Path into it without a second copy.
    Local,
}

/// Which targets a `Delivery` chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SMTP/LMTP server: mailboxes of this store are appended, everything
    /// else is queued (without a queue: everything is appended).
    Accept,
    /// Submission (and later JMAP, Sieve redirects): everything is queued,
    /// even mailboxes of this store (one path for DSNs and queue tools).
    Submission,
    /// The queue runner: every copy goes to its final target now.
    Now,
}

/// Told of every local copy once its transaction is committed: the
/// vacation response (`jmap::vacation::Responder`, RFC 5230/3834) runs
/// from here, for mail arriving by SMTP, LMTP and the queue alike.
pub trait AfterLocal: Send + Sync {
    /// `headers`: the message's header section (at most `AFTER_LOCAL_HEADERS` bytes).
    fn delivered(&self, user: &str, sender: &str, headers: Arc<Vec<u8>>);
}

/// Header bytes kept for `AfterLocal`.
pub const AFTER_LOCAL_HEADERS: usize = 64 * 1024;

/// A configured delivery: the targets of this process and the mode.
#[derive(Clone)]
pub struct Delivery {
    mode: Mode,
    config: Arc<Config>,
    store: Option<Store>,
    queue: Option<Arc<Queue>>,
    /// MX delivery with its connection pool (`Mode::Now` only); None when
    /// the resolver could not be set up (logged): mail to other domains
    /// then waits.
    mx: Option<Arc<mx::MxDelivery>>,
    /// The process's resolver and the idle connections to stores and the
    /// smarthost (`pool`).
    hops: Arc<pool::Hops>,
    /// Runs after committed local copies (None: nothing to run).
    after_local: Option<Arc<dyn AfterLocal>>,
    /// Signs the message once before any copy is made (submission only:
    /// the queue keeps the signed bytes; `dkim` module docs).
    dkim: Option<Arc<dkim::Signer>>,
    /// Sieve at final delivery into the local store (None: no store).
    sieve: Option<Arc<crate::sieve::Filter>>,
}

impl Delivery {
    /// The SMTP and LMTP servers of this process.
    pub fn from_services(services: &Services) -> Delivery {
        Delivery {
            mode: Mode::Accept,
            config: services.config.clone(),
            store: services.store.clone(),
            queue: services.queue.clone(),
            mx: None,
            hops: Arc::new(pool::Hops::new(&services.config, services.resolver.clone())),
            after_local: crate::jmap::vacation::Responder::for_services(services),
            dkim: None,
            sieve: crate::sieve::Filter::for_services(services),
        }
    }

    /// Submission: every recipient goes through the queue.
    pub fn for_submission(services: &Services) -> Delivery {
        Delivery {
            mode: Mode::Submission,
            store: None,
            dkim: services.dkim.for_config(&services.config),
            ..Delivery::from_services(services)
        }
    }

    /// The queue runner: local store, stores over LMTP, the smarthost and
    /// MX hosts.
    pub fn for_queue(services: &Services) -> Delivery {
        let mx = mx::MxDelivery::with_resolver(services.config.clone(), services.resolver.clone());
        let d = Delivery {
            mode: Mode::Now,
            queue: None,
            mx: Some(mx),
            ..Delivery::from_services(services)
        };
        d.hops.start_reaping();
        d
    }

    /// A delivery with exactly these targets (tests, tools).
    pub fn new(
        mode: Mode,
        config: Arc<Config>,
        store: Option<Store>,
        queue: Option<Arc<Queue>>,
    ) -> Delivery {
        let resolver = crate::dns::Resolver::from_config(&config).expect("DNS resolver");
        Delivery {
            mode,
            hops: Arc::new(pool::Hops::new(&config, Arc::new(resolver))),
            config,
            store,
            queue,
            mx: None,
            after_local: None,
            dkim: None,
            sieve: None,
        }
    }

    /// Some target can take a recipient (else RCPT is refused at once).
    pub fn available(&self) -> bool {
        match self.mode {
            Mode::Accept => self.store.is_some() || self.queue.is_some(),
            Mode::Submission => self.queue.is_some(),
            Mode::Now => true,
        }
    }

    /// Where `t`'s copy goes.
    pub fn dest(&self, t: &Target) -> Dest {
        let own = || !t.remote && is_own_store(&self.config, t.mail_host.as_deref());
        match self.mode {
            Mode::Accept => match (&self.store, &self.queue) {
                (Some(_), Some(_)) if own() => Dest::Local,
                (_, Some(_)) => Dest::Queue,
                (Some(_), None) => Dest::Local,
                (None, None) => Dest::Nowhere,
            },
            Mode::Submission if self.queue.is_some() => Dest::Queue,
            Mode::Submission => Dest::Nowhere,
            Mode::Now => {
                let mta = &self.config.mta;
                if t.remote {
                    if mta.relay.is_none() {
                        let domain = crate::directory::domain_of(&t.address).unwrap_or("");
                        Dest::Mx(domain.to_lowercase())
                    } else {
                        Dest::Relay
                    }
                } else if let crate::config::LocalVia::Smtp(hop) = &mta.local_via {
                    Dest::Smtp(hop.to_string())
                } else if self.store.is_some() && own() {
                    Dest::Local
                } else {
                    let host = t
                        .mail_host
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .unwrap_or(&self.config.server.hostname);
                    Dest::Lmtp(lmtp::address(&self.config, host))
                }
            }
        }
    }

    /// Starts a transaction. `id` names it in logs (the session's message
    /// id, or the queue id). `envelope.received` 0 means now.
    pub fn start(&self, id: &str, mut envelope: Envelope) -> Transaction {
        if envelope.received == 0 {
            envelope.received = crate::queue::unix_now();
        }
        Transaction {
            delivery: self.clone(),
            id: id.to_string(),
            envelope,
            targets: Vec::new(),
            done: Vec::new(),
            headers: None,
        }
    }
}

/// What `body` made durable that `commit` or `abort` acts on.
enum Done {
    /// A copy in this store.
    Local {
        user: String,
        placed: crate::store::Placed,
    },
    /// A queue file, not yet handed to the runner.
    Queued(queue::Pending),
}

/// One message on its way to its recipients.
pub struct Transaction {
    delivery: Delivery,
    id: String,
    envelope: Envelope,
    targets: Vec<Target>,
    done: Vec<Done>,
    /// The header section, for `AfterLocal` (kept only when there is one).
    headers: Option<Arc<Vec<u8>>>,
}

impl Transaction {
    pub fn add_rcpt(&mut self, target: Target) {
        self.targets.push(target);
    }

    /// The envelope as started.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Delivers the message to every recipient: one outcome per
    /// `add_rcpt`, in that order, each durable or failed. Targets of one
    /// kind go together (one queue file, one LMTP transaction per store,
    /// one SMTP transaction per domain; local copies concurrently so the
    /// store group-commits).
    ///
    /// Copies whose envelope sender differs (a list's errors-to address,
    /// `Target::sender`) go in transactions of their own, with that sender
    /// (and Return-Path, at final delivery).
    pub async fn body(&mut self, data: Arc<Vec<u8>>) -> Vec<Outcome> {
        let data = match &self.delivery.dkim {
            Some(signer) if !self.targets.is_empty() => signer.sign(&self.id, data).await,
            _ => data,
        };
        let mut groups: BTreeMap<(Dest, Option<String>), Vec<usize>> = BTreeMap::new();
        for (i, t) in self.targets.iter().enumerate() {
            let key = (self.delivery.dest(t), t.sender.clone());
            groups.entry(key).or_default().push(i);
        }
        let mut outcomes = vec![Outcome::Temporary(NOWHERE.into()); self.targets.len()];
        let d = self.delivery.clone();
        if d.after_local.is_some() && groups.keys().any(|(dest, _)| *dest == Dest::Local) {
            let end = crate::smtp::trace::header_section_len(&data)
                .unwrap_or(data.len())
                .min(AFTER_LOCAL_HEADERS);
            self.headers = Some(Arc::new(data[..end].to_vec()));
        }
        let cfg = &d.config;
        // Cut-through only when the queue's copies are the whole message
        // and all go to stores: a copy a store took cannot be taken back
        // if another group fails and the transaction is aborted, and
        // forwards to other servers wait in the queue as before.
        let cut_through = self.delivery.mode == Mode::Accept
            && groups.len() == 1
            && matches!(cfg.mta.local_via, crate::config::LocalVia::Lmtp)
            && self.targets.iter().all(|t| !t.remote);
        let mut data = data;
        let last = groups.len().saturating_sub(1);
        for (g, ((dest, sender), idx)) in groups.into_iter().enumerate() {
            let targets: Vec<&Target> = idx.iter().map(|&i| &self.targets[i]).collect();
            let envelope = match sender {
                Some(sender) => Envelope {
                    sender,
                    ..self.envelope.clone()
                },
                None => self.envelope.clone(),
            };
            let got: Vec<Outcome> = match dest {
                Dest::Local => match &d.store {
                    Some(store) => {
                        // The last group: the buffer is ours to change.
                        let buf = if g == last {
                            std::mem::take(&mut data)
                        } else {
                            data.clone()
                        };
                        let sender = &envelope.sender;
                        let sieve = d.sieve.as_ref();
                        let res = local::deliver_filtered(
                            store,
                            cfg,
                            sieve,
                            &self.id,
                            sender,
                            &targets,
                            buf,
                            envelope.junk,
                        )
                        .await;
                        res.into_iter()
                            .zip(&targets)
                            .map(|(r, t)| match r {
                                Ok(Some(placed)) => {
                                    self.done.push(Done::Local {
                                        user: t.address.clone(),
                                        placed,
                                    });
                                    Outcome::Delivered
                                }
                                // A repeat: the copy the mailbox took
                                // before stands (and is not ours to take
                                // back on abort).
                                Ok(None) => Outcome::Delivered,
                                Err(o) => o,
                            })
                            .collect()
                    }
                    None => vec![Outcome::Temporary(NOWHERE.into()); idx.len()],
                },
                Dest::Queue => match &d.queue {
                    Some(q) => {
                        let (id, data) = (&self.id, data.clone());
                        let written = match cut_through {
                            true => queue::deliver_or_write(q, id, &envelope, &targets, data).await,
                            false => queue::write(q, id, &envelope, &targets, data)
                                .await
                                .map(Some),
                        };
                        match written {
                            Ok(Some(p)) => {
                                self.done.push(Done::Queued(p));
                                vec![Outcome::Queued; idx.len()]
                            }
                            // Every copy is in its store (cut-through).
                            Ok(None) => vec![Outcome::Delivered; idx.len()],
                            Err(o) => vec![o; idx.len()],
                        }
                    }
                    None => vec![Outcome::Temporary(NOWHERE.into()); idx.len()],
                },
                Dest::Lmtp(addr) => {
                    let p = rcpt_params(&targets);
                    let (env, hops) = (&envelope, &d.hops);
                    let r = lmtp::deliver(cfg, hops, &addr, client::Dialect::Lmtp, env, &p, &data);
                    by_index(r.await, idx.len())
                }
                Dest::Smtp(addr) => {
                    let p = rcpt_params(&targets);
                    let (env, hops) = (&envelope, &d.hops);
                    let r = lmtp::deliver(cfg, hops, &addr, client::Dialect::Smtp, env, &p, &data);
                    by_index(r.await, idx.len())
                }
                Dest::Relay => {
                    let p = rcpt_params(&targets);
                    by_index(
                        relay::deliver(cfg, &d.hops, &envelope, &p, &data).await,
                        idx.len(),
                    )
                }
                Dest::Mx(domain) => match &d.mx {
                    Some(mx) => {
                        let p = rcpt_params(&targets);
                        by_index(mx.deliver(&domain, &envelope, &p, &data).await, idx.len())
                    }
                    None => vec![Outcome::Temporary("451 4.4.3 no DNS resolver".into()); idx.len()],
                },
                Dest::Nowhere => vec![Outcome::Temporary(NOWHERE.into()); idx.len()],
            };
            for (k, o) in got.into_iter().enumerate() {
                if let Some(&i) = idx.get(k) {
                    outcomes[i] = o;
                }
            }
        }
        outcomes
    }

    /// Makes the accepted copies final: queued files go to the runner.
    pub async fn commit(self) {
        for d in self.done {
            match (d, &self.delivery.queue) {
                (Done::Queued(p), Some(q)) => {
                    let qid = queue::commit(q, p);
                    tracing::info!(id = %self.id, queue_id = %qid, "queued");
                }
                (Done::Local { user, .. }, _) => {
                    if let (Some(hook), Some(h)) = (&self.delivery.after_local, &self.headers) {
                        hook.delivered(&user, &self.envelope.sender, h.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes back what `body` stored: queued files are removed, local
    /// copies expunged (copies other servers accepted stay).
    pub async fn abort(self) {
        for d in self.done {
            match d {
                Done::Queued(p) => {
                    if let Some(q) = &self.delivery.queue {
                        queue::discard(q, p).await;
                    }
                }
                Done::Local { user, placed } => {
                    if let Some(store) = &self.delivery.store {
                        local::take_back(store, &self.id, &user, placed).await;
                    }
                }
            }
        }
    }
}

/// The RCPT parameters of each target, numbered in order.
fn rcpt_params(targets: &[&Target]) -> Vec<(usize, client::RcptParams)> {
    targets
        .iter()
        .enumerate()
        .map(|(k, t)| {
            (
                k,
                client::RcptParams {
                    address: t.address.clone(),
                    notify: t.notify,
                    orcpt: t.orcpt.clone(),
                    delivery_id: t.delivery_id.clone(),
                },
            )
        })
        .collect()
}

/// Outcomes numbered as `rcpt_params` numbered them, back in order (a
/// missing one is a temporary failure).
fn by_index(got: Vec<(usize, Outcome)>, n: usize) -> Vec<Outcome> {
    let mut out = vec![Outcome::Temporary("451 4.3.0 local error in processing".into()); n];
    for (k, o) in got {
        if let Some(slot) = out.get_mut(k) {
            *slot = o;
        }
    }
    out
}

/// No target in this process for a recipient.
const NOWHERE: &str = "451 4.3.0 no delivery target for this recipient";

#[cfg(test)]
mod tests;
