//! An MTA over SMTP: the smarthost (`mta.relay`), with TLS as
//! `mta.relay_tls` says and AUTH PLAIN when `mta.relay_user` is set.
//! A 250 is relaying (`Outcome::Relayed`): the smarthost reports from
//! then on.
//!
//! The smarthost's name goes through the process's resolver
//! (`crate::dns`). Connections stay open for the next message
//! (`mta.relay_pool`, `deliver::pool`): a pooled one is past TLS and
//! AUTH and is checked with RSET before it is used again.

use std::net::SocketAddr;
use std::time::Duration;

use super::client::{load_roots, mail_params, relayed, Client, Dialect, RcptParams, TlsVerify};
use super::pool::Hops;
use super::{Envelope, Outcome};
use crate::config::{Config, RelayTls};

/// Why a connection to one address of the smarthost could not be set up.
enum OpenError {
    /// This address failed: try the next one.
    Next(Outcome),
    /// The smarthost (any address) cannot take the mail now.
    Stop(Outcome),
}

/// One transaction to the smarthost: TLS as `mta.relay_tls` says,
/// AUTH PLAIN when `mta.relay_user` is set.
pub async fn deliver(
    config: &Config,
    hops: &Hops,
    env: &Envelope,
    list: &[(usize, RcptParams)],
    data: &[u8],
) -> Vec<(usize, Outcome)> {
    let cfg = &config.mta;
    let all = |o: Outcome| {
        list.iter()
            .map(|(i, _)| (*i, o.clone()))
            .collect::<Vec<_>>()
    };
    let Some(relay) = &cfg.relay else {
        return all(Outcome::Temporary("451 4.3.5 no smarthost".into()));
    };
    let (name, port) = relay.pair();
    let addrs = match hops.resolver.socket_addrs(name, port).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%relay, error = %e, "cannot resolve the smarthost");
            return all(Outcome::Temporary(
                "451 4.4.3 smarthost address lookup failed".into(),
            ));
        }
    };
    let mut last = Outcome::Temporary("451 4.4.1 smarthost unreachable".into());
    for addr in addrs {
        let pooled = match hops.relay.take(&addr) {
            Some(mut c) => c.reset().await.then_some(c),
            None => None,
        };
        let mut c = match pooled {
            Some(c) => c,
            None => match open(config, addr).await {
                Ok(c) => c,
                Err(OpenError::Next(o)) => {
                    last = o;
                    continue;
                }
                Err(OpenError::Stop(o)) => return all(o),
            },
        };
        let rcpts: Vec<RcptParams> = list.iter().map(|(_, r)| r.clone()).collect();
        let dsn = c.has("DSN");
        let res = c.send_with(&mail_params(env), &rcpts, data).await;
        hops.relay.release(addr, c).await;
        return match res {
            Ok(res) => list
                .iter()
                .map(|(i, _)| *i)
                .zip(res)
                .map(|(i, o)| (i, relayed(o, dsn)))
                .collect(),
            Err(o) => all(o),
        };
    }
    all(last)
}

/// Connects to one address of the smarthost, says EHLO, applies the TLS
/// setting and logs in.
async fn open(config: &Config, addr: SocketAddr) -> Result<Client, OpenError> {
    let cfg = &config.mta;
    let Some(relay) = &cfg.relay else {
        return Err(OpenError::Stop(Outcome::Temporary(
            "451 4.3.5 no smarthost".into(),
        )));
    };
    let host = relay.host.to_string();
    let timeout = Duration::from_secs(cfg.delivery_timeout.max(1));
    let helo = &config.server.hostname;
    let verify = if cfg.relay_tls_verify {
        match load_roots(&cfg.tls_ca_file) {
            Ok(r) => TlsVerify::Roots(r),
            Err(e) => {
                tracing::error!(file = %cfg.tls_ca_file, error = %e, "cannot load the trust anchors for the smarthost (mta.tls_ca_file)");
                return Err(OpenError::Stop(Outcome::Temporary(
                    "451 4.7.5 cannot verify the smarthost's certificate".into(),
                )));
            }
        }
    } else {
        TlsVerify::None
    };
    let implicit = (cfg.relay_tls == RelayTls::Implicit).then_some(&verify);
    let c = Client::connect_addr(addr, &host, implicit, Dialect::Smtp, helo, timeout)
        .await
        .map_err(OpenError::Next)?;
    let mut c = match cfg.relay_tls {
        RelayTls::Require if !c.has("STARTTLS") => {
            c.quit().await;
            tracing::warn!(%relay, "the smarthost does not offer STARTTLS (mta.relay_tls = require)");
            return Err(OpenError::Stop(Outcome::Temporary(
                "451 4.7.4 the smarthost does not offer STARTTLS".into(),
            )));
        }
        RelayTls::Require => c.starttls(&host, &verify).await.map_err(OpenError::Stop)?,
        RelayTls::Opportunistic if c.has("STARTTLS") => c
            .starttls(&host, &TlsVerify::None)
            .await
            .map_err(OpenError::Stop)?,
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
            && matches!(cfg.relay_tls, RelayTls::Require | RelayTls::Implicit);
        if !verified && !addr.ip().is_loopback() {
            c.quit().await;
            tracing::error!(%relay, tls = cfg.relay_tls.name(), "not sending the smarthost password: the relay's certificate was not verified");
            return Err(OpenError::Stop(Outcome::Temporary(
                "451 4.7.0 smarthost not authenticated; credentials withheld".into(),
            )));
        }
        let path = config.data_path(&cfg.relay_password_file, "");
        let password = match std::fs::read_to_string(&path) {
            Ok(p) => p.lines().next().unwrap_or("").to_string(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read mta.relay_password_file");
                return Err(OpenError::Stop(Outcome::Temporary(
                    "451 4.3.0 smarthost password unavailable".into(),
                )));
            }
        };
        if let Err(o) = c.auth_plain(&cfg.relay_user, &password).await {
            tracing::warn!(%relay, reason = ?o, "smarthost refused our credentials");
            // A refused login is our configuration, not the
            // recipients' fault: keep the mail.
            return Err(OpenError::Stop(match o {
                Outcome::Permanent(t) => Outcome::Temporary(t),
                o => o,
            }));
        }
    }
    Ok(c)
}
