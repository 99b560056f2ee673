//! `[hygiene.dnsbl]`: DNS blocklists and allowlists (src/hygiene/dnsbl.rs).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::netaddr::Network;

/// Longest per-zone `message` (it goes into a reply line).
pub const MAX_MESSAGE: usize = 200;

/// DNS blocklists and allowlists at connect and at MAIL FROM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsblConfig {
    /// Off by default: a site lists its zones first.
    pub enabled: bool,
    /// The lists asked, all at once: `[[hygiene.dnsbl.zones]]`.
    pub zones: Vec<DnsblZone>,
    /// A client (or sender domain) is refused when the weights of the
    /// lists that answered add up to at least this (must be > 0).
    pub threshold: f64,
    /// Milliseconds one lookup may take; a lookup that fails or takes
    /// longer counts 0 (fail-open). 0: 2000.
    pub timeout_ms: u64,
    /// Clients never looked up nor greylisted (a site's partners), CIDR.
    pub allow_networks: Vec<Network>,
    /// Senders whose domain is not looked up: `user@example.org` or
    /// `@example.org` (the whole domain). Envelope senders are forgeable:
    /// this skips the domain lists only.
    pub allow_senders: Vec<String>,
    /// Clients refused at connect without a lookup, CIDR.
    /// `allow_networks` wins over it.
    pub deny_networks: Vec<Network>,
    /// Seconds a list's answer is remembered (shorter when the record's
    /// TTL is shorter). 0: answers are not cached by msgd.
    pub cache_ttl: u64,
    /// Most answers remembered at once.
    pub cache_size: usize,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig {
            enabled: false,
            zones: Vec::new(),
            threshold: 1.0,
            timeout_ms: 2000,
            allow_networks: Vec::new(),
            allow_senders: Vec::new(),
            deny_networks: Vec::new(),
            cache_ttl: 60,
            cache_size: 10_000,
        }
    }
}

/// What a zone lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneKind {
    /// Client addresses (RFC 5782 2.1 and 2.4): `4.3.2.1.zone` for
    /// 1.2.3.4, nibbles for IPv6.
    #[default]
    Ip,
    /// Domain names (RFC 5782 2.3, like a DBL): the MAIL FROM domain.
    Domain,
}

/// One list: `{ zone = "zen.example", weight = 1.0, kind = "ip" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblZone {
    /// The list's DNS zone, e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// Added to the score when the list answers; negative for an
    /// allowlist (a DNSWL).
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default)]
    pub kind: ZoneKind,
    /// Only these answers count; empty: any 127.0.0.0/8 answer except
    /// 127.0.0.1 and 127.255.255.0/24 (the lists' "query refused" or
    /// error codes).
    #[serde(default)]
    pub codes: Vec<Ipv4Addr>,
    /// Added to the refusal text when this list hit (e.g. a lookup URL).
    #[serde(default)]
    pub message: String,
}

fn one() -> f64 {
    1.0
}

impl DnsblConfig {
    /// Rules across keys the types cannot say; one line per problem.
    pub fn errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.threshold.is_finite() || self.threshold <= 0.0 {
            errors.push(format!(
                "hygiene.dnsbl.threshold: {} must be a number above 0 (0 would refuse every client)",
                self.threshold
            ));
        }
        if self.cache_ttl > 0 && self.cache_size == 0 {
            errors.push("hygiene.dnsbl.cache_size: must be at least 1 (or cache_ttl = 0)".into());
        }
        for (i, z) in self.zones.iter().enumerate() {
            if !valid_zone(&z.zone) {
                errors.push(format!(
                    "hygiene.dnsbl.zones[{i}].zone: not a DNS name (letters, digits, '-', '_', dots; at most 200 characters)"
                ));
            }
            if !z.weight.is_finite() {
                errors.push(format!("hygiene.dnsbl.zones[{i}].weight: not a number"));
            }
            if z.message.len() > MAX_MESSAGE
                || z.message.bytes().any(|b| !(0x20..0x7f).contains(&b))
            {
                errors.push(format!(
                    "hygiene.dnsbl.zones[{i}].message: printable ASCII on one line, at most {MAX_MESSAGE} characters"
                ));
            }
        }
        for (i, s) in self.allow_senders.iter().enumerate() {
            let domain = s.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if domain.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errors.push(format!(
                    "hygiene.dnsbl.allow_senders[{i}]: give user@domain or @domain"
                ));
            }
        }
        errors
    }
}

/// A zone name we can append to a query: LDH labels (plus `_`), 1..63
/// bytes each, short enough that a 72-byte IPv6 prefix still fits in 253.
fn valid_zone(z: &str) -> bool {
    let z = z.strip_suffix('.').unwrap_or(z);
    !z.is_empty()
        && z.len() <= 200
        && z.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let c = DnsblConfig::default();
        assert!(c.errors().is_empty());
        assert_eq!(c.threshold, 1.0);
        let c = DnsblConfig {
            threshold: 0.0,
            zones: vec![DnsblZone {
                zone: "bad zone".into(),
                weight: f64::NAN,
                kind: ZoneKind::Ip,
                codes: vec![],
                message: "a\r\nb".into(),
            }],
            allow_senders: vec!["nodomain".into(), "@ok.example".into()],
            ..DnsblConfig::default()
        };
        let e = c.errors();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(valid_zone("zen.spamhaus.org."));
        assert!(!valid_zone("a..b"));
    }
}
