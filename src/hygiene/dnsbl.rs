//! DNS blocklists and allowlists (RFC 5782) at connect (client address)
//! and at MAIL FROM (sender domain), and the local allowlist.
//!
//! Every zone of the asked kind is looked up at once, each lookup bounded
//! by `timeout_ms`; the weights of the zones that answered with a code
//! that counts are added up and the client (or sender domain) is refused
//! `554 5.7.1` when the sum reaches `threshold`. A lookup that fails or
//! times out counts 0 (fail-open). Answers (listed or not) are remembered
//! in a bounded map for `cache_ttl` seconds, so a busy client costs one
//! lookup per list and minute. Only strangers on port 25
//! (`Client::is_stranger`) are asked about.
//!
//! Replies name the lists that hit (configuration) and the client's
//! address (taken from the socket), never client data such as the
//! sender's domain.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RData;
use tracing::debug;

use super::{Client, Decision, Refusal};
use crate::config::{Config, DnsblConfig, DnsblZone, ZoneKind};
use crate::dns::Resolver;
use crate::netaddr::in_any;

/// The configured lists (`[hygiene.dnsbl]`).
#[derive(Default)]
pub struct Dnsbl {
    /// None: `enabled = false` (every check passes).
    on: Option<On>,
}

struct On {
    config: DnsblConfig,
    resolver: Arc<Resolver>,
    cache: Cache,
    timeout: Duration,
}

/// What one list said about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// The A records of the name (empty: NXDOMAIN / no record).
    Listed(Vec<Ipv4Addr>),
    /// Timeout or server failure: counts 0, not cached.
    Failed,
}

impl Dnsbl {
    pub fn from_config(config: &Config, resolver: Arc<Resolver>) -> anyhow::Result<Dnsbl> {
        let c = &config.hygiene.dnsbl;
        if !c.enabled {
            return Ok(Dnsbl::default());
        }
        let errors = c.errors();
        if !errors.is_empty() {
            anyhow::bail!("{}", errors.join("; "));
        }
        Ok(Dnsbl {
            on: Some(On {
                config: c.clone(),
                resolver,
                cache: Cache::new(c.cache_size, Duration::from_secs(c.cache_ttl)),
                timeout: Duration::from_millis(if c.timeout_ms == 0 {
                    2000
                } else {
                    c.timeout_ms
                }),
            }),
        })
    }

    /// Client address lists: `deny_networks`, then the `ip` zones.
    pub async fn connect(&self, client: &Client) -> Decision {
        let Some(on) = &self.on else {
            return Decision::Pass;
        };
        if !client.is_stranger() || in_any(&on.config.allow_networks, client.ip) {
            return Decision::Pass;
        }
        let ip = plain(client.ip);
        if in_any(&on.config.deny_networks, ip) {
            return Decision::Refuse(Refusal::new(
                554,
                "5.7.1",
                format!("Service unavailable; client [{ip}] blocked by local policy"),
            ));
        }
        let prefix = reversed(ip);
        match on.score(ZoneKind::Ip, &prefix).await {
            Some(hits) => Decision::Refuse(Refusal::new(
                554,
                "5.7.1",
                format!(
                    "Service unavailable; client [{ip}] blocked using {}",
                    hits.describe()
                ),
            )),
            None => Decision::Pass,
        }
    }

    /// Sender domain lists and the local sender allowlist.
    pub async fn mail_from(&self, client: &Client, sender: &str) -> Decision {
        let Some(on) = &self.on else {
            return Decision::Pass;
        };
        if !client.is_stranger()
            || in_any(&on.config.allow_networks, client.ip)
            || sender_allowed(&on.config.allow_senders, sender)
        {
            return Decision::Pass;
        }
        let Some(domain) = sender_domain(sender) else {
            return Decision::Pass;
        };
        match on.score(ZoneKind::Domain, &domain).await {
            Some(hits) => Decision::Refuse(Refusal::new(
                554,
                "5.7.1",
                format!("Sender domain blocked using {}", hits.describe()),
            )),
            None => Decision::Pass,
        }
    }

    /// The client is on the local allowlist, or an allowlist zone
    /// (negative weight) listed it when it connected (the answer is
    /// still cached): greylisting and the lists do not apply.
    pub fn allowlisted(&self, client: &Client) -> bool {
        let Some(on) = &self.on else {
            return false;
        };
        if in_any(&on.config.allow_networks, client.ip) {
            return true;
        }
        let prefix = reversed(client.ip);
        on.config
            .zones
            .iter()
            .filter(|z| z.kind == ZoneKind::Ip && z.weight < 0.0)
            .any(|z| {
                on.cache
                    .get(&query_name(&prefix, z))
                    .is_some_and(|a| counts(z, &a))
            })
    }
}

/// The zones that hit, for the reply.
struct Hits<'a> {
    zones: Vec<&'a DnsblZone>,
}

impl Hits<'_> {
    /// `a.example, b.example (their message)`.
    fn describe(&self) -> String {
        let names: Vec<&str> = self
            .zones
            .iter()
            .map(|z| z.zone.trim_end_matches('.'))
            .collect();
        let mut text = names.join(", ");
        for z in &self.zones {
            if !z.message.is_empty() {
                text.push_str("; ");
                text.push_str(&z.message);
            }
        }
        text
    }
}

impl On {
    /// Asks every zone of `kind` about `prefix` at once; the listing
    /// zones with a positive weight when the sum reaches the threshold.
    async fn score(&self, kind: ZoneKind, prefix: &str) -> Option<Hits<'_>> {
        let zones: Vec<&DnsblZone> = self
            .config
            .zones
            .iter()
            .filter(|z| z.kind == kind)
            .collect();
        if zones.is_empty() {
            return None;
        }
        let answers = futures::future::join_all(zones.iter().map(|z| self.ask(prefix, z))).await;
        let listed: Vec<&DnsblZone> = zones
            .iter()
            .zip(&answers)
            .filter(|(z, a)| counts(z, a))
            .map(|(z, _)| *z)
            .collect();
        let sum = weight(&listed);
        debug!(kind = ?kind, sum, hits = listed.len(), "dns lists");
        (sum >= self.config.threshold).then(|| Hits {
            zones: listed.into_iter().filter(|z| z.weight > 0.0).collect(),
        })
    }

    /// One lookup of `prefix.zone`, from the cache when it is fresh.
    async fn ask(&self, prefix: &str, zone: &DnsblZone) -> Answer {
        let name = query_name(prefix, zone);
        if let Some(a) = self.cache.get(&name) {
            lookup_metric(zone, "cached");
            return a;
        }
        let lookup = self.resolver.hickory().ipv4_lookup(name.as_str());
        let (answer, valid_until) = match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => {
                debug!(zone = %zone.zone, "dns list lookup timed out (counts 0)");
                (Answer::Failed, None)
            }
            Ok(Ok(l)) => {
                let ips = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                (Answer::Listed(ips), Some(l.valid_until()))
            }
            Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => {
                (Answer::Listed(Vec::new()), None)
            }
            Ok(Err(e)) => {
                debug!(zone = %zone.zone, error = %e, "dns list lookup failed (counts 0)");
                (Answer::Failed, None)
            }
        };
        lookup_metric(
            zone,
            match &answer {
                Answer::Failed => "failed",
                Answer::Listed(ips) if ips.is_empty() => "not_listed",
                Answer::Listed(_) => "answered",
            },
        );
        if answer != Answer::Failed {
            self.cache.put(name, answer.clone(), valid_until);
        }
        answer
    }
}

/// `msgd_dnsbl_lookups_total{zone, result}`: `answered` (an A record,
/// whether its code counts or not), `not_listed`, `failed` (timeout or
/// server failure), `cached`. Zones come from the configuration, so the
/// label set is bounded.
fn lookup_metric(zone: &DnsblZone, result: &'static str) {
    metrics::counter!(
        "msgd_dnsbl_lookups_total",
        "zone" => zone.zone.trim_end_matches('.').to_string(),
        "result" => result
    )
    .increment(1);
}

/// The absolute name asked: `prefix.zone.` (no search domains).
fn query_name(prefix: &str, zone: &DnsblZone) -> String {
    format!("{prefix}.{}.", zone.zone.trim_end_matches('.'))
}

/// Does this answer put the name on the list?
fn counts(zone: &DnsblZone, answer: &Answer) -> bool {
    let Answer::Listed(ips) = answer else {
        return false;
    };
    ips.iter().any(|ip| {
        if zone.codes.is_empty() {
            let o = ip.octets();
            o[0] == 127 && *ip != Ipv4Addr::new(127, 0, 0, 1) && !(o[1] == 255 && o[2] == 255)
        } else {
            zone.codes.contains(ip)
        }
    })
}

/// The summed weight of the zones that listed the name.
fn weight(listed: &[&DnsblZone]) -> f64 {
    listed.iter().map(|z| z.weight).sum()
}

/// An IPv4-mapped IPv6 address (a dual-stack socket) as IPv4.
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The query prefix of an address (RFC 5782 2.1, 2.4): octets reversed
/// for IPv4, the 32 nibbles reversed for IPv6.
fn reversed(ip: IpAddr) -> String {
    match plain(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut parts = Vec::with_capacity(32);
            for b in v6.octets().iter().rev() {
                parts.push(format!("{:x}", b & 0x0f));
                parts.push(format!("{:x}", b >> 4));
            }
            parts.join(".")
        }
    }
}

/// The sender's domain as a query prefix (lowercase, no trailing dot);
/// None for `<>`, an address literal, or anything that is not a plain
/// DNS name (client data is never put into a query unchecked).
fn sender_domain(sender: &str) -> Option<String> {
    let (_, domain) = sender.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain.len() <= 180
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(domain)
}

/// `allow_senders`: `user@domain` exactly or `@domain` (any user), case
/// insensitive.
fn sender_allowed(allow: &[String], sender: &str) -> bool {
    if sender.is_empty() {
        return false;
    }
    let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    allow.iter().any(|a| match a.strip_prefix('@') {
        Some(d) => d.eq_ignore_ascii_case(domain),
        None => a.eq_ignore_ascii_case(sender),
    })
}

/// Answers by query name, each until its deadline; at most `size`.
struct Cache {
    map: Mutex<HashMap<String, (Instant, Answer)>>,
    size: usize,
    ttl: Duration,
}

impl Cache {
    fn new(size: usize, ttl: Duration) -> Cache {
        Cache {
            map: Mutex::new(HashMap::new()),
            size,
            ttl,
        }
    }

    fn get(&self, name: &str) -> Option<Answer> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(name) {
            Some((until, a)) if *until > Instant::now() => Some(a.clone()),
            _ => None,
        }
    }

    /// Kept for `ttl`, or until the record's own TTL ends if sooner. A
    /// full map drops its expired entries first, then an arbitrary one.
    fn put(&self, name: String, answer: Answer, valid_until: Option<Instant>) {
        if self.ttl.is_zero() || self.size == 0 {
            return;
        }
        let now = Instant::now();
        let mut until = now + self.ttl;
        if let Some(v) = valid_until {
            until = until.min(v);
        }
        if until <= now {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.size && !map.contains_key(&name) {
            map.retain(|_, (u, _)| *u > now);
            if map.len() >= self.size {
                if let Some(k) = map.keys().next().cloned() {
                    map.remove(&k);
                }
            }
        }
        map.insert(name, (until, answer));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, weight: f64, codes: &[&str]) -> DnsblZone {
        DnsblZone {
            zone: name.into(),
            weight,
            kind: ZoneKind::Ip,
            codes: codes.iter().map(|c| c.parse().unwrap()).collect(),
            message: String::new(),
        }
    }

    fn stranger(ip: &str) -> Client {
        Client {
            ip: ip.parse().unwrap(),
            helo: String::new(),
            login: None,
            submission: false,
            trusted: false,
        }
    }

    fn listed(ips: &[&str]) -> Answer {
        Answer::Listed(ips.iter().map(|i| i.parse().unwrap()).collect())
    }

    #[test]
    fn rfc5782_ipv4_and_ipv6_reversal() {
        assert_eq!(reversed("192.0.2.99".parse().unwrap()), "99.2.0.192");
        assert_eq!(reversed("::ffff:127.0.0.2".parse().unwrap()), "2.0.0.127");
        // RFC 5782 2.4's example.
        assert_eq!(
            reversed("2001:db8:1:2:3:4:567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
        );
        assert_eq!(
            reversed("::1".parse().unwrap()),
            format!("1{}", ".0".repeat(31))
        );
    }

    #[test]
    fn code_filter_and_default_codes() {
        let any = zone("bl.example", 1.0, &[]);
        assert!(counts(&any, &listed(&["127.0.0.2"])));
        assert!(counts(&any, &listed(&["127.0.1.4"])));
        // 127.0.0.1 and 127.255.255.x: the list refused or failed the query.
        assert!(!counts(&any, &listed(&["127.0.0.1"])));
        assert!(!counts(&any, &listed(&["127.255.255.254"])));
        assert!(!counts(&any, &listed(&["10.0.0.2"])));
        assert!(!counts(&any, &listed(&[])));
        assert!(!counts(&any, &Answer::Failed));
        let some = zone("bl.example", 1.0, &["127.0.0.4", "127.0.0.10"]);
        assert!(!counts(&some, &listed(&["127.0.0.2"])));
        assert!(counts(&some, &listed(&["127.0.0.2", "127.0.0.10"])));
    }

    #[test]
    fn weights_add_up_and_allowlists_offset() {
        let a = zone("a.example", 1.0, &[]);
        let b = zone("b.example", 0.5, &[]);
        let w = zone("wl.example", -1.5, &[]);
        assert_eq!(weight(&[&a, &b]), 1.5);
        assert_eq!(weight(&[&a, &w]), -0.5);
        assert_eq!(weight(&[&a, &b, &w]), 0.0);
        let hits = Hits {
            zones: vec![&a, &b],
        };
        assert_eq!(hits.describe(), "a.example, b.example");
        let mut m = zone("m.example.", 1.0, &[]);
        m.message = "see https://m.example/lookup".into();
        let hits = Hits { zones: vec![&m] };
        assert_eq!(hits.describe(), "m.example; see https://m.example/lookup");
    }

    #[test]
    fn sender_domains_and_the_sender_allowlist() {
        assert_eq!(sender_domain("a@Example.ORG."), Some("example.org".into()));
        assert_eq!(sender_domain(""), None);
        assert_eq!(sender_domain("a@[192.0.2.1]"), None);
        assert_eq!(sender_domain("a@b..c"), None);
        assert_eq!(sender_domain("a@evil.example\r\nx"), None);
        let allow = vec![
            "boss@partner.example".to_string(),
            "@friends.example".to_string(),
        ];
        assert!(sender_allowed(&allow, "Boss@Partner.example"));
        assert!(!sender_allowed(&allow, "other@partner.example"));
        assert!(sender_allowed(&allow, "anyone@FRIENDS.example"));
        assert!(!sender_allowed(&allow, ""));
    }

    fn enabled(edit: impl FnOnce(&mut DnsblConfig)) -> Dnsbl {
        let mut c = Config::default();
        c.dns.nameservers = vec!["127.0.0.1:9".parse().unwrap()];
        c.dns.timeout = 1;
        c.hygiene.dnsbl.enabled = true;
        edit(&mut c.hygiene.dnsbl);
        let r = Arc::new(Resolver::from_config(&c).unwrap());
        Dnsbl::from_config(&c, r).unwrap()
    }

    #[tokio::test]
    async fn local_allow_and_deny_networks() {
        let d = enabled(|c| {
            c.allow_networks = vec!["192.0.2.0/24".parse().unwrap()];
            c.deny_networks = vec![
                "192.0.2.7".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap(),
            ];
        });
        let friend = stranger("192.0.2.7");
        assert!(d.allowlisted(&friend));
        assert_eq!(d.connect(&friend).await, Decision::Pass);
        let foe = stranger("::ffff:198.51.100.9");
        assert!(!d.allowlisted(&foe));
        match d.connect(&foe).await {
            Decision::Refuse(r) => {
                assert_eq!((r.code, r.esc), (554, "5.7.1"));
                assert_eq!(
                    r.text,
                    "Service unavailable; client [198.51.100.9] blocked by local policy"
                );
            }
            other => panic!("{other:?}"),
        }
        // Submission and trusted clients are not screened.
        let mut sub = stranger("198.51.100.9");
        sub.submission = true;
        assert_eq!(d.connect(&sub).await, Decision::Pass);
        // Off: nothing is allowlisted or refused.
        let off = Dnsbl::default();
        assert!(!off.allowlisted(&friend));
        assert_eq!(off.connect(&foe).await, Decision::Pass);
    }

    #[tokio::test]
    async fn a_dead_server_fails_open_within_the_timeout() {
        let d = enabled(|c| {
            c.timeout_ms = 300;
            c.zones = vec![zone("bl.example", 1.0, &[])];
            c.zones.push(DnsblZone {
                kind: ZoneKind::Domain,
                ..zone("dbl.example", 1.0, &[])
            });
        });
        let start = Instant::now();
        assert_eq!(d.connect(&stranger("192.0.2.1")).await, Decision::Pass);
        assert_eq!(
            d.mail_from(&stranger("192.0.2.1"), "a@spam.example").await,
            Decision::Pass
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        // Failures are not cached.
        assert_eq!(d.on.as_ref().unwrap().cache.len(), 0);
    }

    #[tokio::test]
    async fn cached_answers_are_used_and_the_cache_is_bounded() {
        let d = enabled(|c| {
            c.cache_size = 2;
            c.zones = vec![zone("bl.example", 1.0, &[])];
        });
        let on = d.on.as_ref().unwrap();
        on.cache
            .put("2.2.0.192.bl.example.".into(), listed(&["127.0.0.2"]), None);
        // No DNS server answers: the refusal comes from the cache.
        match d.connect(&stranger("192.0.2.2")).await {
            Decision::Refuse(r) => assert_eq!(
                r.text,
                "Service unavailable; client [192.0.2.2] blocked using bl.example"
            ),
            other => panic!("{other:?}"),
        }
        // An allowlist zone's cached hit makes the client allowlisted
        // (greylisting skips it); a blocklist hit does not.
        assert!(!d.allowlisted(&stranger("192.0.2.2")));
        let d = enabled(|c| {
            c.cache_size = 2;
            c.zones = vec![zone("bl.example", 1.0, &[]), zone("wl.example", -1.0, &[])];
        });
        let on = d.on.as_ref().unwrap();
        on.cache
            .put("3.2.0.192.wl.example.".into(), listed(&["127.0.0.2"]), None);
        assert!(d.allowlisted(&stranger("192.0.2.3")));
        assert!(!d.allowlisted(&stranger("192.0.2.4")));
        on.cache.put("a".into(), listed(&[]), None);
        on.cache.put("b".into(), listed(&[]), None);
        assert_eq!(on.cache.len(), 2);
        // An answer whose TTL is over is not kept.
        on.cache.put("c".into(), listed(&[]), Some(Instant::now()));
        assert!(on.cache.get("c").is_none());
    }
}
