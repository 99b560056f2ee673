//! Failed-login counting per client address and per user, in memory, over
//! a sliding window (two fixed buckets). An mmp keeps no state that matters
//! after a restart: this table only slows down password guessing at one
//! process; behind a load balancer each mmp counts its own share.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries are swept when a table grows past this, keeping memory bounded
/// under a spray of addresses.
const SWEEP_AT: usize = 10_000;
/// Hard cap: beyond this, new keys are not counted (old ones still are).
const MAX_ENTRIES: usize = 200_000;

struct Counter {
    since: Instant,
    failures: u32,
}

struct Table<K> {
    max: u32,
    entries: HashMap<K, Counter>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(max: u32) -> Self {
        Table {
            max,
            entries: HashMap::new(),
        }
    }

    fn blocked(&mut self, key: &K, window: Duration, now: Instant) -> bool {
        if self.max == 0 {
            return false;
        }
        match self.entries.get(key) {
            Some(c) if now.duration_since(c.since) < window => c.failures >= self.max,
            Some(_) => {
                self.entries.remove(key);
                false
            }
            None => false,
        }
    }

    fn failure(&mut self, key: &K, window: Duration, now: Instant) {
        if self.max == 0 {
            return;
        }
        if self.entries.len() >= SWEEP_AT {
            self.entries
                .retain(|_, c| now.duration_since(c.since) < window);
        }
        if let Some(c) = self.entries.get_mut(key) {
            if now.duration_since(c.since) >= window {
                c.since = now;
                c.failures = 0;
            }
            c.failures = c.failures.saturating_add(1);
            return;
        }
        if self.entries.len() < MAX_ENTRIES {
            self.entries.insert(
                key.clone(),
                Counter {
                    since: now,
                    failures: 1,
                },
            );
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

pub struct LoginLimiter {
    window: Duration,
    by_ip: Mutex<Table<IpAddr>>,
    by_user: Mutex<Table<String>>,
}

impl LoginLimiter {
    /// `per_ip` / `per_user` failures within `window` block further logins
    /// until the window that began with the first failure has passed.
    /// 0 turns a limit off.
    pub fn new(per_ip: u32, per_user: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            window,
            by_ip: Mutex::new(Table::new(per_ip)),
            by_user: Mutex::new(Table::new(per_user)),
        }
    }

    /// Should this login be refused without checking the password?
    pub fn blocked(&self, ip: IpAddr, user: &str) -> bool {
        let now = Instant::now();
        let ip_blocked = lock(&self.by_ip).blocked(&ip, self.window, now);
        ip_blocked || lock(&self.by_user).blocked(&user.to_string(), self.window, now)
    }

    pub fn failure(&self, ip: IpAddr, user: &str) {
        let now = Instant::now();
        lock(&self.by_ip).failure(&ip, self.window, now);
        lock(&self.by_user).failure(&user.to_string(), self.window, now);
    }

    /// A successful login forgets the user's failures (not the address's:
    /// one right password must not reset a guesser's count).
    pub fn success(&self, user: &str) {
        lock(&self.by_user).clear(&user.to_string());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_per_ip_and_per_user_block_within_the_window() {
        let l = LoginLimiter::new(3, 2, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!l.blocked(a, "u1"));
        l.failure(a, "u1");
        assert!(!l.blocked(a, "u1"));
        l.failure(a, "u1");
        // u1 reached 2: blocked from any address.
        assert!(l.blocked(b, "u1"));
        assert!(!l.blocked(a, "u2"));
        l.failure(a, "u2");
        // a reached 3: blocked for any user.
        assert!(l.blocked(a, "u3"));
        assert!(!l.blocked(b, "u3"));
        l.success("u1");
        assert!(!l.blocked(b, "u1"));
    }

    #[test]
    fn the_window_expires_and_zero_disables() {
        let l = LoginLimiter::new(1, 1, Duration::from_millis(0));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        l.failure(a, "u");
        assert!(!l.blocked(a, "u"));
        let off = LoginLimiter::new(0, 0, Duration::from_secs(60));
        for _ in 0..100 {
            off.failure(a, "u");
        }
        assert!(!off.blocked(a, "u"));
    }
}
