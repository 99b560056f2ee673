//! SMTP AUTH for submission (RFC 4954): the SASL PLAIN (RFC 4616) and
//! LOGIN decoders, trusted client networks, and the in-memory limiter of
//! failed attempts per client address and per login.
//!
//! Passwords and AUTH data are never logged: the decoders return them to
//! the driver, which hands them to the directory and drops them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;

/// Decodes a base64 SASL response line. `*` (cancel) and bad base64 give
/// `None`; `=` is the empty initial response (RFC 4954 4).
pub fn decode_b64(line: &str) -> Option<Vec<u8>> {
    let line = line.trim();
    if line == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(line).ok()
}

/// Splits a PLAIN response `authzid NUL authcid NUL passwd` (RFC 4616 2).
/// An authzid other than the authcid is refused (no proxy logins).
pub fn parse_plain(raw: &[u8]) -> Option<(String, String)> {
    let mut parts = raw.split(|b| *b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let passwd = parts.next()?;
    if parts.next().is_some() || authcid.is_empty() {
        return None;
    }
    let authcid = std::str::from_utf8(authcid).ok()?.to_string();
    let passwd = std::str::from_utf8(passwd).ok()?.to_string();
    if !authzid.is_empty() {
        let z = std::str::from_utf8(authzid).ok()?;
        if !z.eq_ignore_ascii_case(&authcid) {
            return None;
        }
    }
    Some((authcid, passwd))
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
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

/// Parses `10.0.0.0/8`, `::1/128` or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (a, p) = match s.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s.trim(), None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
        None => max,
    };
    Some(Cidr { addr, prefix })
}

/// Is `ip` inside one of these networks (config strings; bad ones are
/// skipped, check-config reports them)?
pub fn is_trusted(networks: &[String], ip: IpAddr) -> bool {
    networks
        .iter()
        .filter_map(|n| parse_cidr(n))
        .any(|c| c.contains(ip))
}

/// Failed authentications per client address and per login, over a
/// sliding window. In memory: a restart forgets, which is fine for a
/// brake on password guessing.
pub struct Limiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

/// The process-wide limiter shared by every submission listener (like the
/// listener's connection table, it is state of the process, not of a
/// session).
pub fn limiter() -> &'static Limiter {
    static L: OnceLock<Limiter> = OnceLock::new();
    L.get_or_init(|| Limiter {
        failures: Mutex::new(HashMap::new()),
    })
}

impl Limiter {
    fn key_ip(ip: IpAddr) -> String {
        format!("ip:{ip}")
    }

    fn key_login(login: &str) -> String {
        format!("login:{}", login.to_lowercase())
    }

    fn count(&self, key: &str, window: Duration) -> usize {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match m.get_mut(key) {
            Some(v) => {
                v.retain(|t| now.duration_since(*t) < window);
                let n = v.len();
                if n == 0 {
                    m.remove(key);
                }
                n
            }
            None => 0,
        }
    }

    /// True when this address or this login has failed too often lately.
    pub fn blocked(&self, ip: IpAddr, login: &str, limit: u32, window: Duration) -> bool {
        let limit = limit.max(1) as usize;
        self.count(&Self::key_ip(ip), window) >= limit
            || self.count(&Self::key_login(login), window) >= limit
    }

    pub fn failed(&self, ip: IpAddr, login: &str) {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            // Bounded memory under a spray of logins: forget the oldest state.
            m.clear();
        }
        let now = Instant::now();
        for k in [Self::key_ip(ip), Self::key_login(login)] {
            let v = m.entry(k).or_default();
            if v.len() < 1000 {
                v.push(now);
            }
        }
    }
}

/// The delay before answering the n-th failure of a connection: 1 s,
/// 2 s, 4 s, capped at 8 s.
pub fn failure_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4616_plain_message_forms() {
        assert_eq!(
            parse_plain(b"\0tim\0tanstaaftanstaaf"),
            Some(("tim".into(), "tanstaaftanstaaf".into()))
        );
        assert_eq!(
            parse_plain(b"Tim\0tim\0pw"),
            Some(("tim".into(), "pw".into()))
        );
        // authzid differing from authcid: no proxy authorization.
        assert_eq!(parse_plain(b"other\0tim\0pw"), None);
        assert_eq!(parse_plain(b"\0\0pw"), None);
        assert_eq!(parse_plain(b"tim pw"), None);
        assert_eq!(parse_plain(b"\0a\0b\0c"), None);
    }

    #[test]
    fn rfc4954_4_base64_responses() {
        assert_eq!(decode_b64("="), Some(Vec::new()));
        assert_eq!(
            decode_b64("AHRpbQB0YW5zdGFhZg=="),
            Some(b"\0tim\0tanstaaf".to_vec())
        );
        assert_eq!(decode_b64("*"), None);
        assert_eq!(decode_b64("not base64!"), None);
    }

    #[test]
    fn cidr_matching() {
        let n = parse_cidr("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(parse_cidr("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(parse_cidr("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nonsense").is_none());
        assert!(is_trusted(
            &["bad".into(), "192.0.2.0/24".into()],
            "192.0.2.9".parse().unwrap()
        ));
    }

    #[test]
    fn limiter_blocks_per_address_and_per_login() {
        let l = Limiter {
            failures: Mutex::new(HashMap::new()),
        };
        let w = Duration::from_secs(60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.blocked(a, "x@y", 3, w));
            l.failed(a, "x@y");
        }
        assert!(l.blocked(a, "other@y", 3, w), "address blocked");
        assert!(l.blocked(b, "X@Y", 3, w), "login blocked from anywhere");
        assert!(!l.blocked(b, "z@y", 3, w));
        assert!(!l.blocked(a, "x@y", 3, Duration::ZERO), "window passed");
    }

    #[test]
    fn failure_delay_grows_and_caps() {
        assert_eq!(failure_delay(1), Duration::from_secs(1));
        assert_eq!(failure_delay(2), Duration::from_secs(2));
        assert_eq!(failure_delay(3), Duration::from_secs(4));
        assert_eq!(failure_delay(9), Duration::from_secs(8));
    }
}
