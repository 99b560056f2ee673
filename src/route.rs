//! Routing queued mail: the queue's `Transport` for the MTAs.
//!
//! Each pending recipient is looked up again in the directory at delivery
//! time (a user moved to another store while the message waited goes to the
//! new one). Recipients are grouped by destination, one transaction each:
//! - local domains: the store named by `mailHost` by LMTP, in-process when
//!   it is this process's store; or SMTP to an mta-in (`mta.local_via`);
//! - other domains: the smarthost (`mta.relay`) when one is set, else the
//!   domain's MX hosts (`mx.rs`), one transaction per domain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::LocalVia;
use crate::directory::{DirError, Directory, Recipient as DirRecipient};
use crate::mx::{mail_params, rcpt_params, relayed, MxDelivery};
use crate::queue::{BoxFuture, Envelope, Outcome, Transport};
use crate::services::Services;
use crate::smtpclient::{Client, Dialect, RcptParams, TlsVerify};
use crate::store::{Flags, NewMessage, Quota, StoreError};

/// Where one recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// This process's store.
    Local,
    /// LMTP to `host:port`.
    Lmtp(String),
    /// SMTP to an mta-in (`mta.local_via = "smtp:host:port"`).
    Smtp(String),
    /// SMTP to the smarthost (`mta.relay`).
    Relay,
    /// SMTP to the MX hosts of this domain.
    Mx(String),
}

pub struct StoreRouter {
    services: Services,
    /// None when the resolver could not be set up (logged): MX delivery
    /// then fails temporarily.
    mx: Option<Arc<MxDelivery>>,
}

impl StoreRouter {
    pub fn new(services: Services) -> Arc<StoreRouter> {
        let mx = match MxDelivery::new(services.config.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot set up the DNS resolver; mail to other domains waits");
                None
            }
        };
        Arc::new(StoreRouter { services, mx })
    }

    /// The LMTP address of a store named by mailHost.
    pub fn lmtp_address(&self, mail_host: &str) -> String {
        let mta = &self.services.config.mta;
        match mta.hosts.get(mail_host) {
            Some(a) => a.with_default_port(mta.lmtp_port).to_string(),
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
            Err(DirError::Temporary(e)) => {
                tracing::warn!(error = %e, "directory unavailable during queue delivery");
                Err(Outcome::Temporary(DIRECTORY_DOWN.into()))
            }
        }
    }

    async fn deliver_local(
        &self,
        account: &crate::directory::Account,
        sender: &str,
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
            messages: {
                let q = self.services.config.store.default_message_quota;
                (q > 0).then_some(q)
            },
        };
        if let Err(e) = store
            .ensure_user(&account.address, account.partition.as_deref())
            .await
        {
            return store_outcome(e);
        }
        // Final delivery adds Return-Path (RFC 5321 4.4) unless an earlier
        // hop did (mail from submission arrives here without one).
        let data = if crate::smtp::trace::has_return_path(&data) {
            data
        } else {
            let mut d = crate::smtp::trace::return_path(sender).into_bytes();
            d.extend_from_slice(&data);
            Arc::new(d)
        };
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

impl StoreRouter {
    /// One SMTP/LMTP transaction to a store or an mta-in.
    async fn deliver_hop(
        &self,
        addr: &str,
        dialect: Dialect,
        env: &Envelope,
        list: &[(usize, RcptParams)],
        data: &[u8],
    ) -> Vec<(usize, Outcome)> {
        let timeout = Duration::from_secs(self.services.config.mta.delivery_timeout.max(1));
        let helo = &self.services.config.server.hostname;
        let all = |o: &Outcome| list.iter().map(|(i, _)| (*i, o.clone())).collect();
        let mut c = match Client::connect(addr, dialect, helo, timeout).await {
            Ok(c) => c,
            Err(o) => {
                tracing::warn!(to = %addr, reason = ?o, "next hop unreachable; recipients stay queued");
                return all(&o);
            }
        };
        let rcpts: Vec<RcptParams> = list.iter().map(|(_, r)| r.clone()).collect();
        let dsn = c.has("DSN");
        match c.send_with(&mail_params(env), &rcpts, data).await {
            Ok(res) => {
                c.quit().await;
                list.iter()
                    .map(|(i, _)| *i)
                    .zip(res)
                    .map(|(i, o)| match dialect {
                        // A store's LMTP 250 is final delivery.
                        Dialect::Lmtp => (i, o),
                        Dialect::Smtp => (i, relayed(o, dsn)),
                    })
                    .collect()
            }
            Err(o) => all(&o),
        }
    }

    /// One transaction to the smarthost: TLS as `mta.relay_tls` says,
    /// AUTH PLAIN when `mta.relay_user` is set.
    async fn deliver_relay(
        &self,
        env: &Envelope,
        list: &[(usize, RcptParams)],
        data: &[u8],
    ) -> Vec<(usize, Outcome)> {
        let cfg = &self.services.config.mta;
        let all = |o: Outcome| {
            list.iter()
                .map(|(i, _)| (*i, o.clone()))
                .collect::<Vec<_>>()
        };
        let timeout = Duration::from_secs(cfg.delivery_timeout.max(1));
        let helo = &self.services.config.server.hostname;
        let Some(relay) = &cfg.relay else {
            return all(Outcome::Temporary("451 4.3.5 no smarthost".into()));
        };
        let host = relay.host.to_string();
        let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(relay.pair()).await {
            Ok(a) => a.collect(),
            Err(e) => {
                tracing::warn!(relay = %relay, error = %e, "cannot resolve the smarthost");
                return all(Outcome::Temporary(
                    "451 4.4.3 smarthost address lookup failed".into(),
                ));
            }
        };
        let verify = if cfg.relay_tls_verify {
            match crate::smtpclient::load_roots(&cfg.tls_ca_file) {
                Ok(r) => TlsVerify::Roots(r),
                Err(e) => {
                    tracing::error!(file = %cfg.tls_ca_file, error = %e, "cannot load the trust anchors for the smarthost (mta.tls_ca_file)");
                    return all(Outcome::Temporary(
                        "451 4.7.5 cannot verify the smarthost's certificate".into(),
                    ));
                }
            }
        } else {
            TlsVerify::None
        };
        let mut last = Outcome::Temporary("451 4.4.1 smarthost unreachable".into());
        for addr in addrs {
            let implicit = (cfg.relay_tls == "implicit").then_some(&verify);
            let c = match Client::connect_addr(addr, &host, implicit, Dialect::Smtp, helo, timeout)
                .await
            {
                Ok(c) => c,
                Err(o) => {
                    last = o;
                    continue;
                }
            };
            let mut c = match cfg.relay_tls.as_str() {
                "require" if !c.has("STARTTLS") => {
                    c.quit().await;
                    tracing::warn!(relay = %relay, "the smarthost does not offer STARTTLS (mta.relay_tls = require)");
                    return all(Outcome::Temporary(
                        "451 4.7.4 the smarthost does not offer STARTTLS".into(),
                    ));
                }
                "require" => match c.starttls(&host, &verify).await {
                    Ok(c) => c,
                    Err(o) => return all(o),
                },
                "opportunistic" if c.has("STARTTLS") => {
                    match c.starttls(&host, &TlsVerify::None).await {
                        Ok(c) => c,
                        Err(o) => return all(o),
                    }
                }
                _ => c,
            };
            if !cfg.relay_user.is_empty() {
                // Credentials go only to a relay that proved its name with
                // a verified certificate, or over loopback. Opportunistic
                // TLS (any certificate) would hand them to whoever sits in
                // the path; check-config refuses that setting, and this is
                // the last line.
                let verified = c.tls
                    && cfg.relay_tls_verify
                    && matches!(cfg.relay_tls.as_str(), "require" | "implicit");
                if !verified && !addr.ip().is_loopback() {
                    c.quit().await;
                    tracing::error!(relay = %relay, tls = %cfg.relay_tls, "not sending the smarthost password: the relay's certificate was not verified");
                    return all(Outcome::Temporary(
                        "451 4.7.0 smarthost not authenticated; credentials withheld".into(),
                    ));
                }
                let path = self.services.config.data_path(&cfg.relay_password_file, "");
                let password = match std::fs::read_to_string(&path) {
                    Ok(p) => p.lines().next().unwrap_or("").to_string(),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot read mta.relay_password_file");
                        return all(Outcome::Temporary(
                            "451 4.3.0 smarthost password unavailable".into(),
                        ));
                    }
                };
                if let Err(o) = c.auth_plain(&cfg.relay_user, &password).await {
                    tracing::warn!(relay = %relay, reason = ?o, "smarthost refused our credentials");
                    // A refused login is our configuration, not the
                    // recipients' fault: keep the mail.
                    return all(match o {
                        Outcome::Permanent(t) => Outcome::Temporary(t),
                        o => o,
                    });
                }
            }
            let rcpts: Vec<RcptParams> = list.iter().map(|(_, r)| r.clone()).collect();
            let dsn = c.has("DSN");
            return match c.send_with(&mail_params(env), &rcpts, data).await {
                Ok(res) => {
                    c.quit().await;
                    list.iter()
                        .map(|(i, _)| *i)
                        .zip(res)
                        .map(|(i, o)| (i, relayed(o, dsn)))
                        .collect()
                }
                Err(o) => all(o),
            };
        }
        all(last)
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
            let cfg = &self.services.config.mta;
            let mut out = Vec::new();
            let mut groups: BTreeMap<Dest, Vec<(usize, crate::directory::Account)>> =
                BTreeMap::new();
            for i in rcpts {
                let addr = &env.recipients[i].address;
                let domain = crate::directory::domain_of(addr)
                    .unwrap_or("")
                    .to_lowercase();
                match self.services.directory.is_local_domain(&domain).await {
                    Ok(false) => {
                        let dest = if cfg.relay.is_none() {
                            Dest::Mx(domain)
                        } else {
                            Dest::Relay
                        };
                        groups
                            .entry(dest)
                            .or_default()
                            .push((i, remote_account(addr)));
                        continue;
                    }
                    Ok(true) => {}
                    Err(DirError::Temporary(e)) => {
                        tracing::warn!(error = %e, "directory unavailable during queue delivery");
                        out.push((i, Outcome::Temporary(DIRECTORY_DOWN.into())));
                        continue;
                    }
                }
                if let LocalVia::Smtp(hop) = &cfg.local_via {
                    // The mta-in resolves aliases and users itself.
                    groups
                        .entry(Dest::Smtp(hop.to_string()))
                        .or_default()
                        .push((i, remote_account(addr)));
                    continue;
                }
                match Self::resolve(&self.services.directory, addr).await {
                    Ok(a) => groups
                        .entry(self.dest_for(a.mail_host.as_deref()))
                        .or_default()
                        .push((i, a)),
                    Err(o) => out.push((i, o)),
                }
            }
            for (dest, list) in groups {
                let params: Vec<(usize, RcptParams)> = list
                    .iter()
                    .map(|(i, a)| {
                        let mut p = rcpt_params(env, *i);
                        p.address = a.address.clone();
                        (*i, p)
                    })
                    .collect();
                match dest {
                    Dest::Local => {
                        for (i, a) in list {
                            out.push((i, self.deliver_local(&a, &env.sender, data.clone()).await));
                        }
                    }
                    Dest::Lmtp(addr) => out.extend(
                        self.deliver_hop(&addr, Dialect::Lmtp, env, &params, &data)
                            .await,
                    ),
                    Dest::Smtp(addr) => out.extend(
                        self.deliver_hop(&addr, Dialect::Smtp, env, &params, &data)
                            .await,
                    ),
                    Dest::Relay => out.extend(self.deliver_relay(env, &params, &data).await),
                    Dest::Mx(domain) => match &self.mx {
                        Some(mx) => out.extend(mx.deliver(&domain, env, &params, &data).await),
                        None => out.extend(params.iter().map(|(i, _)| {
                            (*i, Outcome::Temporary("451 4.4.3 no DNS resolver".into()))
                        })),
                    },
                }
            }
            out
        })
    }
}

/// Temporary failure text when the directory cannot answer (the cause is
/// logged; it never goes into a DSN).
const DIRECTORY_DOWN: &str = "451 4.4.3 directory temporarily unavailable";
