//! Webmail sessions ended by a logout, so that a copy of the session
//! cookie replayed on any mem is refused: each mem puts the session id in
//! the bearer tokens it issues (the http token module), a logout tells the
//! user's store to revoke that id, and the store refuses tokens naming a
//! revoked id (JMAP authentication).
//!
//! Invariants:
//! - Durable before acknowledged: `revoke_session` returns once the row is
//!   committed (the writer's commit), so a logout answered to the browser
//!   holds across a store restart.
//! - Bounded: a row is kept until the session's absolute expiry (`until`,
//!   given by the mem: login + `mem.session_max`, clamped to
//!   [`MAX_KEEP`] from now), then it is useless (the cookie no longer
//!   opens) and pruned, a few rows per revocation ([`PRUNE_STEP`]), so
//!   the table holds about one row per logout of the last `session_max`.
//! - Ids are opaque, at most [`MAX_ID_LEN`] bytes; a longer one is
//!   refused by the caller.
//!
//! Tables: `revoked_sessions` session id -> until (unix seconds);
//! `revoked_sessions_by_time` (until, id) for pruning oldest first.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::*;

/// Session id -> unix seconds after which the row may go.
const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_sessions");
/// (until, session id): the same rows by expiry.
const BY_TIME: TableDefinition<(i64, &str), u8> = TableDefinition::new("revoked_sessions_by_time");

/// Expired rows a revocation prunes at most.
const PRUNE_STEP: usize = 16;

/// Longest session id kept (the mem's are 22 characters).
pub const MAX_ID_LEN: usize = 64;

/// Longest time a revocation is kept, whatever the mem asks (seconds).
pub const MAX_KEEP: i64 = 366 * 86_400;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(REVOKED).map_err(ie)?;
    txn.open_table(BY_TIME).map_err(ie)?;
    Ok(())
}

impl Inner {
    /// Records `id` as ended until `until` (unix seconds), and prunes a
    /// few rows whose time has passed.
    pub async fn revoke_session(&self, id: &str, until: i64) -> Result<()> {
        self.revoke_session_at(id, until, now()).await
    }

    async fn revoke_session_at(&self, id: &str, until: i64, now: i64) -> Result<()> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(StoreError::NotAllowed("bad session id"));
        }
        let id = id.to_string();
        let until = until.clamp(now, now.saturating_add(MAX_KEEP));
        self.submit(move |txn, _| {
            let mut t = txn.open_table(REVOKED).map_err(ie)?;
            let mut by = txn.open_table(BY_TIME).map_err(ie)?;
            let old = t.insert(id.as_str(), until).map_err(ie)?.map(|v| v.value());
            if let Some(old) = old {
                by.remove((old, id.as_str())).map_err(ie)?;
            }
            by.insert((until, id.as_str()), 0).map_err(ie)?;
            let expired: Vec<(i64, String)> = by
                .range((i64::MIN, "")..(now, ""))
                .map_err(ie)?
                .take(PRUNE_STEP)
                .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_string())))
                .collect::<std::result::Result<_, _>>()
                .map_err(ie)?;
            for (when, sid) in expired {
                by.remove((when, sid.as_str())).map_err(ie)?;
                t.remove(sid.as_str()).map_err(ie)?;
            }
            Ok(())
        })
        .await
    }

    /// Has `id` been revoked (and is its record still kept)?
    pub async fn session_revoked(&self, id: &str) -> Result<bool> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Ok(false);
        }
        let id = id.to_string();
        self.read_txn(move |txn| {
            let t = txn.open_table(REVOKED).map_err(ie)?;
            Ok(t.get(id.as_str()).map_err(ie)?.is_some())
        })
        .await
    }

    /// Rows kept (tests and `store stats`).
    pub async fn revoked_sessions(&self) -> Result<u64> {
        self.read_txn(move |txn| {
            let t = txn.open_table(REVOKED).map_err(ie)?;
            t.len().map_err(ie)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::test_config;
    use crate::store::Store;

    #[tokio::test]
    async fn revoked_sessions_are_kept_across_a_restart() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = Store::open(&test_config(d.path())).unwrap();
            assert!(!s.session_revoked("sidA").await.unwrap());
            s.revoke_session("sidA", super::now() + 3600).await.unwrap();
            assert!(s.session_revoked("sidA").await.unwrap());
            assert!(!s.session_revoked("sidB").await.unwrap());
        }
        // Reopen once the first writer thread let the database go.
        let mut tries = 0;
        let s = loop {
            match Store::open(&test_config(d.path())) {
                Ok(s) => break s,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(s.session_revoked("sidA").await.unwrap());
    }

    #[tokio::test]
    async fn revoked_sessions_are_forgotten_after_their_absolute_expiry() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let now = super::now();
        s.inner
            .revoke_session_at("old", now + 10, now)
            .await
            .unwrap();
        s.inner
            .revoke_session_at("new", now + 100, now)
            .await
            .unwrap();
        assert_eq!(s.revoked_sessions().await.unwrap(), 2);
        // later, past "old"'s expiry: the next revocation prunes it
        s.inner
            .revoke_session_at("newer", now + 200, now + 50)
            .await
            .unwrap();
        assert!(!s.session_revoked("old").await.unwrap());
        assert!(s.session_revoked("new").await.unwrap());
        assert_eq!(s.revoked_sessions().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn odd_session_ids_and_far_expiries_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        assert!(s.revoke_session("", 0).await.is_err());
        assert!(s.revoke_session(&"x".repeat(65), 0).await.is_err());
        assert!(!s.session_revoked(&"x".repeat(65)).await.unwrap());
        // a far expiry is kept at most MAX_KEEP: pruned after that
        let now = super::now();
        s.inner
            .revoke_session_at("far", i64::MAX, now)
            .await
            .unwrap();
        s.inner
            .revoke_session_at("later", i64::MAX, now + super::MAX_KEEP + 1)
            .await
            .unwrap();
        assert!(!s.session_revoked("far").await.unwrap());
    }
}
