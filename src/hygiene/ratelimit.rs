//! Rate limits per client address/network, per sender and per recipient
//! (port 25), and per-user sending limits on submission. Per process:
//! each process counts on its own (no shared state between processes).
//!
//! Each limit is a token bucket per key: `limit` tokens, refilled at
//! `limit` per window, one taken per event; an empty bucket refuses.
//! A bucket that has filled up again is the same as no bucket, so idle
//! keys are dropped. Each limit holds at most `max_keys` keys: when full,
//! idle keys are dropped, then the least recently used ones (a flood of
//! distinct addresses costs bounded memory; a dropped key starts afresh,
//! which errs on the side of accepting mail).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Client, Decision, Refusal};
use crate::config::{Config, RateConfig};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

/// Longest sender or recipient kept as a key (longer ones are cut: an
/// address is at most 320 octets anyway).
const MAX_KEY_LEN: usize = 320;

/// One bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// The limit it was filled to (per-user overrides differ per key).
    cap: f64,
    last: Instant,
}

/// Token buckets of one limit, keyed by network, address or login.
struct Limiter<K> {
    /// Window the limit is counted over.
    window: Duration,
    /// Most keys remembered.
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(window: Duration, max_keys: usize) -> Self {
        Limiter {
            window,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket of `limit` per window; false
    /// when the bucket is empty (the event is refused and not counted).
    /// `limit` 0: no limit.
    fn take(&self, key: &K, limit: u32, now: Instant) -> bool {
        if limit == 0 {
            return true;
        }
        let cap = f64::from(limit);
        let rate = cap / self.window.as_secs_f64();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= self.max_keys {
            self.evict(&mut map, now);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: cap,
            cap,
            last: now,
        });
        b.cap = cap;
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Makes room: drops the buckets that have filled up again, then, if
    /// still above 90 % of the cap, the least recently used down to 90 %
    /// (so the sort is paid once per tenth of the cap of new keys).
    fn evict(&self, map: &mut HashMap<K, Bucket>, now: Instant) {
        let window = self.window.as_secs_f64();
        map.retain(|_, b| {
            let refill = now.saturating_duration_since(b.last).as_secs_f64() * b.cap / window;
            b.tokens + refill < b.cap
        });
        let keep = self.max_keys - self.max_keys / 10 - 1;
        if map.len() > keep {
            let mut ages: Vec<(Instant, K)> =
                map.iter().map(|(k, b)| (b.last, k.clone())).collect();
            ages.sort_unstable_by_key(|(last, _)| *last);
            let drop = map.len() - keep;
            for (_, k) in ages.into_iter().take(drop) {
                map.remove(&k);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

/// Counters of `[hygiene.rate]`.
pub struct RateLimits {
    config: RateConfig,
    client_connections: Limiter<IpAddr>,
    client_messages: Limiter<IpAddr>,
    client_recipients: Limiter<IpAddr>,
    sender_messages: Limiter<String>,
    recipient_messages: Limiter<String>,
    user_messages_hour: Limiter<String>,
    user_recipients_hour: Limiter<String>,
    user_messages_day: Limiter<String>,
    user_recipients_day: Limiter<String>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::new(RateConfig::default())
    }
}

/// Which per-user limit.
#[derive(Clone, Copy)]
enum UserLimit {
    MessagesHour,
    RecipientsHour,
    MessagesDay,
    RecipientsDay,
}

impl RateLimits {
    pub fn from_config(config: &Config) -> anyhow::Result<RateLimits> {
        let c = &config.hygiene.rate;
        anyhow::ensure!(
            (1..=128).contains(&c.ipv6_prefix),
            "[hygiene.rate] ipv6_prefix must be 1..=128"
        );
        Ok(RateLimits::new(c.clone()))
    }

    fn new(mut config: RateConfig) -> RateLimits {
        // Logins are compared lowercased.
        config.user = std::mem::take(&mut config.user)
            .into_iter()
            .map(|(k, v)| (key(&k), v))
            .collect();
        let n = config.max_keys;
        RateLimits {
            client_connections: Limiter::new(MINUTE, n),
            client_messages: Limiter::new(MINUTE, n),
            client_recipients: Limiter::new(MINUTE, n),
            sender_messages: Limiter::new(MINUTE, n),
            recipient_messages: Limiter::new(MINUTE, n),
            user_messages_hour: Limiter::new(HOUR, n),
            user_recipients_hour: Limiter::new(HOUR, n),
            user_messages_day: Limiter::new(DAY, n),
            user_recipients_day: Limiter::new(DAY, n),
            config,
        }
    }

    /// Connections per minute from the client's network.
    pub fn connect(&self, client: &Client) -> Decision {
        self.connect_at(client, Instant::now())
    }

    /// Client and sender message rates (port 25), or the login's message
    /// limits (submission).
    pub fn mail_from(&self, client: &Client, sender: &str) -> Decision {
        self.mail_from_at(client, sender, Instant::now())
    }

    /// Client recipient rate and the recipient's message rate (port 25),
    /// or the login's recipient limits (submission).
    pub fn rcpt(&self, client: &Client, sender: &str, rcpt: &str) -> Decision {
        self.rcpt_at(client, sender, rcpt, Instant::now())
    }

    fn connect_at(&self, client: &Client, now: Instant) -> Decision {
        // Trusted clients are not counted.
        if !self.config.enabled || client.trusted {
            return Decision::Pass;
        }
        let net = self.network(client.ip);
        match self
            .client_connections
            .take(&net, self.config.connections_per_minute, now)
        {
            true => Decision::Pass,
            false => Decision::Refuse(Refusal::new(
                421,
                "4.7.0",
                "Too many connections from your network, try again later \
                 (rate limit connections_per_minute)",
            )),
        }
    }

    /// What decides before the per-network counters: off, a login (by
    /// its own limits `which`, wherever it connects from), a trusted
    /// client. `None`: count the client as a stranger.
    fn settled(&self, client: &Client, which: [UserLimit; 2], now: Instant) -> Option<Decision> {
        if !self.config.enabled || client.trusted && client.login.is_none() {
            return Some(Decision::Pass);
        }
        let login = client.login.as_ref()?;
        if !client.submission {
            return Some(Decision::Pass);
        }
        let login = key(login);
        let refusal = which
            .into_iter()
            .find_map(|w| self.take_user(&login, w, now));
        Some(refusal.map_or(Decision::Pass, Decision::Refuse))
    }

    fn mail_from_at(&self, client: &Client, sender: &str, now: Instant) -> Decision {
        let which = [UserLimit::MessagesHour, UserLimit::MessagesDay];
        if let Some(d) = self.settled(client, which, now) {
            return d;
        }
        let net = self.network(client.ip);
        if !self
            .client_messages
            .take(&net, self.config.messages_per_minute, now)
        {
            return refuse("Too many messages from your network", "messages_per_minute");
        }
        if !self
            .sender_messages
            .take(&key(sender), self.config.sender_messages_per_minute, now)
        {
            return refuse(
                "Too many messages from this sender",
                "sender_messages_per_minute",
            );
        }
        Decision::Pass
    }

    fn rcpt_at(&self, client: &Client, _sender: &str, rcpt: &str, now: Instant) -> Decision {
        let which = [UserLimit::RecipientsHour, UserLimit::RecipientsDay];
        if let Some(d) = self.settled(client, which, now) {
            return d;
        }
        let net = self.network(client.ip);
        if !self
            .client_recipients
            .take(&net, self.config.recipients_per_minute, now)
        {
            return refuse(
                "Too many recipients from your network",
                "recipients_per_minute",
            );
        }
        if !self
            .recipient_messages
            .take(&key(rcpt), self.config.recipient_messages_per_minute, now)
        {
            return refuse(
                "Too many messages for this recipient",
                "recipient_messages_per_minute",
            );
        }
        Decision::Pass
    }

    /// One per-user limit: `None` when it passes.
    fn take_user(&self, login: &String, which: UserLimit, now: Instant) -> Option<Refusal> {
        let over = self.config.user.get(login.as_str());
        let c = &self.config;
        let (limiter, limit, name, text) = match which {
            UserLimit::MessagesHour => (
                &self.user_messages_hour,
                over.and_then(|o| o.messages_per_hour)
                    .unwrap_or(c.user_messages_per_hour),
                "user_messages_per_hour",
                "Too many messages sent this hour",
            ),
            UserLimit::RecipientsHour => (
                &self.user_recipients_hour,
                over.and_then(|o| o.recipients_per_hour)
                    .unwrap_or(c.user_recipients_per_hour),
                "user_recipients_per_hour",
                "Too many recipients this hour",
            ),
            UserLimit::MessagesDay => (
                &self.user_messages_day,
                over.and_then(|o| o.messages_per_day)
                    .unwrap_or(c.user_messages_per_day),
                "user_messages_per_day",
                "Too many messages sent today",
            ),
            UserLimit::RecipientsDay => (
                &self.user_recipients_day,
                over.and_then(|o| o.recipients_per_day)
                    .unwrap_or(c.user_recipients_per_day),
                "user_recipients_per_day",
                "Too many recipients today",
            ),
        };
        match limiter.take(login, limit, now) {
            true => None,
            false => match refuse(text, name) {
                Decision::Refuse(r) => Some(r),
                Decision::Pass => None,
            },
        }
    }

    /// The key of a client address: IPv4 as is (an IPv4-mapped IPv6
    /// address as IPv4), IPv6 cut to `ipv6_prefix`.
    fn network(&self, ip: IpAddr) -> IpAddr {
        network(ip, 32, self.config.ipv6_prefix)
    }
}

/// `ip` cut to its network: `v4` bits of an IPv4 address, `v6` of an IPv6
/// one (an IPv4-mapped address counts as IPv4).
pub(crate) fn network(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => network(IpAddr::V4(m), v4, v6),
            None => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(v6.min(128)))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        },
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(v4.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
    }
}

/// An address or login as a key: lowercased, bounded.
fn key(s: &str) -> String {
    let mut end = s.len().min(MAX_KEY_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_lowercase()
}

/// `451 4.7.1 TEXT, try again later (rate limit NAME)`.
fn refuse(text: &str, name: &str) -> Decision {
    Decision::Refuse(Refusal::new(
        451,
        "4.7.1",
        format!("{text}, try again later (rate limit {name})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stranger(ip: &str) -> Client {
        Client {
            ip: ip.parse().unwrap(),
            helo: "client.test".into(),
            login: None,
            submission: false,
            trusted: false,
        }
    }

    fn limits(edit: impl FnOnce(&mut RateConfig)) -> RateLimits {
        let mut c = RateConfig {
            enabled: true,
            ..RateConfig::default()
        };
        edit(&mut c);
        RateLimits::new(c)
    }

    fn refused_by(d: Decision) -> Option<(u16, String)> {
        match d {
            Decision::Pass => None,
            Decision::Refuse(r) => Some((r.code, r.text)),
        }
    }

    #[test]
    fn bucket_refuses_over_the_limit_and_refills_with_time() {
        let l: Limiter<u32> = Limiter::new(MINUTE, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take(&1, 3, t0));
        }
        assert!(!l.take(&1, 3, t0));
        // Another key has its own bucket.
        assert!(l.take(&2, 3, t0));
        // A third of the window brings back one token.
        assert!(l.take(&1, 3, t0 + Duration::from_secs(20)));
        assert!(!l.take(&1, 3, t0 + Duration::from_secs(20)));
        // A whole window fills it up again.
        let t1 = t0 + Duration::from_secs(80);
        for _ in 0..3 {
            assert!(l.take(&1, 3, t1));
        }
        assert!(!l.take(&1, 3, t1));
    }

    #[test]
    fn zero_is_no_limit_and_keeps_no_state() {
        let l: Limiter<u32> = Limiter::new(MINUTE, 100);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(l.take(&1, 0, t0));
        }
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_bounded() {
        let l: Limiter<u32> = Limiter::new(MINUTE, 1000);
        let t0 = Instant::now();
        // The busy key keeps being used, so it is not the least recent.
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            assert!(l.take(&(i + 1_000_000), 5, now));
            if i % 100 == 0 {
                l.take(&7, 5, now);
            }
            assert!(l.len() <= 1000, "{} keys after {i}", l.len());
        }
        // The busy key's bucket was kept: it is empty now.
        assert!(!l.take(&7, 5, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn idle_keys_are_dropped_first() {
        let l: Limiter<u32> = Limiter::new(MINUTE, 10);
        let t0 = Instant::now();
        for k in 0..10 {
            l.take(&k, 2, t0);
        }
        // Key 0 is used up; the others refill within the window.
        l.take(&0, 2, t0);
        let later = t0 + Duration::from_secs(31);
        l.take(&100, 2, later);
        // The nine refilled keys went; key 0 (not refilled) stayed.
        assert_eq!(l.len(), 2);
        assert!(l.take(&0, 2, later));
        assert!(!l.take(&0, 2, later));
    }

    #[test]
    fn client_message_rate_names_the_limit_and_spares_other_clients() {
        let r = limits(|c| c.messages_per_minute = 2);
        let t0 = Instant::now();
        let a = stranger("192.0.2.1");
        assert_eq!(r.mail_from_at(&a, "x@a.test", t0), Decision::Pass);
        assert_eq!(r.mail_from_at(&a, "y@a.test", t0), Decision::Pass);
        let (code, text) = refused_by(r.mail_from_at(&a, "z@a.test", t0)).unwrap();
        assert_eq!(code, 451);
        assert!(text.contains("messages_per_minute"), "{text}");
        assert_eq!(
            r.mail_from_at(&stranger("192.0.2.2"), "x@a.test", t0),
            Decision::Pass
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_prefix() {
        let r = limits(|c| {
            c.connections_per_minute = 1;
            c.ipv6_prefix = 64;
        });
        let t0 = Instant::now();
        assert_eq!(r.connect_at(&stranger("2001:db8::1"), t0), Decision::Pass);
        let (code, text) = refused_by(r.connect_at(&stranger("2001:db8::ffff:2"), t0)).unwrap();
        assert_eq!(code, 421);
        assert!(text.contains("connections_per_minute"));
        assert_eq!(
            r.connect_at(&stranger("2001:db8:0:1::1"), t0),
            Decision::Pass
        );
        // IPv4 per address; a mapped address is the IPv4 one.
        assert_eq!(r.connect_at(&stranger("192.0.2.1"), t0), Decision::Pass);
        assert!(refused_by(r.connect_at(&stranger("::ffff:192.0.2.1"), t0)).is_some());
        assert_eq!(r.connect_at(&stranger("192.0.2.2"), t0), Decision::Pass);
    }

    #[test]
    fn sender_and_recipient_rates() {
        let r = limits(|c| {
            c.sender_messages_per_minute = 1;
            c.recipient_messages_per_minute = 1;
        });
        let t0 = Instant::now();
        let a = stranger("192.0.2.1");
        let b = stranger("198.51.100.1");
        assert_eq!(r.mail_from_at(&a, "Bulk@a.test", t0), Decision::Pass);
        let (_, text) = refused_by(r.mail_from_at(&b, "bulk@A.test", t0)).unwrap();
        assert!(text.contains("sender_messages_per_minute"));
        assert_eq!(r.rcpt_at(&a, "", "u@ours.test", t0), Decision::Pass);
        let (_, text) = refused_by(r.rcpt_at(&b, "", "U@ours.test", t0)).unwrap();
        assert!(text.contains("recipient_messages_per_minute"));
    }

    #[test]
    fn trusted_clients_and_disabled_limits_pass() {
        let r = limits(|c| c.messages_per_minute = 1);
        let t0 = Instant::now();
        let mut t = stranger("192.0.2.1");
        t.trusted = true;
        for _ in 0..5 {
            assert_eq!(r.mail_from_at(&t, "", t0), Decision::Pass);
        }
        let off = limits(|c| {
            c.enabled = false;
            c.messages_per_minute = 1;
        });
        for _ in 0..5 {
            assert_eq!(
                off.mail_from_at(&stranger("192.0.2.1"), "", t0),
                Decision::Pass
            );
        }
    }

    #[test]
    fn per_user_limits_with_an_override() {
        let r = limits(|c| {
            c.messages_per_minute = 1;
            c.user_messages_per_hour = 2;
            c.user_recipients_per_day = 3;
            c.user.insert("Boss@ours.test".into(), Default::default());
            c.user.get_mut("Boss@ours.test").unwrap().messages_per_hour = Some(5);
        });
        let t0 = Instant::now();
        let user = |login: &str| Client {
            ip: "192.0.2.9".parse().unwrap(),
            helo: "pc".into(),
            login: Some(login.into()),
            submission: true,
            trusted: false,
        };
        let alice = user("alice@ours.test");
        // Address limits do not apply to a login: two messages pass.
        assert_eq!(
            r.mail_from_at(&alice, "alice@ours.test", t0),
            Decision::Pass
        );
        assert_eq!(
            r.mail_from_at(&alice, "alice@ours.test", t0),
            Decision::Pass
        );
        let (code, text) = refused_by(r.mail_from_at(&alice, "alice@ours.test", t0)).unwrap();
        assert_eq!(code, 451);
        assert!(text.contains("user_messages_per_hour"), "{text}");
        for _ in 0..3 {
            assert_eq!(r.rcpt_at(&alice, "", "x@far.test", t0), Decision::Pass);
        }
        let (_, text) = refused_by(r.rcpt_at(&alice, "", "x@far.test", t0)).unwrap();
        assert!(text.contains("user_recipients_per_day"));
        let boss = user("boss@ours.test");
        for _ in 0..5 {
            assert_eq!(r.mail_from_at(&boss, "", t0), Decision::Pass);
        }
        assert!(refused_by(r.mail_from_at(&boss, "", t0)).is_some());
    }

    #[test]
    fn keys_are_bounded_and_lowercased() {
        assert_eq!(key("A@B.Test"), "a@b.test");
        assert_eq!(key(&"é".repeat(400)).len(), 320);
    }
}
