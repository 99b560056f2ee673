//! `msgd store stats [--json]`: the original product's db_stat check.
//!
//! What it shows: the mboxlist file's size, its page cache (used bytes and
//! the configured `store.dbcachesize`), the cache hit rate since the store
//! opened and over the last minute, and per partition the users, messages
//! and bytes (from the users' usage records) with the free disk.
//!
//! The last-minute rate needs history: a running store role samples the
//! cache counters every [`SAMPLE_EVERY`] into a small ring ([`History`],
//! `Ctx::history`). Offline (the CLI opened the store itself) there is no
//! history, and "since start" means since this command opened the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Ctx, Progress};
use crate::config::Config;
use crate::store::{Store, StoreStats};

#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
}

/// How often the store role samples the cache counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The window of the recent hit rate.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Samples kept: one window and one more.
const KEEP: usize = (WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize + 1;

/// Recent samples of the mboxlist cache counters (oldest first).
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

/// Cache hits and misses over a recent window.
#[derive(Debug, Clone, PartialEq)]
pub struct Recent {
    pub hits: u64,
    pub misses: u64,
    pub seconds: f64,
}

impl Recent {
    pub fn hit_rate(&self) -> f64 {
        StoreStats {
            cache_hits: self.hits,
            cache_misses: self.misses,
            cache_bytes: 0,
        }
        .hit_rate()
    }
}

impl History {
    pub fn push(&self, at: Instant, s: &StoreStats) {
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back((at, s.cache_hits, s.cache_misses));
        while q.len() > KEEP {
            q.pop_front();
        }
    }

    /// The counters' growth from the oldest sample at most [`WINDOW`] old
    /// to `now`; None before the first sample.
    pub fn recent(&self, now: Instant, s: &StoreStats) -> Option<Recent> {
        let q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let &(at, hits, misses) = q
            .iter()
            .find(|(at, _, _)| now.saturating_duration_since(*at) <= WINDOW)?;
        Some(Recent {
            hits: s.cache_hits.saturating_sub(hits),
            misses: s.cache_misses.saturating_sub(misses),
            seconds: now.saturating_duration_since(at).as_secs_f64(),
        })
    }
}

/// Samples the store's cache counters until shutdown (store role).
pub async fn sample(
    store: Store,
    history: Arc<History>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => history.push(Instant::now(), &store.stats()),
        }
    }
}

/// The mboxlist file of a configuration.
pub fn mboxlist_path(config: &Config) -> std::path::PathBuf {
    config
        .data_path(&config.store.dbdir, "mboxlist")
        .join("mboxlist.redb")
}

pub async fn run(ctx: &Ctx, _args: StatsArgs, p: &Progress) -> anyhow::Result<serde_json::Value> {
    let config = &ctx.config;
    let now = Instant::now();
    let cache = ctx.store.stats();
    let recent = ctx
        .history
        .as_ref()
        .and_then(|h| h.recent(now, &cache))
        .map(|r| {
            json!({
                "hits": r.hits,
                "misses": r.misses,
                "hit_rate": r.hit_rate(),
                "seconds": r.seconds,
            })
        });
    let db = mboxlist_path(config);
    let file_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    p.stage(
        "partitions",
        Some(config.store.partition.len() as u64),
        "partitions",
    );
    let store = ctx.store.clone();
    let totals = tokio::task::spawn_blocking(move || store.partition_totals()).await??;
    let mut partitions = serde_json::Map::new();
    for (name, t) in totals {
        let path = config.partition_path(&name);
        let free = path
            .as_deref()
            .and_then(|p| crate::fsutil::free_space(p).ok());
        partitions.insert(
            name,
            json!({
                "path": path,
                "users": t.users,
                "messages": t.messages,
                "bytes": t.bytes,
                "free_bytes": free,
            }),
        );
        p.inc(1);
    }
    Ok(json!({
        "online": ctx.online,
        "mboxlist": {
            "path": db,
            "file_bytes": file_bytes,
            "cache_bytes": cache.cache_bytes,
            "cache_size": config.store.dbcachesize,
        },
        "cache": {
            "hits": cache.cache_hits,
            "misses": cache.cache_misses,
            "hit_rate": cache.hit_rate(),
            "last_minute": recent,
        },
        "partitions": partitions,
    }))
}

pub fn cli(config: &Config, args: StatsArgs) -> anyhow::Result<()> {
    let json = args.json;
    let v = super::control::call(config, super::Request::Stats(args))?;
    super::emit(json, &v, || table(&v))?;
    Ok(())
}

/// Bytes for people: 1536 -> "1.5 KiB".
fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The human form of a `run` result.
fn table(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let m = &v["mboxlist"];
    let c = &v["cache"];
    let _ = writeln!(
        out,
        "mboxlist   {} ({})",
        m["path"].as_str().unwrap_or("?"),
        size(n(&m["file_bytes"]))
    );
    let _ = writeln!(
        out,
        "cache      {} used of {} (store.dbcachesize)",
        size(n(&m["cache_bytes"])),
        size(n(&m["cache_size"]))
    );
    let since = if v["online"].as_bool() == Some(true) {
        "since the store started"
    } else {
        "since this command opened the store (no server running)"
    };
    let _ = writeln!(
        out,
        "hit rate   {:.1} % {since} ({} hits, {} misses)",
        c["hit_rate"].as_f64().unwrap_or(100.0),
        n(&c["hits"]),
        n(&c["misses"])
    );
    match c["last_minute"].as_object() {
        Some(r) => {
            let _ = writeln!(
                out,
                "           {:.1} % over the last {:.0} s ({} hits, {} misses)",
                r["hit_rate"].as_f64().unwrap_or(100.0),
                r["seconds"].as_f64().unwrap_or(0.0),
                n(&r["hits"]),
                n(&r["misses"])
            );
        }
        None => {
            let _ = writeln!(
                out,
                "           last minute: not sampled (the server keeps it)"
            );
        }
    }
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>10} {:>12} {:>12}",
        "partition", "users", "messages", "bytes", "free"
    );
    if let Some(parts) = v["partitions"].as_object() {
        for (name, p) in parts {
            let free = match p["free_bytes"].as_u64() {
                Some(f) => size(f),
                None => "?".into(),
            };
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>10} {:>12} {:>12}",
                name,
                n(&p["users"]),
                n(&p["messages"]),
                size(n(&p["bytes"])),
                free
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(hits: u64, misses: u64) -> StoreStats {
        StoreStats {
            cache_hits: hits,
            cache_misses: misses,
            cache_bytes: 0,
        }
    }

    #[test]
    fn last_minute_rate_counts_from_the_oldest_sample_inside_the_window() {
        let h = History::default();
        let t0 = Instant::now();
        assert_eq!(h.recent(t0, &stats(0, 0)), None, "no sample yet");
        // One sample per 5 s for 100 s: the ring keeps the last minute.
        for i in 0..=20u64 {
            h.push(t0 + SAMPLE_EVERY * i as u32, &stats(i * 100, i * 10));
        }
        let now = t0 + Duration::from_secs(100);
        let r = h.recent(now, &stats(2000, 200)).unwrap();
        // The sample 60 s ago (i = 8) is the oldest inside the window.
        assert_eq!(r.hits, 2000 - 800);
        assert_eq!(r.misses, 200 - 80);
        assert!((r.seconds - 60.0).abs() < 0.001, "{}", r.seconds);
        assert!((r.hit_rate() - 1200.0 * 100.0 / 1320.0).abs() < 1e-9);
        assert!(h.samples.lock().unwrap().len() <= KEEP);
    }

    #[test]
    fn hit_rate_without_lookups_is_full() {
        let r = Recent {
            hits: 0,
            misses: 0,
            seconds: 5.0,
        };
        assert_eq!(r.hit_rate(), 100.0);
    }

    #[test]
    fn sizes_read_like_db_stat() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1 << 30), "1.0 GiB");
    }

    #[tokio::test]
    async fn stats_report_partitions_with_their_users_messages_and_free_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let store = s.store().clone();
        store.ensure_user("a@example.com", None).await.unwrap();
        let ctx = Ctx {
            config: s.config.clone(),
            store,
            directory: s.directory.clone(),
            online: false,
            history: None,
        };
        let v = run(&ctx, StatsArgs::default(), &Progress::new())
            .await
            .unwrap();
        let p = &v["partitions"]["primary"];
        assert_eq!(p["users"], 1, "{v}");
        assert_eq!(p["messages"], 0, "{v}");
        assert!(p["free_bytes"].as_u64().unwrap() > 0, "{v}");
        assert!(v["mboxlist"]["file_bytes"].as_u64().unwrap() > 0, "{v}");
        assert!(v["cache"]["last_minute"].is_null(), "offline: no history");
        let text = table(&v);
        assert!(text.contains("primary"), "{text}");
        assert!(text.contains("hit rate"), "{text}");
    }
}
