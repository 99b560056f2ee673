//! Greylisting: the first delivery attempt of an unknown (client network,
//! sender, recipient) triplet is deferred; triplets kept durably.
//!
//! A triplet is (client network: IPv4 /24, IPv6 /64 by default; envelope
//! sender lowercased, `<>` as ""; recipient lowercased). Its life:
//! first seen → `451 4.7.1` and remembered (one durable write); a retry
//! before `delay` → 451 again (no write); a retry within `retry_window`
//! after the delay → passes and is remembered as passed; a later retry
//! starts over. A passed triplet passes at once until it has been unused
//! for `expire`. Only strangers on port 25 are greylisted (the caller
//! skips the local allowlist).
//!
//! State: `<data_dir>/greylist.redb`, one table; each change is one write
//! transaction committed durably before the answer. Expired rows are
//! removed at open and then at most once an hour (a blocking task).
//! redb locks the file: one process per data_dir opens it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tracing::{info, warn};

use super::{Client, Decision, Refusal};
use crate::config::{Config, GreylistConfig};

/// (network, sender, recipient) → (first seen, passed at or 0, last
/// seen), Unix seconds.
const TRIPLETS: TableDefinition<(&str, &str, &str), (u64, u64, u64)> =
    TableDefinition::new("greylist_triplets");

/// Seconds between purges of expired rows.
const PURGE_EVERY: u64 = 3600;

/// A passed triplet's last-seen time is rewritten at most this often.
const TOUCH_EVERY: u64 = 3600;

/// Longest sender or recipient kept in a key.
const MAX_ADDR: usize = 320;

/// Redb page cache: the table is small rows.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    first: u64,
    passed: u64,
    last: u64,
}

/// What `decide` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Defer,
}

/// `[hygiene.greylist]` and its triplet database.
#[derive(Default)]
pub struct Greylist {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    config: GreylistConfig,
    /// `config.domains`, lowercased.
    domains: Vec<String>,
    db: Database,
    path: PathBuf,
    /// When expired rows were last removed (Unix seconds).
    last_purge: AtomicU64,
}

impl Greylist {
    /// Opens (creates) `<data_dir>/greylist.redb` when greylisting is on
    /// and removes expired rows.
    pub fn open(config: &Config) -> anyhow::Result<Greylist> {
        let c = &config.hygiene.greylist;
        if !c.enabled {
            return Ok(Greylist::default());
        }
        let path = config.server.data_dir.join("greylist.redb");
        Ok(Greylist {
            inner: Some(Arc::new(Inner::open(c.clone(), &path, now())?)),
        })
    }

    pub async fn rcpt(&self, client: &Client, sender: &str, rcpt: &str) -> Decision {
        let Some(inner) = &self.inner else {
            return Decision::Pass;
        };
        if !client.is_stranger() || !inner.applies_to(rcpt) {
            return Decision::Pass;
        }
        let key = inner.triplet(client.ip, sender, rcpt);
        let inner = inner.clone();
        let t = now();
        let job = tokio::task::spawn_blocking(move || {
            let r = inner.check(&key, t);
            inner.maybe_purge(t);
            r
        });
        match job.await {
            Ok(Ok(Outcome::Pass)) => Decision::Pass,
            Ok(Ok(Outcome::Defer)) => Decision::Refuse(Refusal::new(
                451,
                "4.7.1",
                "Greylisted, please try again later",
            )),
            // Fail-open: a broken database does not stop mail.
            Ok(Err(e)) => {
                warn!(error = %e, "greylist database failed; passing");
                Decision::Pass
            }
            Err(e) => {
                warn!(error = %e, "greylist task failed; passing");
                Decision::Pass
            }
        }
    }
}

impl Inner {
    fn open(config: GreylistConfig, path: &Path, now: u64) -> anyhow::Result<Inner> {
        anyhow::ensure!(
            (1..=32).contains(&config.ipv4_prefix) && (1..=128).contains(&config.ipv6_prefix),
            "[hygiene.greylist] ipv4_prefix must be 1..=32 and ipv6_prefix 1..=128"
        );
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(TRIPLETS)?;
        txn.commit()?;
        let inner = Inner {
            domains: config
                .domains
                .iter()
                .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            config,
            db,
            path: path.to_path_buf(),
            last_purge: AtomicU64::new(now),
        };
        let removed = inner.purge(now)?;
        info!(path = %inner.path.display(), removed, "greylist database open");
        Ok(inner)
    }

    /// Is `rcpt`'s domain one greylisting applies to?
    fn applies_to(&self, rcpt: &str) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let domain = domain.trim_end_matches('.');
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    fn triplet(&self, ip: IpAddr, sender: &str, rcpt: &str) -> (String, String, String) {
        let net = super::ratelimit::network(ip, self.config.ipv4_prefix, self.config.ipv6_prefix);
        (net.to_string(), bounded(sender), bounded(rcpt))
    }

    /// Looks the triplet up and records what changed (durably, before
    /// answering).
    fn check(&self, key: &(String, String, String), now: u64) -> anyhow::Result<Outcome> {
        let k = (key.0.as_str(), key.1.as_str(), key.2.as_str());
        // The common case (a known, passed triplet) needs no write.
        let seen = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(TRIPLETS)?;
            table.get(k)?.map(|v| to_entry(v.value()))
        };
        let (outcome, write) = decide(seen, now, &self.config);
        if write.is_none() {
            return Ok(outcome);
        }
        // Decide again inside the write transaction: another session may
        // have changed the row meanwhile.
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut table = txn.open_table(TRIPLETS)?;
            let seen = table.get(k)?.map(|v| to_entry(v.value()));
            let (outcome, write) = decide(seen, now, &self.config);
            let cap = self.config.max_entries;
            if seen.is_none() && cap > 0 && table.len()? >= cap {
                // Full (a flood of distinct triplets): pass, remember nothing.
                warn!(entries = cap, "greylist full; passing an unknown triplet");
                return Ok(Outcome::Pass);
            }
            if let Some(e) = write {
                table.insert(k, (e.first, e.passed, e.last))?;
            }
            outcome
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// Purges once `PURGE_EVERY` has passed since the last purge.
    fn maybe_purge(&self, now: u64) {
        let last = self.last_purge.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PURGE_EVERY {
            return;
        }
        if self
            .last_purge
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        match self.purge(now) {
            Ok(n) if n > 0 => info!(removed = n, "greylist: expired triplets removed"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "greylist purge failed"),
        }
    }

    /// Removes expired rows; returns how many.
    fn purge(&self, now: u64) -> anyhow::Result<u64> {
        let txn = self.db.begin_write()?;
        let mut removed = 0u64;
        {
            let mut table = txn.open_table(TRIPLETS)?;
            table.retain(|_, v| {
                let keep = !expired(to_entry(v), now, &self.config);
                removed += u64::from(!keep);
                keep
            })?;
        }
        txn.commit()?;
        Ok(removed)
    }

    #[cfg(test)]
    fn len(&self) -> u64 {
        let txn = self.db.begin_read().unwrap();
        txn.open_table(TRIPLETS).unwrap().len().unwrap()
    }
}

fn to_entry((first, passed, last): (u64, u64, u64)) -> Entry {
    Entry {
        first,
        passed,
        last,
    }
}

/// Is the row of no more use: a passed triplet unused for `expire`, or
/// a deferred one whose retry window is over?
fn expired(e: Entry, now: u64, c: &GreylistConfig) -> bool {
    match e.passed {
        0 => now.saturating_sub(e.first) > c.delay.saturating_add(c.retry_window),
        _ => now.saturating_sub(e.last) > c.expire,
    }
}

/// The greylisting rule: what to answer and what row to write, if any.
fn decide(seen: Option<Entry>, now: u64, c: &GreylistConfig) -> (Outcome, Option<Entry>) {
    let fresh = Entry {
        first: now,
        passed: 0,
        last: now,
    };
    let Some(e) = seen.filter(|e| !expired(*e, now, c)) else {
        return (Outcome::Defer, Some(fresh));
    };
    if e.passed != 0 {
        let touch = (now.saturating_sub(e.last) >= TOUCH_EVERY).then_some(Entry { last: now, ..e });
        return (Outcome::Pass, touch);
    }
    if now.saturating_sub(e.first) < c.delay {
        return (Outcome::Defer, None);
    }
    (
        Outcome::Pass,
        Some(Entry {
            passed: now,
            last: now,
            ..e
        }),
    )
}

/// An address as a key part: lowercased, at most `MAX_ADDR` bytes.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_ADDR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_lowercase()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GreylistConfig {
        GreylistConfig {
            enabled: true,
            delay: 300,
            retry_window: 3600,
            expire: 86400,
            ..GreylistConfig::default()
        }
    }

    fn key(ip: &str, s: &str, r: &str, inner: &Inner) -> (String, String, String) {
        inner.triplet(ip.parse().unwrap(), s, r)
    }

    #[test]
    fn rule_defers_first_and_early_passes_after_delay_and_remembers() {
        let c = config();
        let (o, w) = decide(None, 1000, &c);
        assert_eq!(o, Outcome::Defer);
        let e = w.unwrap();
        assert_eq!(decide(Some(e), 1100, &c), (Outcome::Defer, None));
        let (o, w) = decide(Some(e), 1300, &c);
        assert_eq!(o, Outcome::Pass);
        let p = w.unwrap();
        assert_eq!(p.passed, 1300);
        // Passed: passes without a write within TOUCH_EVERY, then touches.
        assert_eq!(decide(Some(p), 1400, &c), (Outcome::Pass, None));
        let (o, w) = decide(Some(p), 1300 + TOUCH_EVERY, &c);
        assert_eq!(o, Outcome::Pass);
        assert_eq!(w.unwrap().last, 1300 + TOUCH_EVERY);
        // Unused for longer than expire: starts over.
        let (o, w) = decide(Some(p), 1300 + 86401, &c);
        assert_eq!(o, Outcome::Defer);
        assert_eq!(w.unwrap().passed, 0);
    }

    #[test]
    fn rule_starts_over_after_the_retry_window() {
        let c = config();
        let e = decide(None, 0, &c).1.unwrap();
        let (o, w) = decide(Some(e), 300 + 3601, &c);
        assert_eq!(o, Outcome::Defer);
        assert_eq!(w.unwrap().first, 3901);
    }

    #[test]
    fn triplets_group_networks_and_lowercase() {
        let dir = tempfile::tempdir().unwrap();
        let g = Inner::open(config(), &dir.path().join("g.redb"), 0).unwrap();
        assert_eq!(
            key("192.0.2.7", "A@X.test", "U@Ours.test", &g),
            key("192.0.2.200", "a@x.test", "u@ours.test", &g)
        );
        assert_ne!(
            key("192.0.2.7", "", "u@ours.test", &g),
            key("192.0.3.7", "", "u@ours.test", &g)
        );
        assert_eq!(
            key("2001:db8::1", "", "u", &g).0,
            key("2001:db8::ffff:1", "", "u", &g).0
        );
        assert_eq!(key("2001:db8::1", "", "u", &g).0, "2001:db8::");
    }

    #[test]
    fn domains_limit_where_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.domains = vec!["Grey.test".into()];
        let g = Inner::open(c, &dir.path().join("g.redb"), 0).unwrap();
        assert!(g.applies_to("u@grey.TEST"));
        assert!(!g.applies_to("u@other.test"));
        assert!(!g.applies_to("postmaster"));
    }

    #[test]
    fn state_survives_a_reopen_and_expired_rows_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("greylist.redb");
        let g = Inner::open(config(), &path, 0).unwrap();
        let a = key("192.0.2.1", "s@far.test", "u@ours.test", &g);
        let b = key("198.51.100.1", "s@far.test", "u@ours.test", &g);
        assert_eq!(g.check(&a, 1000).unwrap(), Outcome::Defer);
        assert_eq!(g.check(&b, 1000).unwrap(), Outcome::Defer);
        assert_eq!(g.check(&a, 1100).unwrap(), Outcome::Defer);
        drop(g);
        // Reopened: the first sighting is remembered.
        let g = Inner::open(config(), &path, 1400).unwrap();
        assert_eq!(g.check(&a, 1400).unwrap(), Outcome::Pass);
        drop(g);
        // Passed is remembered too; b was never retried and its window ended.
        let g = Inner::open(config(), &path, 1000 + 300 + 3601).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g.check(&a, 1000 + 300 + 3601).unwrap(), Outcome::Pass);
        drop(g);
        // Unused for longer than expire: purged at open.
        let g = Inner::open(config(), &path, 1400 + 86401).unwrap();
        assert_eq!(g.len(), 0);
        assert_eq!(g.check(&a, 1400 + 86401).unwrap(), Outcome::Defer);
    }

    #[test]
    fn periodic_purge_runs_once_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let g = Inner::open(config(), &dir.path().join("g.redb"), 0).unwrap();
        let a = key("192.0.2.1", "", "u@ours.test", &g);
        g.check(&a, 10).unwrap();
        // The window ends at 3910; purges run at most hourly.
        g.maybe_purge(3000);
        assert_eq!(g.len(), 1);
        g.maybe_purge(PURGE_EVERY + 1000);
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn a_full_table_passes_unknown_triplets_without_growing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.max_entries = 3;
        let g = Inner::open(c, &dir.path().join("g.redb"), 0).unwrap();
        for i in 0..3 {
            let k = key("192.0.2.1", &format!("s{i}@far.test"), "u@ours.test", &g);
            assert_eq!(g.check(&k, 10).unwrap(), Outcome::Defer);
        }
        let k = key("192.0.2.1", "s9@far.test", "u@ours.test", &g);
        assert_eq!(g.check(&k, 10).unwrap(), Outcome::Pass);
        assert_eq!(g.len(), 3);
        // Known triplets still follow the rule.
        let k = key("192.0.2.1", "s0@far.test", "u@ours.test", &g);
        assert_eq!(g.check(&k, 11).unwrap(), Outcome::Defer);
        assert_eq!(g.check(&k, 400).unwrap(), Outcome::Pass);
    }

    #[tokio::test]
    async fn only_strangers_are_greylisted() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist {
            inner: Some(Arc::new(
                Inner::open(config(), &dir.path().join("g.redb"), 0).unwrap(),
            )),
        };
        let mut c = Client {
            ip: "192.0.2.1".parse().unwrap(),
            helo: "x".into(),
            login: None,
            submission: false,
            trusted: false,
        };
        let d = g.rcpt(&c, "s@far.test", "u@ours.test").await;
        assert!(matches!(d, Decision::Refuse(Refusal { code: 451, .. })));
        c.trusted = true;
        assert_eq!(
            g.rcpt(&c, "s@far.test", "v@ours.test").await,
            Decision::Pass
        );
        assert_eq!(
            Greylist::default()
                .rcpt(&c, "s@far.test", "u@ours.test")
                .await,
            Decision::Pass
        );
    }
}
