//! The one DNS resolver of a process (hickory), held in `Services`: every
//! name msgd looks up goes through it — MX records and exchanger
//! addresses (`deliver::mx`), a store's LMTP address by mailHost
//! (`deliver::lmtp`), the smarthost (`deliver::relay`) and the mmp's
//! backends (`mmp::backend`).
//!
//! Built once per process from `[dns] nameservers` (each `ip:port`), else
//! from the system configuration (/etc/resolv.conf). Either way
//! /etc/hosts is read first, so `localhost` and names an operator pinned
//! there keep working; an IP address is used as it is, without a query.
//!
//! Invariant: nothing else in msgd calls the system resolver
//! (`tokio::net::lookup_host`, `ToSocketAddrs` on a name): a site whose
//! internal names live on the configured DNS server reaches its stores
//! by those names.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::Config;

/// Seconds one query may take when `dns.timeout` is 0.
const DEFAULT_TIMEOUT: u64 = 5;

/// Why a name has no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN or no A/AAAA record: the name does not exist.
    NoSuchName(String),
    /// Timeout, SERVFAIL, no server answered: try later.
    Temporary(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NoSuchName(e) => write!(f, "no such name: {e}"),
            LookupError::Temporary(e) => write!(f, "lookup failed: {e}"),
        }
    }
}

/// The process's resolver. Cheap to share (`Arc<Resolver>` in `Services`);
/// hickory caches answers by their TTL inside.
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// `[dns] nameservers` (ip:port), else the system's resolv.conf. A
    /// system without a usable resolv.conf gets a resolver that knows
    /// only /etc/hosts and IP addresses (logged), so a single host
    /// without DNS still runs.
    pub fn from_config(config: &Config) -> anyhow::Result<Resolver> {
        let timeout = Duration::from_secs(if config.dns.timeout == 0 {
            DEFAULT_TIMEOUT
        } else {
            config.dns.timeout
        });
        let provider = TokioRuntimeProvider::default();
        let servers: Vec<NameServerConfig> = config
            .dns
            .nameservers
            .iter()
            .map(|n| {
                let sa = n.0;
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder(provider.clone()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "no system DNS configuration; only /etc/hosts and IP addresses resolve (set [dns] nameservers)");
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(Vec::new()),
                        provider,
                    )
                }
            }
        } else {
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        Ok(Resolver {
            inner: builder.build()?,
        })
    }

    /// The hickory resolver, for record types other than addresses (MX).
    pub fn hickory(&self) -> &TokioResolver {
        &self.inner
    }

    /// The addresses of `host` (a name, or an IP address used as it is;
    /// IPv6 with or without brackets).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // As written: a short store name ("store1") gets the search
        // domains of resolv.conf, as the system resolver gave it; a name
        // with a trailing dot is absolute.
        match self.inner.lookup_ip(host).await {
            Ok(l) => {
                let ips: Vec<IpAddr> = l.iter().collect();
                if ips.is_empty() {
                    Err(LookupError::NoSuchName(host.to_string()))
                } else {
                    Ok(ips)
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                Err(LookupError::NoSuchName(e.to_string()))
            }
            Err(e) => Err(LookupError::Temporary(e.to_string())),
        }
    }

    /// `host`'s addresses with `port`, in the resolver's order.
    pub async fn socket_addrs(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, LookupError> {
        Ok(self
            .addresses(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// `host:port` or `[v6]:port` split and resolved.
    pub async fn resolve_pair(&self, addr: &str) -> Result<Vec<SocketAddr>, LookupError> {
        if let Ok(sa) = addr.parse::<SocketAddr>() {
            return Ok(vec![sa]);
        }
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| LookupError::NoSuchName(format!("{addr}: not host:port")))?;
        self.socket_addrs(host, port).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(edit: impl FnOnce(&mut Config)) -> Resolver {
        let mut c = Config::default();
        edit(&mut c);
        Resolver::from_config(&c).expect("resolver")
    }

    #[tokio::test]
    async fn ip_addresses_are_used_without_a_query() {
        // A name server where nothing answers: a query would fail.
        let r = resolver(|c| {
            c.dns.nameservers = vec!["127.0.0.1:9".parse().unwrap()];
            c.dns.timeout = 1;
        });
        assert_eq!(
            r.resolve_pair("10.0.0.5:24").await.unwrap(),
            vec!["10.0.0.5:24".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            r.resolve_pair("[::1]:24").await.unwrap(),
            vec!["[::1]:24".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            r.addresses("[::1]").await.unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[tokio::test]
    async fn hosts_file_answers_before_the_name_servers() {
        let r = resolver(|c| {
            c.dns.nameservers = vec!["127.0.0.1:9".parse().unwrap()];
            c.dns.timeout = 1;
        });
        let ips = r
            .addresses("localhost")
            .await
            .expect("localhost from /etc/hosts");
        assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
    }

    #[tokio::test]
    async fn unanswered_query_is_temporary() {
        let r = resolver(|c| {
            c.dns.nameservers = vec!["127.0.0.1:9".parse().unwrap()];
            c.dns.timeout = 1;
        });
        match r.addresses("store1.internal.test").await {
            Err(LookupError::Temporary(_)) => {}
            other => panic!("expected a temporary failure, got {other:?}"),
        }
        assert!(matches!(
            r.resolve_pair("nonsense").await,
            Err(LookupError::NoSuchName(_))
        ));
    }
}
