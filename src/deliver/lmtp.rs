//! A store over LMTP (RFC 2033), by the recipient's mailHost; the same
//! transaction over SMTP to an mta-in (`mta.local_via = "smtp:host:port"`).
//!
//! One transaction per call. A store's LMTP 250 is final delivery (the
//! store wrote Return-Path and made the copy durable); an mta-in's SMTP
//! 250 is relaying (`Outcome::Relayed`).

use std::time::Duration;

use super::client::{mail_params, relayed, Client, Dialect, RcptParams};
use super::{Envelope, Outcome};
use crate::config::Config;

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

/// One LMTP or SMTP transaction to `addr` for `list` (index, parameters);
/// one outcome per index.
pub async fn deliver(
    config: &Config,
    addr: &str,
    dialect: Dialect,
    env: &Envelope,
    list: &[(usize, RcptParams)],
    data: &[u8],
) -> Vec<(usize, Outcome)> {
    let timeout = Duration::from_secs(config.mta.delivery_timeout.max(1));
    let helo = &config.server.hostname;
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
