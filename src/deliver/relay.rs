//! An MTA over SMTP: the smarthost (`mta.relay`), with TLS as
//! `mta.relay_tls` says and AUTH PLAIN when `mta.relay_user` is set.
//! A 250 is relaying (`Outcome::Relayed`): the smarthost reports from
//! then on.

use std::time::Duration;

use super::client::{load_roots, mail_params, relayed, Client, Dialect, RcptParams, TlsVerify};
use super::{Envelope, Outcome};
use crate::config::{Config, RelayTls};

/// One transaction to the smarthost: TLS as `mta.relay_tls` says,
/// AUTH PLAIN when `mta.relay_user` is set.
pub async fn deliver(
    config: &Config,
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
    let timeout = Duration::from_secs(cfg.delivery_timeout.max(1));
    let helo = &config.server.hostname;
    let host = cfg
        .relay
        .rsplit_once(':')
        .map_or(cfg.relay.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(&cfg.relay).await {
        Ok(a) => a.collect(),
        Err(e) => {
            tracing::warn!(relay = %cfg.relay, error = %e, "cannot resolve the smarthost");
            return all(Outcome::Temporary(
                "451 4.4.3 smarthost address lookup failed".into(),
            ));
        }
    };
    let verify = if cfg.relay_tls_verify {
        match load_roots(&cfg.tls_ca_file) {
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
        let implicit = (cfg.relay_tls == RelayTls::Implicit).then_some(&verify);
        let c =
            match Client::connect_addr(addr, &host, implicit, Dialect::Smtp, helo, timeout).await {
                Ok(c) => c,
                Err(o) => {
                    last = o;
                    continue;
                }
            };
        let mut c = match cfg.relay_tls {
            RelayTls::Require if !c.has("STARTTLS") => {
                c.quit().await;
                tracing::warn!(relay = %cfg.relay, "the smarthost does not offer STARTTLS (mta.relay_tls = require)");
                return all(Outcome::Temporary(
                    "451 4.7.4 the smarthost does not offer STARTTLS".into(),
                ));
            }
            RelayTls::Require => match c.starttls(&host, &verify).await {
                Ok(c) => c,
                Err(o) => return all(o),
            },
            RelayTls::Opportunistic if c.has("STARTTLS") => {
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
                && matches!(cfg.relay_tls, RelayTls::Require | RelayTls::Implicit);
            if !verified && !addr.ip().is_loopback() {
                c.quit().await;
                tracing::error!(relay = %cfg.relay, tls = cfg.relay_tls.name(), "not sending the smarthost password: the relay's certificate was not verified");
                return all(Outcome::Temporary(
                    "451 4.7.0 smarthost not authenticated; credentials withheld".into(),
                ));
            }
            let path = config.data_path(&cfg.relay_password_file, "");
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
                tracing::warn!(relay = %cfg.relay, reason = ?o, "smarthost refused our credentials");
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

/// True when the smarthost (`host:port`, `[v6]:port`) is a loopback
/// address or `localhost`: credentials may go there without TLS.
pub fn relay_is_loopback(relay: &str) -> bool {
    let host = match relay.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => relay,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `mta.relay_user` is set: the relay settings must make sure the
/// password goes only to a relay that proved its name (a certificate
/// verified for it), or over loopback. An error message otherwise.
pub fn relay_credentials_error(cfg: &crate::config::MtaConfig) -> Option<String> {
    if cfg.relay_user.is_empty() || relay_is_loopback(&cfg.relay) {
        return None;
    }
    let verified =
        cfg.relay_tls_verify && matches!(cfg.relay_tls, RelayTls::Require | RelayTls::Implicit);
    (!verified).then(|| {
        format!(
            "mta.relay_user: the smarthost password would be sent without a verified TLS certificate \
             (mta.relay_tls = \"{}\", mta.relay_tls_verify = {}); set relay_tls = \"require\" or \"implicit\" \
             with relay_tls_verify = true, or use a loopback relay",
            cfg.relay_tls.name(), cfg.relay_tls_verify
        )
    })
}

#[cfg(test)]
mod relay_tests {
    use super::*;
    use crate::config::{MtaConfig, RelayTls};

    fn mta(relay: &str, tls: RelayTls, verify: bool) -> MtaConfig {
        MtaConfig {
            relay: relay.into(),
            relay_user: "me".into(),
            relay_tls: tls,
            relay_tls_verify: verify,
            ..MtaConfig::default()
        }
    }

    #[test]
    fn relay_credentials_need_a_verified_certificate_or_loopback() {
        for (relay, tls, verify, ok) in [
            ("smtp.example.net:587", RelayTls::Opportunistic, true, false),
            ("smtp.example.net:587", RelayTls::None, true, false),
            ("smtp.example.net:587", RelayTls::Require, false, false),
            ("smtp.example.net:465", RelayTls::Implicit, false, false),
            ("smtp.example.net:587", RelayTls::Require, true, true),
            ("smtp.example.net:465", RelayTls::Implicit, true, true),
            ("127.0.0.1:2525", RelayTls::Opportunistic, true, true),
            ("[::1]:25", RelayTls::None, false, true),
            ("localhost:25", RelayTls::None, false, true),
        ] {
            let e = relay_credentials_error(&mta(relay, tls, verify));
            assert_eq!(e.is_none(), ok, "{relay} {tls:?} {verify}: {e:?}");
            if let Some(e) = e {
                assert!(e.starts_with("mta.relay_user:"), "{e}");
            }
        }
        // No user: nothing to protect.
        let mut c = mta("smtp.example.net:587", RelayTls::Opportunistic, false);
        c.relay_user.clear();
        assert!(relay_credentials_error(&c).is_none());
    }
}
