//! Single flight: concurrent lookups of the same key share one call to
//! the back end (a burst of RCPTs for one address, a list fanning out to
//! the same members, many logins of one user after a restart).
//!
//! Keys are normalized by the caller (`canonical_address`, a lowercase
//! domain). Only lookups in flight are shared: once the answer is there
//! the key is forgotten, and caching stays the back end's business (the
//! LDAP TTL cache). A temporary failure is shared like any answer by the
//! callers that were waiting for it; the next lookup asks again.
//!
//! Cancellation: a caller that gives up (its session ended) does not fail
//! the others: the next waiter runs the lookup itself
//! (`tokio::sync::OnceCell::get_or_init`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Lookups in flight by key.
pub struct SingleFlight<K, V> {
    inflight: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// The answer for `key`: from a lookup already in flight, else from
    /// `lookup()`, which the callers arriving meanwhile then share.
    pub async fn run<F, Fut>(&self, key: K, lookup: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let v = cell.get_or_init(lookup).await.clone();
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        v
    }

    /// Keys in flight (tests).
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_lookups_of_one_key_make_one_backend_call() {
        let sf: Arc<SingleFlight<String, u32>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (sf, calls, gate) = (sf.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                sf.run("alice@example.test".to_string(), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    7
                })
                .await
            }));
        }
        // Every task is waiting on the one lookup.
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(sf.in_flight(), 0, "the key is forgotten once answered");
    }

    #[tokio::test]
    async fn different_keys_and_later_lookups_are_not_shared() {
        let sf: SingleFlight<&str, usize> = SingleFlight::default();
        let calls = AtomicUsize::new(0);
        let call = || async { calls.fetch_add(1, Ordering::SeqCst) };
        assert_eq!(sf.run("a", call).await, 0);
        assert_eq!(sf.run("a", call).await, 1, "not a cache");
        assert_eq!(sf.run("b", call).await, 2);
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_fail_the_waiters() {
        let sf: Arc<SingleFlight<&'static str, u32>> = Arc::default();
        let sf2 = sf.clone();
        let first = tokio::spawn(async move {
            sf2.run("k", || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                1
            })
            .await
        });
        tokio::task::yield_now().await;
        let sf3 = sf.clone();
        let second = tokio::spawn(async move { sf3.run("k", || async { 2 }).await });
        tokio::task::yield_now().await;
        first.abort();
        assert_eq!(second.await.unwrap(), 2);
    }

    /// N concurrent `Directory::lookup`s of one address against a real
    /// slapd make one LDAP search. The LDAP cache is off (TTL 0) so every
    /// call that reaches the back end is a miss and searches.
    #[tokio::test]
    async fn directory_coalesces_concurrent_misses_for_one_address() {
        use crate::directory::ldap::testslapd::{Slapd, BASE_DN, BIND_DN, BIND_PASSWORD};
        use crate::directory::{Directory, Recipient};
        let s = Slapd::start();
        let mut c = crate::config::Config::default();
        c.directory.backend = "ldap".parse().unwrap();
        let l = &mut c.directory.ldap;
        l.urls = vec![s.url.clone()];
        l.base_dn = BASE_DN.into();
        l.bind_dn = BIND_DN.into();
        l.bind_password = BIND_PASSWORD.into();
        c.directory.cache_ttl = 0;
        let d = Directory::open(&c).unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let d = d.clone();
            // Spellings differ; the normalized key is the same.
            let addr = if i % 2 == 0 {
                "alice@example.test"
            } else {
                " Alice@EXAMPLE.test"
            };
            tasks.push(tokio::spawn(async move { d.lookup(addr).await }));
        }
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Some(Recipient::User(a)) => assert_eq!(a.address, "alice@example.test"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(d.cache_stats(), Some((0, 1)), "one search for 20 lookups");
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                d.is_local_domain("Example.TEST").await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap());
        }
        assert_eq!(
            d.cache_stats(),
            Some((0, 2)),
            "one search for 10 domain questions"
        );
        // Afterwards a lookup asks again (not a cache).
        d.lookup("alice@example.test").await.unwrap();
        assert_eq!(d.cache_stats(), Some((0, 3)));
    }
}
