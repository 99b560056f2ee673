//! The verified-credential cache (what Dovecot calls its auth cache), and
//! the [`Auth`] handle that pairs it with the password hashing pool.
//!
//! After a password check succeeds, the cache remembers for `auth.cache_ttl`
//! seconds (default 300; 0 turns the cache off) an HMAC-SHA256, under a
//! key drawn at random when the process starts, of (entry, the entry's
//! password state, password). A later login with the same password for
//! the same unchanged entry is then answered by one HMAC instead of a
//! full hash. At most `auth.cache_size` entries (default 100000) are
//! kept; the oldest verification goes first.
//!
//! Invariants:
//! - The password is never stored, nor anything from which it could be
//!   checked offline: the HMAC key never leaves the process memory and
//!   changes at every start.
//! - Only a successful full check adds an entry, and the entry's clock
//!   starts then: a hit never extends it. A wrong password, the absence of
//!   an entry or an expired one always runs the full check (and the login
//!   limiter's delays, which wrap the whole check).
//! - Any failed check for an entry removes it at once.
//! - The entry's password state is part of the HMAC input: the stored
//!   hash for the embedded directory, the DN and change stamps
//!   (`entryCSN`, `modifyTimestamp`, ...) for LDAP. A changed password or
//!   entry therefore misses at once; LDAP entries without any stamp are
//!   never cached.
//! - Only "is this the password" is cached: whether the account exists,
//!   is active, and where its mail lives is read from the directory at
//!   every login.
//! - Tags are compared in constant time (`ring::hmac::verify`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::hmac;

use crate::config::AuthConfig;
use crate::directory::password::{Argon2Params, HashPool};
use crate::directory::DirError;

/// Where the cache reads the time (injected in tests).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The password side of the directory: the credential cache and the
/// hashing pool. One per `Directory` (so one per process in production).
pub struct Auth {
    pub cache: CredentialCache,
    pub pool: HashPool,
}

impl Auth {
    pub fn from_config(c: &AuthConfig) -> Auth {
        Auth {
            cache: CredentialCache::new(
                Duration::from_secs(c.cache_ttl),
                c.cache_size,
                Arc::new(Instant::now),
            ),
            pool: HashPool::new(c.hash_threads, c.argon2()),
        }
    }

    /// Is `password` right for the entry `key` whose password state is
    /// `version`? Answered by the cache, else by `full_check` (whose
    /// verdict then updates the cache: remembered if right, forgotten if
    /// wrong). A temporary failure leaves the cache as it was.
    pub async fn check<F, Fut>(
        &self,
        key: &str,
        version: &str,
        password: &str,
        full_check: F,
    ) -> Result<bool, DirError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, DirError>>,
    {
        if self.cache.hit(key, version, password) {
            return Ok(true);
        }
        let ok = full_check().await?;
        if ok {
            self.cache.remember(key, version, password);
        } else {
            self.cache.forget(key);
        }
        Ok(ok)
    }
}

/// One remembered verification.
struct Entry<V> {
    /// HMAC-SHA256 of (key, version, password).
    tag: [u8; 32],
    /// When the full check succeeded.
    at: Instant,
    /// Position in `Inner::order`.
    seq: u64,
    /// What the full check found (the account, for the mmp's login
    /// cache); nothing for the password cache.
    value: V,
}

struct Inner<V> {
    /// By entry key (canonical address, or LDAP DN lowercased).
    entries: HashMap<String, Entry<V>>,
    /// Keys by age, oldest first, for eviction.
    order: BTreeMap<u64, String>,
    next: u64,
}

impl<V> Default for Inner<V> {
    fn default() -> Self {
        Inner {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<V> Inner<V> {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.seq);
        }
    }
}

/// Bounded, time-limited map of entry -> HMAC of the verified password
/// (and, with `V`, what the check found).
pub struct CredentialCache<V = ()> {
    /// Milliseconds; changed by a reload (`set_ttl`, SIGHUP).
    ttl_ms: AtomicU64,
    size: usize,
    key: hmac::Key,
    clock: Clock,
    inner: Mutex<Inner<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CredentialCache<()> {
    /// Was `password` verified for `key` in state `version` within the TTL?
    pub fn hit(&self, key: &str, version: &str, password: &str) -> bool {
        self.get(key, version, password).is_some()
    }

    /// Records a successful full check.
    pub fn remember(&self, key: &str, version: &str, password: &str) {
        self.remember_with(key, version, password, ());
    }
}

impl<V: Clone> CredentialCache<V> {
    /// `ttl` zero or `size` zero: nothing is ever remembered.
    pub fn new(ttl: Duration, size: usize, clock: Clock) -> CredentialCache<V> {
        let rng = ring::rand::SystemRandom::new();
        // Failing to draw a key only happens without an OS RNG, where
        // nothing else (TLS) would work either.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the OS random generator is available");
        CredentialCache {
            ttl_ms: AtomicU64::new(ttl.as_millis().try_into().unwrap_or(u64::MAX)),
            size,
            key,
            clock,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// A new `auth.cache_ttl` from a reloaded configuration: remembered
    /// checks are judged by it from now on (a shorter one ends them
    /// sooner; zero forgets them all at their next use).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(
            ttl.as_millis().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn enabled(&self) -> bool {
        !self.ttl().is_zero() && self.size > 0
    }

    /// What the full check found, if `password` was verified for `key`
    /// in state `version` within the TTL.
    pub fn get(&self, key: &str, version: &str, password: &str) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let now = (self.clock)();
        let message = message(key, version, password);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let verdict = match inner.entries.get(key) {
            None => None,
            Some(e) if now.saturating_duration_since(e.at) >= self.ttl() => Some(None),
            Some(e) => Some(
                hmac::verify(&self.key, &message, &e.tag)
                    .is_ok()
                    .then(|| e.value.clone()),
            ),
        };
        match verdict {
            Some(Some(v)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Some(None) => {
                // Expired, or another password (or a changed entry): the
                // full check decides, and replaces or removes the entry.
                if inner
                    .entries
                    .get(key)
                    .is_some_and(|e| now.saturating_duration_since(e.at) >= self.ttl())
                {
                    inner.remove(key);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Records a successful full check and what it found.
    pub fn remember_with(&self, key: &str, version: &str, password: &str, value: V) {
        if !self.enabled() {
            return;
        }
        let mut tag = [0u8; 32];
        tag.copy_from_slice(hmac::sign(&self.key, &message(key, version, password)).as_ref());
        let at = (self.clock)();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.remove(key);
        let seq = inner.next;
        inner.next += 1;
        inner.order.insert(seq, key.to_string());
        inner.entries.insert(
            key.to_string(),
            Entry {
                tag,
                at,
                seq,
                value,
            },
        );
        while inner.entries.len() > self.size {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
    }

    /// Drops what is known about `key` (a failed check, a changed entry).
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.remove(key);
    }

    /// No entry held now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// The HMAC input: each part length-prefixed, so no two different
/// triples share an encoding.
fn message(key: &str, version: &str, password: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + key.len() + version.len() + password.len());
    for part in [key, version, password] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part.as_bytes());
    }
    m
}

impl AuthConfig {
    /// The Argon2id parameters for new hashes.
    pub fn argon2(&self) -> Argon2Params {
        Argon2Params {
            m_cost: self.argon2_m_cost,
            t_cost: self.argon2_t_cost,
            p_cost: self.argon2_p_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand.
    fn manual_clock() -> (Clock, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let n = now.clone();
        (Arc::new(move || *n.lock().unwrap()), now)
    }

    fn cache(ttl: u64, size: usize) -> (CredentialCache, Arc<Mutex<Instant>>) {
        let (clock, now) = manual_clock();
        (
            CredentialCache::new(Duration::from_secs(ttl), size, clock),
            now,
        )
    }

    #[test]
    fn hit_only_for_the_same_entry_state_and_password() {
        let (c, _) = cache(300, 10);
        assert!(!c.hit("a@x", "h1", "pw"));
        c.remember("a@x", "h1", "pw");
        assert!(c.hit("a@x", "h1", "pw"));
        assert!(!c.hit("a@x", "h1", "pW"));
        assert!(!c.hit("a@x", "h2", "pw"), "a changed hash misses");
        assert!(!c.hit("b@x", "h1", "pw"));
        // Length prefixes: shifting bytes between parts is another input.
        assert!(!c.hit("a@x", "h1p", "w"));
        assert_eq!(c.stats(), (1, 5));
    }

    #[test]
    fn ttl_expiry_counts_from_the_full_check_not_from_hits() {
        let (c, now) = cache(300, 10);
        c.remember("a@x", "h", "pw");
        *now.lock().unwrap() += Duration::from_secs(299);
        assert!(c.hit("a@x", "h", "pw"));
        *now.lock().unwrap() += Duration::from_secs(1);
        assert!(!c.hit("a@x", "h", "pw"));
        assert_eq!(c.len(), 0, "the expired entry is dropped");
    }

    #[test]
    fn size_bound_evicts_the_oldest_verification() {
        let (c, _) = cache(300, 3);
        for u in ["a", "b", "c"] {
            c.remember(u, "h", "pw");
        }
        // Re-verifying a makes it the newest.
        c.remember("a", "h", "pw");
        c.remember("d", "h", "pw");
        assert_eq!(c.len(), 3);
        assert!(!c.hit("b", "h", "pw"), "b was the oldest");
        for u in ["a", "c", "d"] {
            assert!(c.hit(u, "h", "pw"), "{u}");
        }
        for i in 0..1000 {
            c.remember(&format!("u{i}"), "h", "pw");
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.inner.lock().unwrap().order.len(), 3);
    }

    #[test]
    fn a_reloaded_ttl_judges_remembered_checks_from_now_on() {
        let (c, now) = cache(300, 10);
        c.remember("a@x", "h", "pw");
        *now.lock().unwrap() += Duration::from_secs(100);
        c.set_ttl(Duration::from_secs(60));
        assert!(!c.hit("a@x", "h", "pw"), "older than the new TTL");
        c.remember("a@x", "h", "pw");
        c.set_ttl(Duration::ZERO);
        assert!(!c.hit("a@x", "h", "pw"), "TTL 0: no cache");
        c.set_ttl(Duration::from_secs(300));
        c.remember("a@x", "h", "pw");
        assert!(c.hit("a@x", "h", "pw"));
    }

    #[test]
    fn ttl_zero_or_size_zero_disables() {
        for (ttl, size) in [(0, 10), (300, 0)] {
            let (c, _) = cache(ttl, size);
            c.remember("a", "h", "pw");
            assert!(!c.hit("a", "h", "pw"));
            assert_eq!(c.len(), 0);
        }
    }

    #[test]
    fn the_password_is_not_in_the_cache() {
        let (c, _) = cache(300, 10);
        let pw = "Zebra-Unicorn-4711";
        c.remember("a@x", "h", pw);
        let inner = c.inner.lock().unwrap();
        let e = &inner.entries["a@x"];
        assert_eq!(e.tag.as_ref().len(), 32);
        assert!(!e.tag.as_ref().windows(pw.len()).any(|w| w == pw.as_bytes()));
    }

    #[test]
    fn each_process_has_its_own_key() {
        let (a, _) = cache(300, 10);
        let (b, _) = cache(300, 10);
        let m = message("a", "h", "pw");
        assert_ne!(
            hmac::sign(&a.key, &m).as_ref(),
            hmac::sign(&b.key, &m).as_ref()
        );
    }

    fn auth(ttl: u64) -> Auth {
        Auth {
            cache: cache(ttl, 10).0,
            pool: HashPool::new(1, Argon2Params::default()),
        }
    }

    /// A full check that counts how often it runs.
    async fn checked(auth: &Auth, runs: &AtomicU64, password: &str, right: &str) -> bool {
        auth.check("a@x", "h", password, || async {
            runs.fetch_add(1, Ordering::Relaxed);
            Ok(password == right)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_failed_check_forgets_the_entry_and_is_never_cached() {
        let a = auth(300);
        let runs = AtomicU64::new(0);
        assert!(checked(&a, &runs, "pw", "pw").await);
        assert!(checked(&a, &runs, "pw", "pw").await);
        assert_eq!(runs.load(Ordering::Relaxed), 1, "second login was a hit");
        // A wrong password runs the full check, every time, and drops
        // the entry: the right password then needs a full check again.
        assert!(!checked(&a, &runs, "bad", "pw").await);
        assert!(!checked(&a, &runs, "bad", "pw").await);
        assert_eq!(runs.load(Ordering::Relaxed), 3);
        assert_eq!(a.cache.len(), 0);
        assert!(checked(&a, &runs, "pw", "pw").await);
        assert_eq!(runs.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_temporary_failure_changes_nothing() {
        let a = auth(300);
        a.cache.remember("a@x", "h", "pw");
        let r = a
            .check("a@x", "h", "other", || async {
                Err(DirError::Temporary("down".into()))
            })
            .await;
        assert!(r.is_err());
        assert!(a.cache.hit("a@x", "h", "pw"));
    }

    /// Through the real directory (embedded file) and the login sequence.
    mod directory {
        use super::*;
        use crate::config::Config;
        use crate::directory::{embedded, AuthResult, Directory};
        use crate::login::{login, Accounts, Credentials, Outcome, Protocol, Rules, Serves};
        use crate::loginlimit::{Limits, LoginLimiter};

        const A: &str = "a@x.test";

        struct Fixture {
            _dir: tempfile::TempDir,
            path: std::path::PathBuf,
            config: Config,
            directory: Arc<Directory>,
        }

        fn fixture(edit: impl FnOnce(&mut Config)) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("directory.json");
            embedded::edit(&path, |d| {
                embedded::add_user(d, A, "pw", None, true)?;
                embedded::add_user(d, "off@x.test", "pw", None, false)
            })
            .unwrap();
            let mut config = Config::default();
            config.server.data_dir = dir.path().to_path_buf();
            config.server.domain = "x.test".into();
            config.directory.path = path.display().to_string();
            edit(&mut config);
            Fixture {
                directory: Directory::open(&config).unwrap(),
                _dir: dir,
                path,
                config,
            }
        }

        impl Fixture {
            async fn auth(&self, login: &str, pw: &str) -> AuthResult {
                self.directory
                    .authenticate(login, pw, "x.test")
                    .await
                    .unwrap()
            }

            /// Full hashes run so far.
            fn hashes(&self) -> u64 {
                self.directory.auth().pool.verifications()
            }

            /// Replaces a's password hash, and waits until the running
            /// directory has re-read the file (embedded.rs RECHECK).
            fn set_password(&self, pw: &str) {
                let hash = crate::directory::password::hash(pw).unwrap();
                embedded::edit(&self.path, |d| {
                    d.users.get_mut(A).unwrap().password = hash;
                    Ok(())
                })
                .unwrap();
                std::thread::sleep(Duration::from_millis(600));
            }
        }

        fn ok(r: AuthResult) -> bool {
            matches!(r, AuthResult::Ok(ref a) if a.address == A)
        }

        #[tokio::test]
        async fn cache_hit_skips_the_hash() {
            let f = fixture(|_| {});
            assert!(ok(f.auth("a", "pw").await));
            assert_eq!(f.hashes(), 1);
            for login in ["a", "A@X.test", A] {
                assert!(ok(f.auth(login, "pw").await), "{login}");
            }
            assert_eq!(f.hashes(), 1, "every later login was a cache hit");
            assert_eq!(f.directory.auth().cache.stats().0, 3);
        }

        #[tokio::test]
        async fn cache_off_with_ttl_zero_hashes_every_time() {
            let f = fixture(|c| c.auth.cache_ttl = 0);
            for _ in 0..3 {
                assert!(ok(f.auth("a", "pw").await));
            }
            assert_eq!(f.hashes(), 3);
        }

        #[tokio::test]
        async fn miss_after_a_password_change_refuses_the_old_password_at_once() {
            let f = fixture(|_| {});
            assert!(ok(f.auth("a", "pw").await));
            assert!(ok(f.auth("a", "pw").await));
            assert_eq!(f.hashes(), 1);
            f.set_password("new-pw");
            // The new hash is part of the HMAC input: the old password
            // misses, gets a full check, and fails.
            assert_eq!(f.auth("a", "pw").await, AuthResult::Failed(Some(A.into())));
            assert_eq!(f.hashes(), 2);
            assert!(ok(f.auth("a", "new-pw").await));
            assert!(ok(f.auth("a", "new-pw").await));
            assert_eq!(f.hashes(), 3);
        }

        #[tokio::test]
        async fn miss_after_a_failure() {
            let f = fixture(|_| {});
            assert!(ok(f.auth("a", "pw").await));
            assert_eq!(
                f.auth("a", "wrong").await,
                AuthResult::Failed(Some(A.into()))
            );
            assert_eq!(f.hashes(), 2, "a failure always costs the full hash");
            assert!(ok(f.auth("a", "pw").await));
            assert_eq!(f.hashes(), 3, "the failure dropped the entry");
            // A failed login naming a through an alias forgets it too.
            embedded::edit(&f.path, |d| {
                d.aliases.insert("al@x.test".into(), vec![A.into()]);
                Ok(())
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(600));
            assert!(ok(f.auth("a", "pw").await));
            assert_eq!(f.hashes(), 3);
            assert_eq!(f.auth("al", "pw").await, AuthResult::Failed(Some(A.into())));
            assert_eq!(f.hashes(), 4, "an unknown login costs a hash too");
            assert!(ok(f.auth("a", "pw").await));
            assert_eq!(f.hashes(), 5);
        }

        #[tokio::test]
        async fn account_state_is_read_fresh_on_a_hit() {
            let f = fixture(|_| {});
            assert!(ok(f.auth("a", "pw").await));
            embedded::edit(&f.path, |d| {
                d.users.get_mut(A).unwrap().account.active = false;
                Ok(())
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(600));
            assert_eq!(f.auth("a", "pw").await, AuthResult::Inactive);
            assert_eq!(f.hashes(), 1, "same hash: a hit, but the account is off");
            assert_eq!(f.auth("off", "pw").await, AuthResult::Inactive);
        }

        #[tokio::test]
        async fn failures_keep_the_login_limits_even_with_a_cached_password() {
            let f = fixture(|_| {});
            let limiter = LoginLimiter::new(Limits {
                per_client: 3,
                per_account: 0,
                window: Duration::from_secs(60),
                delay: Duration::ZERO,
            });
            let accounts = Accounts::of(f.directory.clone(), "x.test");
            let rules = Rules {
                protocol: Protocol::Imap,
                config: &f.config,
                login_networks: &[],
                proxy_users: &[],
                limiter: &limiter,
                accounts: &accounts,
                serves: Serves::Nothing,
            };
            let conn = crate::net::ConnInfo::for_test(crate::config::Protocol::Imap);
            let go = |pw: &'static str| login(&rules, &conn, Credentials::password("a", pw));
            assert!(matches!(go("pw").await, Outcome::Ok(_)));
            assert!(matches!(go("pw").await, Outcome::Ok(_)));
            assert_eq!(f.hashes(), 1);
            for _ in 0..3 {
                assert!(matches!(go("wrong").await, Outcome::Failed));
            }
            assert!(matches!(go("pw").await, Outcome::RateLimited));
            assert_eq!(f.hashes(), 4, "refused without a check");
        }
    }
}
