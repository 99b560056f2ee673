//! Routing queued mail to stores: the queue's `Transport` for the MTAs.
//!
//! Each pending recipient is looked up again in the directory at delivery
//! time (a user moved to another store while the message waited goes to the
//! new one). Recipients are grouped by the store their `mailHost` names;
//! each store gets one LMTP transaction. A mailHost that is this process's
//! own store (or none, in all-in-one) is delivered in-process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::directory::{DirError, Directory, Recipient as DirRecipient};
use crate::queue::{BoxFuture, Envelope, Outcome, Transport};
use crate::services::Services;
use crate::smtpclient::{Client, Dialect};
use crate::store::{Flags, NewMessage, Quota, StoreError};

/// Where one recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// This process's store.
    Local,
    /// LMTP to `host:port`.
    Lmtp(String),
    /// SMTP to the outbound relay (mail for other domains, e.g. forwards).
    Relay,
}

pub struct StoreRouter {
    services: Services,
}

impl StoreRouter {
    pub fn new(services: Services) -> Arc<StoreRouter> {
        Arc::new(StoreRouter { services })
    }

    /// The LMTP address of a store named by mailHost.
    pub fn lmtp_address(&self, mail_host: &str) -> String {
        let mta = &self.services.config.mta;
        match mta.hosts.get(mail_host) {
            Some(a) => a.clone(),
            None if mail_host.contains(':') && !mail_host.starts_with('[') => mail_host.to_string(),
            None => format!("{mail_host}:{}", mta.lmtp_port),
        }
    }

    /// Which store holds this user's mailbox.
    pub fn dest_for(&self, mail_host: Option<&str>) -> Dest {
        if self.services.store.is_some() && is_own_store(&self.services.config, mail_host) {
            return Dest::Local;
        }
        let host = mail_host
            .filter(|h| !h.is_empty())
            .unwrap_or(&self.services.config.server.hostname);
        Dest::Lmtp(self.lmtp_address(host))
    }

    async fn resolve(dir: &Directory, address: &str) -> Result<crate::directory::Account, Outcome> {
        match dir.lookup(address).await {
            Ok(Some(DirRecipient::User(a))) if a.active => Ok(a),
            Ok(Some(DirRecipient::User(_))) => {
                Err(Outcome::Permanent("550 5.2.1 mailbox disabled".into()))
            }
            Ok(Some(DirRecipient::List(_))) | Ok(None) => {
                Err(Outcome::Permanent("550 5.1.1 no such user here".into()))
            }
            Err(DirError::Temporary(e)) => Err(Outcome::Temporary(format!(
                "451 4.4.3 directory unavailable: {e}"
            ))),
        }
    }

    async fn deliver_local(
        &self,
        account: &crate::directory::Account,
        data: Arc<Vec<u8>>,
    ) -> Outcome {
        let Some(store) = &self.services.store else {
            return Outcome::Temporary("451 4.3.0 no local store".into());
        };
        let quota = Quota {
            storage: account.quota.or_else(|| {
                let q = self.services.config.store.default_quota;
                (q > 0).then_some(q)
            }),
            messages: None,
        };
        if let Err(e) = store
            .ensure_user(&account.address, account.partition.as_deref())
            .await
        {
            return store_outcome(e);
        }
        match store
            .append(
                &account.address,
                "INBOX",
                NewMessage {
                    data,
                    flags: Flags::default(),
                    internal_date: None,
                },
                quota,
            )
            .await
        {
            Ok(_) => Outcome::Delivered,
            Err(e) => store_outcome(e),
        }
    }
}

/// Does `mail_host` (the directory's mailHost of a user) name this store?
/// No mailHost means "here". The store's name is `store.host`, or the
/// server's hostname when that is empty.
pub fn is_own_store(config: &crate::config::Config, mail_host: Option<&str>) -> bool {
    match mail_host {
        None | Some("") => true,
        Some(h) => {
            let own = if config.store.host.is_empty() {
                &config.server.hostname
            } else {
                &config.store.host
            };
            h.eq_ignore_ascii_case(own)
        }
    }
}

/// A placeholder account for a recipient in another domain.
fn remote_account(address: &str) -> crate::directory::Account {
    crate::directory::Account {
        address: address.to_string(),
        aliases: Vec::new(),
        active: true,
        quota: None,
        mail_host: None,
        partition: None,
        forward: Vec::new(),
        keep_mailbox: true,
    }
}

/// SMTP-style outcome of a store error.
pub fn store_outcome(e: StoreError) -> Outcome {
    match e {
        StoreError::OverQuota => Outcome::Temporary("452 4.2.2 mailbox full".into()),
        StoreError::DiskFull => Outcome::Temporary("452 4.3.1 insufficient system storage".into()),
        StoreError::NoSuchMailbox => Outcome::Permanent("550 5.1.1 no such mailbox".into()),
        other => {
            tracing::error!(error = %other, "store delivery failed");
            Outcome::Temporary("451 4.3.0 local error in processing".into())
        }
    }
}

impl Transport for StoreRouter {
    fn deliver<'a>(
        &'a self,
        env: &'a Envelope,
        rcpts: Vec<usize>,
        data: Arc<Vec<u8>>,
    ) -> BoxFuture<'a, Vec<(usize, Outcome)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut groups: BTreeMap<Dest, Vec<(usize, crate::directory::Account)>> =
                BTreeMap::new();
            for i in rcpts {
                let addr = &env.recipients[i].address;
                let domain = crate::directory::domain_of(addr).unwrap_or("");
                match self.services.directory.is_local_domain(domain).await {
                    Ok(false) => {
                        groups
                            .entry(Dest::Relay)
                            .or_default()
                            .push((i, remote_account(addr)));
                        continue;
                    }
                    Ok(true) => {}
                    Err(DirError::Temporary(e)) => {
                        out.push((
                            i,
                            Outcome::Temporary(format!("451 4.4.3 directory unavailable: {e}")),
                        ));
                        continue;
                    }
                }
                match Self::resolve(&self.services.directory, addr).await {
                    Ok(a) => groups
                        .entry(self.dest_for(a.mail_host.as_deref()))
                        .or_default()
                        .push((i, a)),
                    Err(o) => out.push((i, o)),
                }
            }
            let timeout = Duration::from_secs(self.services.config.mta.delivery_timeout);
            for (dest, list) in groups {
                match dest {
                    Dest::Local => {
                        for (i, a) in list {
                            out.push((i, self.deliver_local(&a, data.clone()).await));
                        }
                    }
                    Dest::Relay if self.services.config.mta.relay.is_empty() => {
                        tracing::warn!(
                            recipients = list.len(),
                            "mail for other domains waits in the queue: no outbound relay is configured (mta.relay)"
                        );
                        out.extend(list.iter().map(|(i, _)| {
                            (
                                *i,
                                Outcome::Temporary("451 4.4.0 no outbound relay configured".into()),
                            )
                        }));
                    }
                    Dest::Relay | Dest::Lmtp(_) => {
                        let (addr, dialect) = match &dest {
                            Dest::Lmtp(a) => (a.clone(), Dialect::Lmtp),
                            _ => (self.services.config.mta.relay.clone(), Dialect::Smtp),
                        };
                        let helo = &self.services.config.server.hostname;
                        match Client::connect(&addr, dialect, helo, timeout).await {
                            Err(o) => {
                                tracing::warn!(store = %addr, reason = ?o, "store unreachable; recipients stay queued");
                                out.extend(list.iter().map(|(i, _)| (*i, o.clone())));
                            }
                            Ok(mut c) => {
                                let addrs: Vec<&str> =
                                    list.iter().map(|(_, a)| a.address.as_str()).collect();
                                match c.send(&env.sender, &addrs, &data).await {
                                    Ok(res) => {
                                        out.extend(list.iter().map(|(i, _)| *i).zip(res));
                                        c.quit().await;
                                    }
                                    Err(o) => out.extend(list.iter().map(|(i, _)| (*i, o.clone()))),
                                }
                            }
                        }
                    }
                }
            }
            out
        })
    }
}

/// `smtp:host:port` of `mta.local_via`: the mta-in that local mail goes
/// through; None for anything else.
pub fn local_via_smtp(v: &str) -> Option<&str> {
    let rest = v.strip_prefix("smtp:")?;
    let (host, port) = rest.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then_some(rest)
}
