//! Typed network values of the configuration: networks (CIDR), host names,
//! `host:port` pairs and name server addresses. Parsed once, when the
//! configuration loads; no protocol module parses these strings again.
//!
//! Invariants:
//! - This module sits at the bottom of the import graph: it uses only std
//!   and serde (`config` builds on it; every protocol module may use it).
//! - Every type serialises back to the text it was parsed from (modulo
//!   spacing), so a configuration round-trips.
//! - Parsers are bounded by their input and never allocate more than it;
//!   an error quotes at most [`QUOTE_MAX`] characters of the value, so a
//!   hostile 1 MB value gives a short error.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Characters of a bad value quoted in an error message.
pub const QUOTE_MAX: usize = 64;

/// The value, cut to [`QUOTE_MAX`] characters, for an error message.
pub fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(QUOTE_MAX).collect::<String>())
    }
}

/// Implements serde for a type with `FromStr` (errors are `String`s) and
/// `Display`: it is written and read as a string, and a bad value's error
/// is the `FromStr` message (figment adds the key and the file).
macro_rules! serde_via_str {
    ($t:ty, $expecting:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
pub(crate) use serde_via_str;

/// Deserializes an optional value written as a string, where the empty
/// string (the old way of saying "the default") is `None`.
pub fn empty_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    if s.is_empty() {
        Ok(None)
    } else {
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `fc00::/7`), or one address
/// (`::1` is `::1/128`). An IPv4-mapped IPv6 client (`::ffff:10.1.2.3`, as
/// a dual-stack socket reports it) is inside the IPv4 networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Is `ip` inside this network?
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Is `ip` inside one of `networks`?
pub fn in_any(networks: &[Network], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let bad = || format!("'{}' is not a network (CIDR, e.g. 10.0.0.0/8)", quote(s));
        let t = s.trim();
        let (a, p) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

serde_via_str!(Network, "a network (CIDR)");

/// A host: a DNS name (letters, digits, `.`, `-`, `_`) or an IP address,
/// without a port. IPv6 addresses are kept without brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

impl Host {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.0.eq_ignore_ascii_case("localhost")
            || self.0.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    fn parse_bare(h: &str) -> Option<Host> {
        if h.parse::<IpAddr>().is_ok() {
            return Some(Host(h.to_string()));
        }
        let name_ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        name_ok.then(|| Host(h.to_string()))
    }
}

impl FromStr for Host {
    type Err = String;

    /// A host name or address; `[v6]` is accepted too. A port is an error.
    fn from_str(s: &str) -> Result<Host, String> {
        match s.parse::<HostPort>() {
            Ok(HostPort { host, port: None }) => Ok(host),
            Ok(_) => Err(format!("'{}' must be a host without port", quote(s))),
            Err(_) => Err(format!("'{}' is not a host name or address", quote(s))),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

serde_via_str!(Host, "a host name or address");

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: Host,
    pub port: Option<u16>,
}

impl HostPort {
    /// The host and this port, or `default` when none was given.
    pub fn with_default_port(&self, default: u16) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port: self.port.unwrap_or(default),
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPort, String> {
        let bad = || format!("'{}' is not host or host:port", quote(s));
        let t = s.trim();
        if let Some(rest) = t.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            h.parse::<Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(bad)?,
                ),
            };
            return Ok(HostPort {
                host: Host(h.to_string()),
                port,
            });
        }
        if t.parse::<IpAddr>().is_ok() {
            return Ok(HostPort {
                host: Host(t.to_string()),
                port: None,
            });
        }
        match t.rsplit_once(':') {
            Some((h, p)) => {
                let host = Host::parse_bare(h).filter(|_| !h.contains(':'));
                Ok(HostPort {
                    host: host.ok_or_else(bad)?,
                    port: Some(p.parse().map_err(|_| bad())?),
                })
            }
            None => Ok(HostPort {
                host: Host::parse_bare(t).ok_or_else(bad)?,
                port: None,
            }),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.port {
            Some(p) => Endpoint {
                host: self.host.clone(),
                port: p,
            }
            .fmt(f),
            None if self.host.0.contains(':') => write!(f, "[{}]", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

serde_via_str!(HostPort, "host or host:port");

/// `host:port` (or `[v6]:port`): a host and a port, both required.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

impl Endpoint {
    /// For `tokio::net::lookup_host` and `TcpStream::connect`.
    pub fn pair(&self) -> (&str, u16) {
        (self.host.as_str(), self.port)
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Endpoint, String> {
        match s.parse::<HostPort>() {
            Ok(HostPort {
                host,
                port: Some(port),
            }) => Ok(Endpoint { host, port }),
            _ => Err(format!("'{}' is not host:port", quote(s))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.host.0.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

serde_via_str!(Endpoint, "host:port");

/// A DNS server: `ip:port`, `[v6]:port`, or an address alone (port 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameServer(pub SocketAddr);

impl FromStr for NameServer {
    type Err = String;

    fn from_str(s: &str) -> Result<NameServer, String> {
        let t = s.trim();
        t.parse::<SocketAddr>()
            .or_else(|_| t.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(NameServer)
            .map_err(|_| format!("'{}' is not ip:port", quote(s)))
    }
}

impl fmt::Display for NameServer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

serde_via_str!(NameServer, "ip:port");

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// RFC 4632 3.1 (prefix notation) and RFC 4291 2.3 (IPv6 prefixes).
    #[test]
    fn rfc4632_cidr_prefixes_match_their_addresses() {
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.200.1.2")));
        assert!(!n.contains(ip("11.0.0.1")));
        // A dual-stack socket's IPv4-mapped peer is inside the v4 network.
        assert!(n.contains(ip("::ffff:10.1.2.3")));
        assert!("0.0.0.0/0"
            .parse::<Network>()
            .unwrap()
            .contains(ip("8.8.8.8")));
        assert!(!"0.0.0.0/0"
            .parse::<Network>()
            .unwrap()
            .contains(ip("2001:db8::1")));
        let v6: Network = "fc00::/7".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        // A bare address is a host network.
        assert!("::1".parse::<Network>().unwrap().contains(ip("::1")));
        assert!(!"127.0.0.1"
            .parse::<Network>()
            .unwrap()
            .contains(ip("127.0.0.2")));
        assert_eq!("::1".parse::<Network>().unwrap().to_string(), "::1/128");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "nonsense",
            "",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/-1",
        ] {
            let e = bad.parse::<Network>().unwrap_err();
            assert!(e.contains("is not a network"), "{bad}: {e}");
        }
        assert!(in_any(&[n, v6], ip("fd00::2")));
        assert!(!in_any(&[], ip("10.0.0.1")));
    }

    #[test]
    fn host_port_forms() {
        let hp = |s: &str| s.parse::<HostPort>().map(|h| (h.host.0, h.port));
        assert_eq!(hp("store1"), Ok(("store1".into(), None)));
        assert_eq!(hp("10.0.0.5:1143"), Ok(("10.0.0.5".into(), Some(1143))));
        assert_eq!(hp("::1"), Ok(("::1".into(), None)));
        assert_eq!(hp("[::1]:143"), Ok(("::1".into(), Some(143))));
        assert_eq!(hp("[::1]"), Ok(("::1".into(), None)));
        for bad in [
            "a:b:c",
            "host:99999",
            "bad host",
            "",
            "[::1]x",
            "[x]:1",
            "h:",
        ] {
            assert!(hp(bad).is_err(), "{bad}");
        }
        assert_eq!(
            "[::1]:143".parse::<HostPort>().unwrap().to_string(),
            "[::1]:143"
        );
        assert_eq!("::1".parse::<HostPort>().unwrap().to_string(), "[::1]");
        assert_eq!(
            "store1".parse::<HostPort>().unwrap().with_default_port(24),
            "store1:24".parse::<Endpoint>().unwrap()
        );
    }

    #[test]
    fn host_refuses_a_port_and_endpoint_needs_one() {
        assert_eq!("store1".parse::<Host>().unwrap().as_str(), "store1");
        assert_eq!("[::1]".parse::<Host>().unwrap().as_str(), "::1");
        let e = "store1:143".parse::<Host>().unwrap_err();
        assert!(e.contains("must be a host without port"), "{e}");
        assert!("bad host".parse::<Host>().is_err());
        let e = "smtp.example.net".parse::<Endpoint>().unwrap_err();
        assert!(e.contains("is not host:port"), "{e}");
        let ep: Endpoint = "[::1]:25".parse().unwrap();
        assert_eq!(ep.pair(), ("::1", 25));
        assert_eq!(ep.to_string(), "[::1]:25");
        assert!(ep.host.is_loopback());
        assert!("localhost:25"
            .parse::<Endpoint>()
            .unwrap()
            .host
            .is_loopback());
        assert!(!"smtp.example.net:25"
            .parse::<Endpoint>()
            .unwrap()
            .host
            .is_loopback());
    }

    #[test]
    fn name_server_defaults_to_port_53() {
        assert_eq!(
            "127.0.0.1".parse::<NameServer>().unwrap().0,
            "127.0.0.1:53".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            "[::1]:5353".parse::<NameServer>().unwrap().0,
            "[::1]:5353".parse::<SocketAddr>().unwrap()
        );
        assert!("ns.example:53".parse::<NameServer>().is_err());
    }

    #[test]
    fn a_hostile_value_is_quoted_short() {
        let long = "x".repeat(1 << 20);
        for e in [
            long.parse::<Network>().unwrap_err(),
            long.parse::<Endpoint>().unwrap_err(),
            format!("{long}:1:2").parse::<HostPort>().unwrap_err(),
            long.parse::<NameServer>().unwrap_err(),
        ] {
            assert!(e.len() < 200, "{}", e.len());
        }
    }
}
