//! A store over LMTP (RFC 2033), by the recipient's mailHost; the same
//! transaction over SMTP to an mta-in (`mta.local_via = "smtp:host:port"`).
//!
//! One transaction per call, over a connection from the pool when one
//! is idle, else a new one (`deliver::pool`). A pooled connection is
//! checked with an RSET sent in the same write as MAIL/RCPT/DATA
//! (`Client::send_reused`): reuse costs no extra round trip. The
//! store's name goes through the process's resolver (`crate::dns`:
//! `[dns] nameservers`, /etc/hosts). A store's LMTP 250 is final
//! delivery (the store wrote Return-Path and made the copy durable); an
//! mta-in's SMTP 250 is relaying (`Outcome::Relayed`).

use std::time::Duration;

use super::client::{mail_params, relayed, Client, Dialect, RcptParams};
use super::pool::Hops;
use super::{Envelope, Outcome};
use crate::config::Config;
use crate::dns::LookupError;

/// The LMTP address of a store named by mailHost: `mta.hosts`, else the
/// name with `mta.lmtp_port`.
pub fn address(config: &Config, mail_host: &str) -> String {
    let mta = &config.mta;
    match mta.hosts.get(mail_host) {
        Some(a) => a.with_default_port(mta.lmtp_port).to_string(),
        None if mail_host.contains(':') && !mail_host.starts_with('[') => mail_host.to_string(),
        None => format!("{mail_host}:{}", mta.lmtp_port),
    }
}

/// One LMTP or SMTP transaction to `addr` (`host:port`) for `list`
/// (index, parameters); one outcome per index.
pub async fn deliver(
    config: &Config,
    hops: &Hops,
    addr: &str,
    dialect: Dialect,
    env: &Envelope,
    list: &[(usize, RcptParams)],
    data: &[u8],
) -> Vec<(usize, Outcome)> {
    let timeout = Duration::from_secs(config.mta.delivery_timeout.max(1));
    let helo = &config.server.hostname;
    let all = |o: &Outcome| list.iter().map(|(i, _)| (*i, o.clone())).collect();
    let addrs = match hops.resolver.resolve_pair(addr).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(to = %addr, error = %e, "cannot resolve the next hop; recipients stay queued");
            let text = match e {
                LookupError::NoSuchName(_) => "451 4.4.4 next hop has no address",
                LookupError::Temporary(_) => "451 4.4.3 next hop address lookup failed",
            };
            return all(&Outcome::Temporary(text.into()));
        }
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let params = mail_params(env);
    let rcpts: Vec<RcptParams> = list.iter().map(|(_, r)| r.clone()).collect();
    let outcomes = |res: Result<Vec<Outcome>, Outcome>, dsn: bool| match res {
        Ok(res) => list
            .iter()
            .map(|(i, _)| *i)
            .zip(res)
            .map(|(i, o)| match dialect {
                // A store's LMTP 250 is final delivery.
                Dialect::Lmtp => (i, o),
                Dialect::Smtp => (i, relayed(o, dsn)),
            })
            .collect(),
        Err(o) => all(&o),
    };
    let mut last = Outcome::Temporary("451 4.4.1 cannot connect".into());
    let mut client = None;
    for sa in addrs {
        let key = (sa, dialect);
        if let Some(mut c) = hops.lmtp.take(&key) {
            // The pooled connection's RSET rides with this transaction's
            // commands; a stale one delivered nothing and a fresh one
            // follows.
            if let Some(res) = c.send_reused(&params, &rcpts, data).await {
                crate::metrics::pool_take(true);
                let dsn = c.has("DSN");
                hops.lmtp.release(key, c).await;
                return outcomes(res, dsn);
            }
        }
        crate::metrics::pool_take(false);
        match Client::connect_addr(sa, host, None, dialect, helo, timeout).await {
            Ok(c) => {
                client = Some((key, c));
                break;
            }
            Err(o) => last = o,
        }
    }
    let Some((key, mut c)) = client else {
        tracing::warn!(to = %addr, reason = ?last, "next hop unreachable; recipients stay queued");
        return all(&last);
    };
    let dsn = c.has("DSN");
    let res = c.send_with(&params, &rcpts, data).await;
    hops.lmtp.release(key, c).await;
    outcomes(res, dsn)
}
