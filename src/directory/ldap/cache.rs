//! A short-lived cache of directory answers (positive and negative), so a
//! burst of mail to one address costs one search. Temporary failures are
//! never cached, nor are authentication results.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; beyond it expired ones are swept, and if that is
/// not enough the cache starts over (simple, and bounded).
const MAX_ENTRIES: usize = 100_000;

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

pub(super) struct TtlCache<V> {
    /// Milliseconds; changed by a reload (`set_ttl`).
    ttl_ms: std::sync::atomic::AtomicU64,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    /// A zero TTL disables the cache.
    pub fn new(ttl: Duration) -> TtlCache<V> {
        TtlCache {
            ttl_ms: ms(ttl).into(),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A new TTL (reloaded `directory.cache_ttl`): cached entries are
    /// judged by it from now on.
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms
            .store(ms(ttl), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let ttl = self.ttl();
        if ttl.is_zero() {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((at, v)) if at.elapsed() < ttl => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: &str, value: V) {
        if self.ttl().is_zero() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            let ttl = self.ttl();
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key.to_string(), (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = TtlCache::new(Duration::from_millis(50));
        c.insert("a", 1);
        assert_eq!(c.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn a_reloaded_ttl_applies_to_cached_entries() {
        let c = TtlCache::new(Duration::from_secs(300));
        c.insert("a", 1);
        std::thread::sleep(Duration::from_millis(20));
        c.set_ttl(Duration::from_millis(10));
        assert_eq!(c.get("a"), None);
        c.set_ttl(Duration::ZERO);
        c.insert("b", 2);
        assert_eq!(c.get("b"), None);
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let c = TtlCache::new(Duration::ZERO);
        c.insert("a", 1);
        assert_eq!(c.get("a"), None);
    }
}
