//! SMTP AUTH for submission (RFC 4954): the SASL PLAIN (RFC 4616) and
//! LOGIN decoders and trusted client networks. Failed attempts are limited
//! by the process's `crate::loginlimit::LoginLimiter` (in `Services`).
//!
//! Passwords and AUTH data are never logged: the decoders return them to
//! the driver, which hands them to the directory and drops them.

use std::net::IpAddr;

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
}
