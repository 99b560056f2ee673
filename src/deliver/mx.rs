//! Delivery to the Internet: MX lookup (RFC 5321 5.1), null MX (RFC 7505),
//! opportunistic or required STARTTLS per domain, a concurrency limit and
//! a small pool of idle connections per destination (`deliver::pool`).
//!
//! Order of hosts: MX records by preference, random among equal
//! preferences; no MX record (NODATA) means the domain itself (the
//! implicit MX, its A/AAAA records). Each host's addresses are tried in
//! order; a connection error or a 4xx/5xx at the greeting or EHLO moves
//! to the next address/host. Once a transaction has started its replies
//! decide: 4xx retry later, 5xx bounce for that recipient.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use rand::seq::SliceRandom;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::client::{mail_params, relayed, Client, Dialect, RcptParams, TlsVerify};
use super::mta_sts::{self, MtaSts};
use super::pool::{reap, Pool};
use super::tlsrpt::Failure;
use super::{Envelope, Outcome};
use crate::config::Config;
use crate::dns::{LookupError, Resolver};

/// One mail exchanger of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Host name, or an address literal's address.
    pub name: String,
    pub preference: u16,
}

/// Why a domain has no host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// RFC 7505: the domain accepts no mail.
    NullMx,
    /// NXDOMAIN: the domain does not exist.
    NoSuchDomain,
    /// DNS failed (timeout, SERVFAIL): try later.
    Temporary(String),
}

/// The MX side of the process's resolver (`crate::dns`).
pub struct MxResolver {
    resolver: Arc<Resolver>,
}

impl MxResolver {
    pub fn new(resolver: Arc<Resolver>) -> MxResolver {
        MxResolver { resolver }
    }

    /// The hosts to try for a domain, in order.
    pub async fn route(&self, domain: &str) -> Result<Vec<MxHost>, RouteError> {
        if let Some(lit) = address_literal(domain) {
            return Ok(vec![MxHost {
                name: lit.to_string(),
                preference: 0,
            }]);
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.hickory().mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut hosts: Vec<(u16, String, bool)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((
                            mx.preference,
                            mx.exchange.to_ascii().trim_end_matches('.').to_lowercase(),
                            mx.exchange.is_root(),
                        )),
                        _ => None,
                    })
                    .collect();
                if hosts.is_empty() {
                    return Ok(implicit(domain));
                }
                Ok(order(&mut hosts)?)
            }
            Err(e) if e.is_nx_domain() => Err(RouteError::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Ok(implicit(domain)),
            Err(e) => Err(RouteError::Temporary(e.to_string())),
        }
    }

    /// Addresses of one host. `Err(true)`: the host does not exist.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, (bool, String)> {
        // Exchanger names are absolute (RFC 5321 5.1): no search domains.
        let fqdn = if host.parse::<IpAddr>().is_ok() {
            host.to_string()
        } else {
            format!("{}.", host.trim_end_matches('.'))
        };
        self.resolver.addresses(&fqdn).await.map_err(|e| match e {
            LookupError::NoSuchName(e) => (true, e),
            LookupError::Temporary(e) => (false, e),
        })
    }
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
    inner.parse().ok()
}

fn implicit(domain: &str) -> Vec<MxHost> {
    vec![MxHost {
        name: domain.trim_end_matches('.').to_lowercase(),
        preference: 0,
    }]
}

/// Sorts MX records by preference, shuffling equal ones; a lone "." is a
/// null MX (RFC 7505 3); a "." among real hosts is ignored.
fn order(hosts: &mut [(u16, String, bool)]) -> Result<Vec<MxHost>, RouteError> {
    if hosts.iter().all(|h| h.2) {
        return Err(RouteError::NullMx);
    }
    hosts.shuffle(&mut rand::thread_rng());
    hosts.sort_by_key(|h| h.0);
    Ok(hosts
        .iter()
        .filter(|h| !h.2)
        .map(|h| MxHost {
            name: h.1.clone(),
            preference: h.0,
        })
        .collect())
}

/// The TLS policy of a destination domain (`mta.tls_policy`, typed at load).
pub use crate::config::TlsPolicy;

impl TlsPolicy {
    pub fn for_domain(config: &Config, domain: &str) -> TlsPolicy {
        config
            .mta
            .tls_policy
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(domain))
            .map_or(TlsPolicy::Opportunistic, |(_, p)| *p)
    }
}

/// Idle connections to MX hosts by (address, MX name, TLS policy).
type MxKey = (SocketAddr, String, TlsPolicy);

/// Idle connections kept per MX host address.
const MX_POOL: usize = 4;

/// Delivery to MX hosts: the resolver, per-domain limits, the pool.
pub struct MxDelivery {
    config: Arc<Config>,
    resolver: MxResolver,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Idle connections (`deliver::pool`), at most `MX_POOL` per key,
    /// for `mta.connection_idle` seconds.
    pool: Arc<Pool<MxKey, Client>>,
    roots: Option<Arc<rustls::RootCertStore>>,
    /// MTA-STS (`[mta_sts] enabled`), `deliver::mta_sts`.
    sts: Option<Arc<MtaSts>>,
}

impl MxDelivery {
    /// With a resolver of its own built from `[dns]` (tests, tools).
    pub fn new(config: Arc<Config>) -> anyhow::Result<Arc<MxDelivery>> {
        let resolver = Arc::new(Resolver::from_config(&config)?);
        Ok(MxDelivery::with_resolver(config, resolver))
    }

    /// With the process's resolver (`Services::resolver`).
    pub fn with_resolver(config: Arc<Config>, resolver: Arc<Resolver>) -> Arc<MxDelivery> {
        let roots = super::client::load_roots(&config.mta.tls_ca_file).ok();
        let pool = Arc::new(Pool::new(
            MX_POOL,
            Duration::from_secs(config.mta.connection_idle),
        ));
        let sts = MtaSts::from_config(&config, resolver.clone());
        let d = Arc::new(MxDelivery {
            sts,
            resolver: MxResolver::new(resolver),
            config,
            limits: Mutex::new(HashMap::new()),
            pool,
            roots,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&d.pool)));
            if let Some(s) = &d.sts {
                rt.spawn(MtaSts::flush_reports(Arc::downgrade(s)));
            }
        }
        d
    }

    fn limit(&self, domain: &str) -> Arc<Semaphore> {
        let mut m = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.mta.max_per_domain.max(1))))
            .clone()
    }

    /// Delivers one message to the recipients `rcpts` (index, parameters)
    /// of one domain, in one transaction.
    pub async fn deliver(
        &self,
        domain: &str,
        env: &Envelope,
        rcpts: &[(usize, RcptParams)],
        data: &[u8],
    ) -> Vec<(usize, Outcome)> {
        let all = |o: Outcome| rcpts.iter().map(|(i, _)| (*i, o.clone())).collect();
        let _permit = match self.limit(domain).acquire_owned().await {
            Ok(p) => p,
            Err(_) => return all(Outcome::Temporary("451 4.3.0 shutting down".into())),
        };
        let hosts = match self.resolver.route(domain).await {
            Ok(h) => h,
            Err(RouteError::NullMx) => {
                info!(domain, "null MX: the domain accepts no mail");
                return all(Outcome::Permanent(format!(
                    "556 5.1.10 Recipient address rejected: {domain} accepts no mail (null MX)"
                )));
            }
            Err(RouteError::NoSuchDomain) => {
                info!(domain, "domain does not exist");
                return all(Outcome::Permanent(format!(
                    "550 5.1.2 Recipient address rejected: domain {domain} does not exist"
                )));
            }
            Err(RouteError::Temporary(e)) => {
                warn!(domain, error = %e, "MX lookup failed");
                return all(Outcome::Temporary(format!(
                    "451 4.4.3 DNS lookup for {domain} failed"
                )));
            }
        };
        let mut policy = TlsPolicy::for_domain(&self.config, domain);
        // MTA-STS (RFC 8461), unless `mta.tls_policy` names the domain:
        // the operator's explicit choice wins.
        let explicit = self
            .config
            .mta
            .tls_policy
            .keys()
            .any(|d| d.eq_ignore_ascii_case(domain));
        let sts = match &self.sts {
            Some(s) if !explicit && address_literal(domain).is_none() => s.policy(domain).await,
            _ => None,
        };
        let mut hosts = hosts;
        let mut sts_roots = None;
        let mut testing = None;
        match &sts {
            Some(p) if p.mode == mta_sts::Mode::Enforce => {
                for h in hosts.iter().filter(|h| !p.allows(&h.name)) {
                    self.sts_report(domain, p, Err((Failure::ValidationFailure, &h.name)));
                }
                hosts.retain(|h| p.allows(&h.name));
                if hosts.is_empty() {
                    warn!(domain, "MTA-STS: no MX host matches the enforced policy");
                    return all(Outcome::Temporary(format!(
                        "451 4.7.5 no MX host of {domain} matches its MTA-STS policy"
                    )));
                }
                policy = TlsPolicy::Verify;
                sts_roots = self.sts.as_ref().map(|s| s.roots());
            }
            Some(p) if p.mode == mta_sts::Mode::Testing => testing = Some(p),
            _ => {}
        }
        let timeout = Duration::from_secs(self.config.mta.delivery_timeout.max(1));
        let helo = self.config.server.hostname.clone();
        let port = self.config.mta.smtp_port;
        let mut last_error = format!("451 4.4.4 no MX host of {domain} could be reached");
        let mut hosts_missing = 0;
        for host in &hosts {
            let ips = match self.resolver.addresses(&host.name).await {
                Ok(ips) if !ips.is_empty() => ips,
                Ok(_) | Err((true, _)) => {
                    hosts_missing += 1;
                    last_error = format!("451 4.4.4 MX host {} has no address", host.name);
                    continue;
                }
                Err((false, e)) => {
                    info!(domain, mx = %host.name, error = %e, "MX host address lookup failed");
                    last_error = format!("451 4.4.3 lookup of {} failed", host.name);
                    continue;
                }
            };
            for ip in ips {
                let addr = SocketAddr::new(ip, port);
                let key = (addr, host.name.clone(), policy);
                let reused = match self.pool.take(&key) {
                    Some(mut c) => c.reset().await.then_some(c),
                    None => None,
                };
                crate::metrics::pool_take(reused.is_some());
                if let Some(p) = testing.filter(|_| reused.is_none()) {
                    self.sts_test(domain, p, addr, &host.name, &helo, timeout)
                        .await;
                }
                let client = match reused {
                    Some(c) => c,
                    None => match self
                        .open(addr, &host.name, policy, sts_roots.clone(), &helo, timeout)
                        .await
                    {
                        Ok(c) => {
                            if let Some(p) = sts.as_ref().filter(|_| sts_roots.is_some()) {
                                self.sts_report(domain, p, Ok(()));
                            }
                            c
                        }
                        Err(e) => {
                            if let Some(p) = sts.as_ref().filter(|_| sts_roots.is_some()) {
                                if e.contains(" 4.7.") {
                                    let f = Failure::from_error(&e);
                                    self.sts_report(domain, p, Err((f, &host.name)));
                                }
                            }
                            info!(domain, mx = %host.name, %addr, error = %e, "MX host unusable; trying the next");
                            last_error = e;
                            continue;
                        }
                    },
                };
                return self.transact(key, client, env, rcpts, data).await;
            }
        }
        if hosts_missing == hosts.len() {
            // Every exchanger name is missing from the DNS: the domain's
            // mail cannot be routed (RFC 3463 5.4.4).
            return all(Outcome::Permanent(format!(
                "550 5.4.4 no usable mail exchanger for {domain}"
            )));
        }
        all(Outcome::Temporary(last_error))
    }

    /// Counts a session for TLS-RPT (`deliver::tlsrpt`).
    fn sts_report(&self, domain: &str, p: &mta_sts::Policy, r: Result<(), (Failure, &str)>) {
        if let Some(s) = &self.sts {
            s.report(domain, p, r);
        }
    }

    /// MTA-STS `testing` mode (RFC 8461 5): what enforcing would have
    /// said about this host, logged; delivery then goes on as usual.
    async fn sts_test(
        &self,
        domain: &str,
        p: &mta_sts::Policy,
        addr: SocketAddr,
        mx: &str,
        helo: &str,
        timeout: Duration,
    ) {
        if !p.allows(mx) {
            self.sts_report(domain, p, Err((Failure::ValidationFailure, mx)));
            warn!(
                domain,
                mx, "MTA-STS testing: this MX host is not in the policy (enforce would defer)"
            );
            return;
        }
        let roots = self.sts.as_ref().map(|s| s.roots());
        match self
            .open(addr, mx, TlsPolicy::Verify, roots, helo, timeout)
            .await
        {
            Ok(c) => {
                self.sts_report(domain, p, Ok(()));
                c.quit().await
            }
            Err(e) => {
                if e.contains(" 4.7.") {
                    self.sts_report(domain, p, Err((Failure::from_error(&e), mx)));
                }
                warn!(domain, mx, error = %e, "MTA-STS testing: TLS check failed (enforce would defer)")
            }
        }
    }

    /// Connects, says EHLO and applies the TLS policy. `roots` replaces
    /// `mta.tls_ca_file`'s for `verify` (MTA-STS).
    async fn open(
        &self,
        addr: SocketAddr,
        mx: &str,
        policy: TlsPolicy,
        roots: Option<Arc<rustls::RootCertStore>>,
        helo: &str,
        timeout: Duration,
    ) -> Result<Client, String> {
        let c = Client::connect_addr(addr, mx, None, Dialect::Smtp, helo, timeout)
            .await
            .map_err(outcome_text)?;
        let offered = c.has("STARTTLS");
        match policy {
            TlsPolicy::None => Ok(c),
            TlsPolicy::Opportunistic if !offered => Ok(c),
            TlsPolicy::Require | TlsPolicy::Verify if !offered => {
                c.quit().await;
                Err(format!(
                    "451 4.7.4 TLS is required for this domain but {mx} does not offer STARTTLS"
                ))
            }
            _ => {
                let verify = match policy {
                    TlsPolicy::Verify => match roots.as_ref().or(self.roots.as_ref()) {
                        Some(r) => TlsVerify::Roots(r.clone()),
                        None => return Err("451 4.7.5 no trust anchors to verify TLS".into()),
                    },
                    _ => TlsVerify::None,
                };
                match c.starttls(mx, &verify).await {
                    Ok(c) => Ok(c),
                    Err(e) if policy == TlsPolicy::Opportunistic => {
                        // A broken TLS stack at the far end: plaintext is
                        // better than no delivery (RFC 7435).
                        debug!(%addr, error = %outcome_text(e), "STARTTLS failed; retrying without TLS");
                        Client::connect_addr(addr, mx, None, Dialect::Smtp, helo, timeout)
                            .await
                            .map_err(outcome_text)
                    }
                    Err(e) => Err(format!(
                        "451 4.7.5 TLS with {mx} failed: {}",
                        outcome_text(e)
                    )),
                }
            }
        }
    }

    async fn transact(
        &self,
        key: MxKey,
        mut client: Client,
        env: &Envelope,
        rcpts: &[(usize, RcptParams)],
        data: &[u8],
    ) -> Vec<(usize, Outcome)> {
        let params = mail_params(env);
        let list: Vec<RcptParams> = rcpts.iter().map(|(_, r)| r.clone()).collect();
        let dsn_passed = client.has("DSN");
        let tls = client.tls;
        match client.send_with(&params, &list, data).await {
            Ok(res) => {
                info!(mx = %key.1, addr = %key.0, tls, rcpts = rcpts.len(), "MX transaction done");
                self.pool.release(key, client).await;
                rcpts
                    .iter()
                    .zip(res)
                    .map(|((i, _), o)| (*i, relayed(o, dsn_passed)))
                    .collect()
            }
            Err(o) => rcpts.iter().map(|(i, _)| (*i, o.clone())).collect(),
        }
    }
}

/// The RCPT parameters of a queued recipient.
pub fn rcpt_params(env: &Envelope, i: usize) -> RcptParams {
    let r = &env.recipients[i];
    RcptParams {
        address: r.address.clone(),
        notify: Some(r.notify),
        orcpt: r.orcpt.clone(),
        delivery_id: None,
    }
}

fn outcome_text(o: Outcome) -> String {
    o.text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5321_5_1_mx_order_by_preference() {
        let mut h = vec![
            (20, "b".to_string(), false),
            (10, "a".to_string(), false),
            (20, "c".to_string(), false),
        ];
        let mut seen_c_first = false;
        for _ in 0..50 {
            let o = order(&mut h).unwrap();
            assert_eq!(o[0].name, "a");
            assert_eq!(o.len(), 3);
            seen_c_first |= o[1].name == "c";
        }
        assert!(seen_c_first, "equal preferences are shuffled");
    }

    #[test]
    fn rfc7505_null_mx() {
        assert_eq!(
            order(&mut [(0, String::new(), true)]),
            Err(RouteError::NullMx)
        );
        // A "." among real exchangers is ignored.
        let o = order(&mut [(0, String::new(), true), (10, "mx".into(), false)]).unwrap();
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(address_literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(address_literal("example.com"), None);
    }

    #[test]
    fn tls_policy_per_domain() {
        let mut c = Config::default();
        c.mta
            .tls_policy
            .insert("Secure.example".into(), TlsPolicy::Require);
        assert_eq!(
            TlsPolicy::for_domain(&c, "secure.example"),
            TlsPolicy::Require
        );
        assert_eq!(
            TlsPolicy::for_domain(&c, "other.example"),
            TlsPolicy::Opportunistic
        );
    }
}
