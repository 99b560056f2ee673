//! Idle connections to next hops, kept for the next transaction: the
//! stores over LMTP (`mta.lmtp_pool` per address), the smarthost
//! (`mta.relay_pool`), MX hosts (`deliver::mx`, 4 per address), each for
//! `mta.connection_idle` seconds.
//!
//! Rules:
//! - bounded: at most `max_idle` idle connections per key; one more is
//!   closed instead of kept;
//! - a connection goes back only when its transaction ended cleanly
//!   (`Client::reusable`: no io error, no timeout, no 421), and it is
//!   checked with RSET before it carries the next message (the caller's
//!   `Client::reset`, or for LMTP `Client::send_reused`, which pipelines
//!   the RSET with the transaction), so a connection the peer closed
//!   while idle is dropped and a fresh one opened;
//! - an idle connection older than the idle timeout is never handed out;
//!   `reap` closes those (QUIT) in the background.
//!
//! Generic over the item so the rules are tested without sockets.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::client::{Client, Dialect};
use crate::config::Config;
use crate::dns::Resolver;

/// What the delivery targets that leave the process share: the process's
/// resolver and the idle connections to stores and the smarthost.
pub struct Hops {
    pub resolver: Arc<Resolver>,
    /// Stores over LMTP (and an mta-in over SMTP for `mta.local_via`),
    /// by address and dialect.
    pub lmtp: Arc<Pool<(SocketAddr, Dialect), Client>>,
    /// The smarthost, by address (connections are past TLS and AUTH).
    pub relay: Arc<Pool<SocketAddr, Client>>,
}

impl Hops {
    /// Pools sized by `mta.lmtp_pool` / `mta.relay_pool`, idle for
    /// `mta.connection_idle` seconds. No reaper: see `start_reaping`.
    pub fn new(config: &Config, resolver: Arc<Resolver>) -> Hops {
        let idle = Duration::from_secs(config.mta.connection_idle);
        Hops {
            resolver,
            lmtp: Arc::new(Pool::new(config.mta.lmtp_pool, idle)),
            relay: Arc::new(Pool::new(config.mta.relay_pool, idle)),
        }
    }

    /// Closes expired idle connections in the background (the queue
    /// runner's delivery; needs a tokio runtime, else does nothing).
    pub fn start_reaping(&self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&self.lmtp)));
            rt.spawn(reap(Arc::downgrade(&self.relay)));
        }
    }
}

/// Idle items by key, newest last.
pub struct Pool<K, T> {
    /// Idle items kept per key (0: none, every connection is closed
    /// after its transaction).
    max_idle: usize,
    /// How long an item may sit idle.
    idle: Duration,
    map: Mutex<HashMap<K, Vec<(T, Instant)>>>,
}

impl<K: Hash + Eq, T> Pool<K, T> {
    pub fn new(max_idle: usize, idle: Duration) -> Pool<K, T> {
        Pool {
            max_idle: if idle.is_zero() { 0 } else { max_idle },
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The most recently used idle item of `key` still within the idle
    /// timeout (older ones are dropped on the way).
    pub fn take(&self, key: &K) -> Option<T> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(key)?;
        let mut found = None;
        while let Some((item, since)) = list.pop() {
            if since.elapsed() < self.idle {
                found = Some(item);
                break;
            }
        }
        if list.is_empty() {
            map.remove(key);
        }
        found
    }

    /// Keeps `item` for the next take, or hands it back when the key
    /// already has `max_idle` idle items (the caller closes it).
    pub fn put(&self, key: K, item: T) -> Option<T> {
        if self.max_idle == 0 {
            return Some(item);
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(key).or_default();
        if list.len() >= self.max_idle {
            return Some(item);
        }
        list.push((item, Instant::now()));
        None
    }

    /// Keeps `item` as the newest of `key`, handing back the oldest one
    /// when the key already has `max_idle` (the caller closes it); with
    /// `max_idle` 0 hands `item` back.
    pub fn put_newest(&self, key: K, item: T) -> Option<T> {
        if self.max_idle == 0 {
            return Some(item);
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(key).or_default();
        let oldest = (list.len() >= self.max_idle).then(|| list.remove(0).0);
        list.push((item, Instant::now()));
        oldest
    }

    /// Whether anything is ever kept (`max_idle` and the timeout not 0).
    pub fn keeps(&self) -> bool {
        self.max_idle > 0
    }

    /// Removes and returns every item idle for the timeout or longer.
    pub fn expired(&self) -> Vec<T> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for list in map.values_mut() {
            let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|(_, since)| since.elapsed() >= self.idle);
            *list = keep;
            out.extend(old.into_iter().map(|(item, _)| item));
        }
        map.retain(|_, l| !l.is_empty());
        out
    }

    /// Idle items of `key` (tests, metrics).
    pub fn idle_count(&self, key: &K) -> usize {
        self.idle_where(|k| k == key)
    }

    /// Idle items of the keys `f` picks (tests, metrics).
    pub fn idle_where(&self, f: impl Fn(&K) -> bool) -> usize {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().filter(|(k, _)| f(k)).map(|(_, l)| l.len()).sum()
    }
}

impl<K: Hash + Eq> Pool<K, Client> {
    /// Hands a connection back after its transaction: kept when it is
    /// reusable and there is room, else closed (QUIT unless broken).
    pub async fn release(&self, key: K, client: Client) {
        if !client.reusable() {
            return; // dropped: the socket closes
        }
        if let Some(c) = self.put(key, client) {
            // Not on the delivery's path: the outcome is already known.
            tokio::spawn(c.quit());
        }
    }
}

/// Closes expired idle connections of `pool` every few seconds until the
/// pool is gone.
pub async fn reap<K: Hash + Eq + Send + 'static>(pool: Weak<Pool<K, Client>>) {
    loop {
        let every = match pool.upgrade() {
            Some(p) => (p.idle / 2).clamp(Duration::from_millis(500), Duration::from_secs(5)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(p) = pool.upgrade() else { return };
        let expired = p.expired();
        drop(p);
        for c in expired {
            c.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max: usize) -> Pool<&'static str, u32> {
        Pool::new(max, Duration::from_secs(30))
    }

    #[tokio::test]
    async fn pool_reuses_an_idle_connection_of_the_same_key() {
        let p = pool(4);
        assert_eq!(p.put("s1", 1), None);
        assert_eq!(p.take(&"s2"), None, "another store's connection");
        assert_eq!(p.take(&"s1"), Some(1));
        assert_eq!(p.take(&"s1"), None, "handed out once");
    }

    #[tokio::test]
    async fn pool_keeps_at_most_max_idle_per_key() {
        let p = pool(2);
        assert_eq!(p.put("s1", 1), None);
        assert_eq!(p.put("s1", 2), None);
        assert_eq!(p.put("s1", 3), Some(3), "third one is closed");
        assert_eq!(p.put("s2", 4), None, "the bound is per key");
        assert_eq!(p.idle_count(&"s1"), 2);
        // Newest first.
        assert_eq!(p.take(&"s1"), Some(2));
    }

    #[tokio::test]
    async fn pool_of_size_zero_keeps_nothing() {
        let p = pool(0);
        assert_eq!(p.put("s1", 1), Some(1));
        let p: Pool<&str, u32> = Pool::new(4, Duration::ZERO);
        assert_eq!(p.put("s1", 1), Some(1), "idle timeout 0 disables the pool");
    }

    #[tokio::test(start_paused = true)]
    async fn pool_idle_expiry() {
        let p = pool(4);
        p.put("s1", 1);
        tokio::time::advance(Duration::from_secs(20)).await;
        p.put("s1", 2);
        assert!(p.expired().is_empty());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(p.expired(), vec![1], "only the one idle 31 s");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(p.take(&"s1"), None, "expired items are never handed out");
        assert_eq!(p.idle_count(&"s1"), 0);
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Peer {
        Normal,
        /// Says 421 to MAIL and closes.
        Close421AtMail,
        /// Closes right after accepting the message (an idle timeout).
        CloseAfterData,
        /// Answers RSET only after the next command arrived: a client
        /// that waits for the RSET reply before sending MAIL stalls.
        RsetAnsweredWithMail,
    }

    /// A scripted LMTP server; counts its connections.
    async fn server(
        peer: Peer,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = std::sync::Arc::new(AtomicUsize::new(0));
        let c2 = conns.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                c2.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut r = BufReader::new(r);
                    w.write_all(b"220 store LMTP\r\n").await.unwrap();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        let reply: &[u8] = if l.starts_with("LHLO") || l.starts_with("EHLO") {
                            b"250-store\r\n250 PIPELINING\r\n"
                        } else if l.starts_with("MAIL") && peer == Peer::Close421AtMail {
                            let _ = w.write_all(b"421 4.3.2 shutting down\r\n").await;
                            return;
                        } else if l == "RSET" && peer == Peer::RsetAnsweredWithMail {
                            line.clear();
                            let next = tokio::time::timeout(
                                Duration::from_secs(2),
                                r.read_line(&mut line),
                            )
                            .await;
                            if !matches!(next, Ok(Ok(n)) if n > 0) || !line.starts_with("MAIL") {
                                // RSET alone: the client waits for it.
                                return;
                            }
                            b"250 ok\r\n250 ok\r\n"
                        } else if l.starts_with("MAIL") || l.starts_with("RCPT") || l == "RSET" {
                            b"250 ok\r\n"
                        } else if l == "DATA" {
                            b"354 go\r\n"
                        } else if l == "." && peer == Peer::CloseAfterData {
                            let _ = w.write_all(b"250 2.0.0 ok\r\n").await;
                            return;
                        } else if l == "." {
                            b"250 2.0.0 ok\r\n"
                        } else if l == "QUIT" {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b""
                        };
                        let _ = w.write_all(reply).await;
                    }
                });
            }
        });
        (addr, conns)
    }

    async fn connect(addr: std::net::SocketAddr) -> Client {
        Client::connect(
            &addr.to_string(),
            super::super::client::Dialect::Lmtp,
            "mx",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn pool_clean_connection_goes_back_and_is_reused() {
        let (addr, conns) = server(Peer::Normal).await;
        let p: Pool<std::net::SocketAddr, Client> = Pool::new(4, Duration::from_secs(30));
        for _ in 0..5 {
            let pooled = match p.take(&addr) {
                Some(mut c) => c.reset().await.then_some(c),
                None => None,
            };
            let mut c = match pooled {
                Some(c) => c,
                None => connect(addr).await,
            };
            let out = c.send("s@x", &["a@x"], b"x\r\n").await.unwrap();
            assert_eq!(out, vec![super::super::Outcome::Delivered]);
            p.release(addr, c).await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(p.idle_count(&addr), 1);
    }

    #[tokio::test]
    async fn pool_drops_a_connection_that_got_421() {
        let (addr, _) = server(Peer::Close421AtMail).await;
        let p: Pool<std::net::SocketAddr, Client> = Pool::new(4, Duration::from_secs(30));
        let mut c = connect(addr).await;
        assert!(c.send("s@x", &["a@x"], b"x\r\n").await.is_err());
        assert!(!c.reusable(), "421 closes the connection");
        p.release(addr, c).await;
        assert_eq!(p.idle_count(&addr), 0);
    }

    #[tokio::test]
    async fn pool_connection_closed_while_idle_fails_rset() {
        let (addr, conns) = server(Peer::CloseAfterData).await;
        let p: Pool<std::net::SocketAddr, Client> = Pool::new(4, Duration::from_secs(30));
        let mut c = connect(addr).await;
        c.send("s@x", &["a@x"], b"x\r\n").await.unwrap();
        // Nothing went wrong yet: back into the pool.
        p.release(addr, c).await;
        assert_eq!(p.idle_count(&addr), 1);
        // The peer closed it while idle: RSET fails, a new one is opened.
        let mut c = p.take(&addr).unwrap();
        assert!(!c.reset().await, "RSET on a closed connection fails");
        assert!(!c.reusable());
        p.release(addr, c).await;
        assert_eq!(p.idle_count(&addr), 0, "a broken connection is dropped");
        let mut c = connect(addr).await;
        assert!(c.send("s@x", &["a@x"], b"x\r\n").await.is_ok());
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    fn hops_config(edit: impl FnOnce(&mut Config)) -> (Arc<Config>, Hops) {
        let mut c = Config::default();
        c.dns.nameservers = vec!["127.0.0.1:9".parse().unwrap()];
        c.dns.timeout = 1;
        edit(&mut c);
        let r = Arc::new(Resolver::from_config(&c).unwrap());
        let hops = Hops::new(&c, r);
        (Arc::new(c), hops)
    }

    fn envelope() -> super::super::Envelope {
        super::super::Envelope {
            sender: "s@x".into(),
            ..Default::default()
        }
    }

    fn rcpt() -> Vec<(usize, super::super::client::RcptParams)> {
        vec![(0, super::super::client::RcptParams::plain("a@x"))]
    }

    #[tokio::test]
    async fn lmtp_store_connection_is_reused_between_deliveries() {
        let (addr, conns) = server(Peer::Normal).await;
        let (config, hops) = hops_config(|_| {});
        for _ in 0..3 {
            let out = super::super::lmtp::deliver(
                &config,
                &hops,
                &addr.to_string(),
                Dialect::Lmtp,
                &envelope(),
                &rcpt(),
                b"x\r\n",
            )
            .await;
            assert_eq!(out, vec![(0, super::super::Outcome::Delivered)]);
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    async fn lmtp_deliver(config: &Config, hops: &Hops, addr: std::net::SocketAddr) {
        let out = super::super::lmtp::deliver(
            config,
            hops,
            &addr.to_string(),
            Dialect::Lmtp,
            &envelope(),
            &rcpt(),
            b"x\r\n",
        )
        .await;
        assert_eq!(out, vec![(0, super::super::Outcome::Delivered)]);
    }

    #[tokio::test]
    async fn rfc2920_pooled_lmtp_connection_sends_rset_in_the_same_group_as_mail() {
        // The server answers RSET only once MAIL is there too: a second
        // round trip for the check would stall until the server gives up.
        let (addr, conns) = server(Peer::RsetAnsweredWithMail).await;
        let (config, hops) = hops_config(|_| {});
        for _ in 0..3 {
            lmtp_deliver(&config, &hops, addr).await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(hops.lmtp.idle_count(&(addr, Dialect::Lmtp)), 1);
    }

    #[tokio::test]
    async fn lmtp_pooled_connection_closed_while_idle_falls_back_to_a_fresh_one() {
        let (addr, conns) = server(Peer::CloseAfterData).await;
        let (config, hops) = hops_config(|_| {});
        for n in 1..=3 {
            lmtp_deliver(&config, &hops, addr).await;
            assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), n);
        }
    }

    #[tokio::test]
    async fn pooled_connection_without_pipelining_still_checks_with_rset() {
        // A server without PIPELINING gets RSET as a command of its own.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 x\r\n").await.unwrap();
            let mut line = String::new();
            let mut in_data = false;
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let l = line.trim_end().to_string();
                if in_data {
                    if l == "." {
                        in_data = false;
                        w.write_all(b"250 ok\r\n").await.unwrap();
                    }
                    continue;
                }
                // Not pipelining: nothing else may wait behind a command.
                assert!(r.buffer().is_empty(), "pipelined after {l}");
                s2.lock().unwrap().push(l.clone());
                let reply: &[u8] = match l.as_str() {
                    "DATA" => {
                        in_data = true;
                        b"354 go\r\n"
                    }
                    _ if l.starts_with("LHLO") => b"250 x\r\n",
                    _ => b"250 ok\r\n",
                };
                w.write_all(reply).await.unwrap();
            }
        });
        let mut c = connect(addr).await;
        assert!(!c.has("PIPELINING"));
        c.send("s@x", &["a@x"], b"x\r\n").await.unwrap();
        let params = super::super::client::MailParams {
            sender: "s@x".into(),
            ..Default::default()
        };
        let out = c
            .send_reused(
                &params,
                &[super::super::client::RcptParams::plain("a@x")],
                b"x\r\n",
            )
            .await
            .expect("the RSET was answered");
        assert_eq!(out.unwrap(), vec![super::super::Outcome::Delivered]);
        let seen = seen.lock().unwrap().clone();
        let verbs: Vec<&str> = seen
            .iter()
            .map(|l| l.split([' ', ':']).next().unwrap())
            .collect();
        assert_eq!(
            verbs,
            ["LHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"]
        );
    }

    #[tokio::test]
    async fn lmtp_pool_zero_opens_a_connection_per_delivery() {
        let (addr, conns) = server(Peer::Normal).await;
        let (config, hops) = hops_config(|c| c.mta.lmtp_pool = 0);
        for _ in 0..3 {
            let out = super::super::lmtp::deliver(
                &config,
                &hops,
                &addr.to_string(),
                Dialect::Lmtp,
                &envelope(),
                &rcpt(),
                b"x\r\n",
            )
            .await;
            assert_eq!(out, vec![(0, super::super::Outcome::Delivered)]);
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn smarthost_connection_is_reused_between_deliveries() {
        let (addr, conns) = server(Peer::Normal).await;
        let (config, hops) = hops_config(|c| {
            c.mta.relay = Some(addr.to_string().parse().unwrap());
            c.mta.relay_tls = crate::config::RelayTls::None;
        });
        for _ in 0..3 {
            let out =
                super::super::relay::deliver(&config, &hops, &envelope(), &rcpt(), b"x\r\n").await;
            assert_eq!(out.len(), 1);
            assert!(out[0].1.accepted(), "{out:?}");
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(hops.relay.idle_count(&addr), 1);
    }
}
