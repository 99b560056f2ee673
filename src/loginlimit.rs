//! Failed-login limits shared by every login path (IMAP LOGIN and
//! AUTHENTICATE, POP3 USER/PASS and AUTH, SMTP AUTH on submission, the
//! mmp's IMAP and POP3): one `LoginLimiter` per process, held in
//! `Services`.
//!
//! Rules (`[limits]` in etc/msgd.toml, defaults in config.rs):
//! - Failures are counted per client (an IPv4 address, or an IPv6 /64:
//!   one host usually owns a whole /64) and per canonical account (the
//!   address the directory resolved, so `uid=alice`, `alice@example.com`
//!   and an alias of alice are one account), over a sliding window of
//!   `login_failure_window` seconds (two fixed buckets).
//! - A failure is answered after a growing delay: `login_failure_delay_ms`
//!   doubling with each failure of this client (or of this account, once
//!   the account is over its limit), capped at 8 times the base.
//! - A client with `max_login_failures_per_client` failures is refused
//!   outright, without a password check, after the longest delay (a
//!   refused attempt is never cheaper for the client than a real check).
//! - An account with `max_login_failures_per_account` failures is refused
//!   only to clients that themselves failed for it; any other client still
//!   gets a real check (slowed on failure), so a stranger cannot lock the
//!   owner out by guessing from elsewhere.
//!
//! In memory: a restart forgets, which is fine for a brake on guessing.
//! Memory is bounded: each table is swept when it grows past `SWEEP_AT`
//! and never holds more than `MAX_ENTRIES` keys; account names are kept as
//! keyed 64-bit hashes, so an entry is a few dozen bytes whatever the login
//! typed (three full tables: about 15 MB).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;
use crate::directory::{Account, AuthResult, DirError};

/// Expired entries are swept when a table grows past this.
const SWEEP_AT: usize = 10_000;
/// Hard cap per table: beyond it new keys are not counted (the client
/// table still refuses the clients it holds).
const MAX_ENTRIES: usize = 100_000;
/// The longest delay is this many times the base delay.
const MAX_DELAY_FACTOR: u32 = 8;

/// A client as the limits see it: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    V4(u32),
    V6Net(u64),
}

impl Client {
    pub fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(a) => Client::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6Net((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// Failures counted over two fixed buckets: the current one and the one
/// before, weighted by how much of it is still inside the window.
struct Counter {
    start: Instant,
    current: u32,
    previous: u32,
}

impl Counter {
    fn roll(&mut self, window: Duration, now: Instant) {
        let age = now.saturating_duration_since(self.start);
        if age >= window * 2 {
            self.previous = 0;
            self.current = 0;
            self.start = now;
        } else if age >= window {
            self.previous = self.current;
            self.current = 0;
            self.start += window;
        }
    }

    fn count(&self, window: Duration, now: Instant) -> u32 {
        let age = now.saturating_duration_since(self.start);
        if window.is_zero() || age >= window * 2 {
            return 0;
        }
        if age >= window {
            // `current` has become the previous bucket.
            let left = 1.0 - (age - window).as_secs_f64() / window.as_secs_f64();
            return (f64::from(self.current) * left) as u32;
        }
        let left = 1.0 - age.as_secs_f64() / window.as_secs_f64();
        self.current + (f64::from(self.previous) * left) as u32
    }
}

struct Table<K> {
    entries: HashMap<K, Counter>,
    /// Size at which expired entries are next swept (doubles when a sweep
    /// frees little, so a spray costs amortised constant time per key).
    next_sweep: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            entries: HashMap::new(),
            next_sweep: SWEEP_AT,
        }
    }

    fn count(&self, key: &K, window: Duration, now: Instant) -> u32 {
        self.entries.get(key).map_or(0, |c| c.count(window, now))
    }

    fn add(&mut self, key: &K, window: Duration, now: Instant) {
        if self.entries.len() >= self.next_sweep {
            self.entries.retain(|_, c| c.count(window, now) > 0);
            self.next_sweep = (self.entries.len() * 2).max(SWEEP_AT);
        }
        if let Some(c) = self.entries.get_mut(key) {
            c.roll(window, now);
            c.current = c.current.saturating_add(1);
            return;
        }
        if self.entries.len() < MAX_ENTRIES {
            self.entries.insert(
                key.clone(),
                Counter {
                    start: now,
                    current: 1,
                    previous: 0,
                },
            );
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The limits in force (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures from one client before it is refused; 0: no limit.
    pub per_client: u32,
    /// Failures for one account before clients that failed for it are
    /// refused; 0: no limit.
    pub per_account: u32,
    pub window: Duration,
    /// Delay before the first failure answer; doubles with each failure.
    pub delay: Duration,
}

impl Limits {
    pub fn from_config(l: &LimitsConfig) -> Limits {
        Limits {
            per_client: l.max_login_failures_per_client,
            per_account: l.max_login_failures_per_account,
            window: Duration::from_secs(l.login_failure_window.max(1)),
            delay: Duration::from_millis(l.login_failure_delay_ms),
        }
    }
}

/// What the limiter says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password.
    Check,
    /// Refuse without looking at the password; answer after the delay.
    Refuse(Duration),
}

/// The process-wide failed-login table.
pub struct LoginLimiter {
    /// Replaced by a reload (SIGHUP, `set_limits`); the tables stay.
    limits: Mutex<Limits>,
    by_client: Mutex<Table<Client>>,
    /// Accounts by a keyed hash of the lowercase name: a fixed 8 bytes
    /// per entry whatever a stranger types as login.
    by_account: Mutex<Table<u64>>,
    /// Failures of one client for one account: the account limit only
    /// refuses these clients.
    by_pair: Mutex<Table<(Client, u64)>>,
    /// Per-process random key of the account hash.
    hasher: std::collections::hash_map::RandomState,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> LoginLimiter {
        LoginLimiter {
            limits: Mutex::new(limits),
            by_client: Mutex::new(Table::new()),
            by_account: Mutex::new(Table::new()),
            by_pair: Mutex::new(Table::new()),
            hasher: Default::default(),
        }
    }

    pub fn from_config(l: &LimitsConfig) -> LoginLimiter {
        LoginLimiter::new(Limits::from_config(l))
    }

    /// The account key: a keyed hash of the lowercase, trimmed name.
    fn account_key(&self, account: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(account.trim().to_lowercase())
    }

    pub fn limits(&self) -> Limits {
        *lock(&self.limits)
    }

    /// New limits from a reloaded `[limits]` (SIGHUP): the failures
    /// already counted stay and are judged by the new numbers.
    pub fn set_limits(&self, limits: Limits) {
        *lock(&self.limits) = limits;
    }

    /// The delay before answering the `n`-th failure: base, 2x, 4x, 8x.
    pub fn delay_for(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(MAX_DELAY_FACTOR.trailing_zeros());
        self.limits().delay.saturating_mul(1 << exp)
    }

    /// The answer delay of a refused attempt: the longest one.
    pub fn refusal_delay(&self) -> Duration {
        self.limits().delay.saturating_mul(MAX_DELAY_FACTOR)
    }

    fn client_over(&self, c: Client, now: Instant) -> bool {
        let l = self.limits();
        l.per_client > 0 && lock(&self.by_client).count(&c, l.window, now) >= l.per_client
    }

    fn account_over_for(&self, c: Client, account: &str, now: Instant) -> bool {
        let l = self.limits();
        if l.per_account == 0 {
            return false;
        }
        let key = self.account_key(account);
        lock(&self.by_account).count(&key, l.window, now) >= l.per_account
            && lock(&self.by_pair).count(&(c, key), l.window, now) > 0
    }

    /// Before the password check. `login` is the name as typed, qualified
    /// (`qualify_login`): when it is the canonical name, a client already
    /// refused for that account is refused without spending a check.
    pub fn before(&self, ip: IpAddr, login: &str) -> Verdict {
        let c = Client::of(ip);
        let now = Instant::now();
        if self.client_over(c, now) || self.account_over_for(c, login, now) {
            Verdict::Refuse(self.refusal_delay())
        } else {
            Verdict::Check
        }
    }

    /// After the check, with the canonical account (right or wrong
    /// password): is this client refused for this account? The answer
    /// must not depend on the password, so call it for both outcomes.
    pub fn refused_for(&self, ip: IpAddr, account: &str) -> bool {
        self.account_over_for(Client::of(ip), account, Instant::now())
    }

    /// Records a failure (wrong password, unknown user) of `ip` for
    /// `account` (the canonical address, or the qualified login when no
    /// such user exists) and returns the delay before the answer.
    pub fn failure(&self, ip: IpAddr, account: &str) -> Duration {
        let c = Client::of(ip);
        let key = self.account_key(account);
        let now = Instant::now();
        let l = self.limits();
        let w = l.window;
        let (n_client, n_account) = {
            let mut t = lock(&self.by_client);
            t.add(&c, w, now);
            let n_client = t.count(&c, w, now);
            drop(t);
            let mut t = lock(&self.by_account);
            t.add(&key, w, now);
            (n_client, t.count(&key, w, now))
        };
        lock(&self.by_pair).add(&(c, key), w, now);
        // An account under attack slows every failure for it, wherever it
        // comes from.
        let over = l.per_account > 0 && n_account >= l.per_account;
        let n = if over {
            n_client.max(MAX_DELAY_FACTOR)
        } else {
            n_client
        };
        self.delay_for(n)
    }

    /// A right password: this client's failures for this account are
    /// forgotten (not the client's total, nor the account's: one right
    /// password must not reset a guesser's count).
    pub fn success(&self, ip: IpAddr, account: &str) {
        lock(&self.by_pair).clear(&(Client::of(ip), self.account_key(account)));
    }

    /// Keys held (clients, accounts, pairs), for tests and metrics.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            lock(&self.by_client).len(),
            lock(&self.by_account).len(),
            lock(&self.by_pair).len(),
        )
    }
}

/// A password check as the limits let it out.
#[derive(Debug)]
pub enum Checked {
    Ok(Account),
    /// Wrong password or unknown user; the delay was served.
    Failed,
    /// Right password, disabled account.
    Inactive,
    /// Too many failures from this client (or of this client for this
    /// account): refused whatever the password, after the longest delay.
    Refused,
    /// The directory could not answer.
    Unavailable(DirError),
}

impl LoginLimiter {
    /// Runs one password check under the limits: refuses a client over
    /// its limit without checking, counts failures against the canonical
    /// account the directory names (`AuthResult::Failed(Some(..))`), and
    /// waits the failure delay before returning. `typed` is the login as
    /// typed, qualified with the default domain. Every path calls this, so
    /// the rules hold the same for IMAP, POP3, SMTP AUTH and the mmp.
    pub async fn check<F>(&self, ip: IpAddr, typed: &str, check: F) -> Checked
    where
        F: std::future::Future<Output = Result<AuthResult, DirError>>,
    {
        if let Verdict::Refuse(d) = self.before(ip, typed) {
            tokio::time::sleep(d).await;
            return Checked::Refused;
        }
        let result = match check.await {
            Ok(r) => r,
            Err(e) => return Checked::Unavailable(e),
        };
        let account = result.failure_key(typed).to_string();
        // Decided before the password's verdict is used, so a refused
        // client learns nothing about the password from the answer.
        if self.refused_for(ip, &account) {
            if matches!(result, AuthResult::Failed(_)) {
                self.failure(ip, &account);
            }
            tokio::time::sleep(self.refusal_delay()).await;
            return Checked::Refused;
        }
        match result {
            AuthResult::Ok(a) => {
                self.success(ip, &account);
                Checked::Ok(a)
            }
            AuthResult::Inactive => Checked::Inactive,
            AuthResult::Failed(_) => {
                let d = self.failure(ip, &account);
                tokio::time::sleep(d).await;
                Checked::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_client: u32, per_account: u32) -> LoginLimiter {
        LoginLimiter::new(Limits {
            per_client,
            per_account,
            window: Duration::from_secs(60),
            delay: Duration::from_millis(100),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        assert_eq!(
            Client::of(ip("2001:db8:1:2::1")),
            Client::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Client::of(ip("2001:db8:1:2::1")),
            Client::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Client::of(ip("::ffff:192.0.2.1")),
            Client::of(ip("192.0.2.1"))
        );
        assert_ne!(Client::of(ip("192.0.2.1")), Client::of(ip("192.0.2.2")));
    }

    #[test]
    fn a_guessing_client_is_slowed_then_refused() {
        let l = limiter(3, 0);
        let a = ip("192.0.2.1");
        let mut last = Duration::ZERO;
        for _ in 0..3 {
            assert_eq!(l.before(a, "x@y"), Verdict::Check);
            let d = l.failure(a, "x@y");
            assert!(d > last, "growing delay");
            last = d;
        }
        // Refused for any account, after the longest delay.
        assert_eq!(
            l.before(a, "other@y"),
            Verdict::Refuse(Duration::from_millis(800))
        );
        // Another address of the same /64 group is the same client; another is not.
        assert_eq!(l.before(ip("192.0.2.2"), "x@y"), Verdict::Check);
        let v6 = limiter(2, 0);
        v6.failure(ip("2001:db8::1"), "x@y");
        v6.failure(ip("2001:db8::2"), "z@y");
        assert!(matches!(
            v6.before(ip("2001:db8::3"), "q@y"),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn the_account_limit_does_not_lock_out_the_owner() {
        let l = limiter(0, 3);
        let attacker = ip("192.0.2.1");
        let owner = ip("198.51.100.7");
        for _ in 0..5 {
            l.failure(attacker, "alice@example.com");
        }
        assert!(matches!(
            l.before(attacker, "alice@example.com"),
            Verdict::Refuse(_)
        ));
        assert!(l.refused_for(attacker, "Alice@Example.com"));
        // The owner, who never failed, still gets a real check.
        assert_eq!(l.before(owner, "alice@example.com"), Verdict::Check);
        assert!(!l.refused_for(owner, "alice@example.com"));
        // A failure for an account under attack is slowed to the longest delay.
        assert_eq!(
            l.failure(ip("203.0.113.5"), "alice@example.com"),
            Duration::from_millis(800)
        );
        // A success forgets only that client's failures for the account.
        l.failure(owner, "alice@example.com");
        assert!(l.refused_for(owner, "alice@example.com"));
        l.success(owner, "alice@example.com");
        assert!(!l.refused_for(owner, "alice@example.com"));
        assert!(l.refused_for(attacker, "alice@example.com"));
    }

    #[test]
    fn zero_turns_limits_off_and_the_window_expires() {
        let l = limiter(0, 0);
        let a = ip("192.0.2.1");
        for _ in 0..50 {
            l.failure(a, "u");
        }
        assert_eq!(l.before(a, "u"), Verdict::Check);
        let l = LoginLimiter::new(Limits {
            per_client: 1,
            per_account: 1,
            window: Duration::from_millis(1),
            delay: Duration::ZERO,
        });
        l.failure(a, "u");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(l.before(a, "u"), Verdict::Check);
    }

    fn alice() -> Account {
        Account::new("alice@example.com")
    }

    #[tokio::test]
    async fn check_counts_the_canonical_account_not_the_spelling() {
        let l = LoginLimiter::new(Limits {
            delay: Duration::from_millis(1),
            ..limiter(0, 3).limits()
        });
        let attacker = ip("192.0.2.1");
        // Three spellings of alice: uid, address, an alias.
        for typed in ["alice@localdomain", "ALICE@example.com", "team@example.com"] {
            let r = l
                .check(attacker, typed, async {
                    Ok(AuthResult::Failed(Some("alice@example.com".into())))
                })
                .await;
            assert!(matches!(r, Checked::Failed));
        }
        // Refused now, even with the right password, before any check
        // when the spelling is canonical, and after it otherwise.
        let r = l
            .check(attacker, "alice@example.com", async {
                panic!("no check for a refused client")
            })
            .await;
        assert!(matches!(r, Checked::Refused));
        let r = l
            .check(attacker, "alice@localdomain", async {
                Ok(AuthResult::Ok(alice()))
            })
            .await;
        assert!(matches!(r, Checked::Refused));
        // The owner elsewhere logs in.
        let r = l
            .check(ip("198.51.100.7"), "alice@example.com", async {
                Ok(AuthResult::Ok(alice()))
            })
            .await;
        assert!(matches!(r, Checked::Ok(_)));
        // The directory being down is not a failure.
        let r = l
            .check(ip("198.51.100.8"), "x@y", async {
                Err(DirError::Temporary("down".into()))
            })
            .await;
        assert!(matches!(r, Checked::Unavailable(_)));
    }

    #[tokio::test]
    async fn a_refused_attempt_takes_the_longest_delay() {
        let l = LoginLimiter::new(Limits {
            delay: Duration::from_millis(5),
            ..limiter(1, 0).limits()
        });
        let a = ip("192.0.2.1");
        let t = std::time::Instant::now();
        l.check(a, "x@y", async { Ok(AuthResult::Failed(None)) })
            .await;
        assert!(t.elapsed() >= Duration::from_millis(5));
        let t = std::time::Instant::now();
        let r = l
            .check(a, "x@y", async { Ok(AuthResult::Failed(None)) })
            .await;
        assert!(matches!(r, Checked::Refused));
        assert!(t.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn memory_is_bounded_under_a_spray() {
        let l = limiter(5, 5);
        for i in 0..(MAX_ENTRIES as u32 + 500) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(i));
            l.failure(a, &format!("user{i}@example.com"));
        }
        let (c, a, p) = l.sizes();
        assert!(c <= MAX_ENTRIES && a <= MAX_ENTRIES && p <= MAX_ENTRIES);
        // Long names cost no more than short ones: keys are hashes.
        assert_eq!(
            l.account_key(&"x".repeat(10_000)),
            l.account_key(&"X".repeat(10_000))
        );
    }
}
