//! Sieve scripts (RFC 5228) of each user, kept in the mboxlist database so
//! a backup and a user move carry them with the mail (`ops::backup_extra`).
//!
//! Table `sieve_scripts`: (user, script name) -> script text as uploaded.
//! Table `sieve_active`: user -> the name of the one active script (no
//! row: no script runs at delivery). Table `sieve_vacation`: (user,
//! response id) -> unix time until which that sender got its reply
//! (RFC 5230 4.2 `:days`); stale rows are replaced when seen again.
//!
//! The store checks only names and sizes ([`SieveLimits`]); compiling
//! (syntax) is the protocol layer's job (src/sieve/), done before
//! anything reaches here. RFC 5804 rules kept here: the active script
//! cannot be deleted (2.10), a rename onto an existing name is refused
//! (2.11.1), setting a missing script active is refused (2.8).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::*;

/// (user, name) -> script text.
const SCRIPTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sieve_scripts");
/// user -> active script name.
const ACTIVE: TableDefinition<&str, &str> = TableDefinition::new("sieve_active");
/// (user, vacation response id) -> unix time until which it is not sent again.
const VACATION: TableDefinition<(&str, &str), i64> = TableDefinition::new("sieve_vacation");

/// Most vacation rows kept per user (oldest replaced first when full).
const MAX_VACATION_ROWS: usize = 10_000;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(SCRIPTS).map_err(ie)?;
    txn.open_table(ACTIVE).map_err(ie)?;
    txn.open_table(VACATION).map_err(ie)?;
    Ok(())
}

/// Most compiled scripts one process keeps (`CompiledScripts`).
pub const MAX_COMPILED: usize = 4096;

/// The compiled form of each user's scripts, kept by the process's store
/// handle so a delivery does not compile the same script again
/// (src/sieve/ `Filter::plan`). Keyed by (user, script name) and checked
/// against the SHA-256 of the source, so a changed script is never run in
/// its old form even if an entry outlived its change (a restore or a
/// replica writing through another handle); the store's own PUTSCRIPT,
/// SETACTIVE, DELETESCRIPT, RENAMESCRIPT, restore and user removal drop
/// the user's entries at once. Bounded: cleared when `MAX_COMPILED` is
/// reached. The value is opaque here (the store does not depend on the
/// Sieve interpreter, which is an optional feature).
#[derive(Default)]
pub struct CompiledScripts {
    map: std::sync::Mutex<std::collections::BTreeMap<(String, String), CompiledEntry>>,
}

impl std::fmt::Debug for CompiledScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledScripts")
            .field("len", &self.len())
            .finish()
    }
}

struct CompiledEntry {
    digest: [u8; 32],
    value: Arc<dyn std::any::Any + Send + Sync>,
}

impl CompiledScripts {
    /// The digest a source is cached under.
    pub fn digest(text: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(text).into()
    }

    /// The compiled `name` of `user` if it was compiled from `digest`.
    pub fn get(
        &self,
        user: &str,
        name: &str,
        digest: &[u8; 32],
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(user.to_string(), name.to_string()))
            .filter(|e| &e.digest == digest)
            .map(|e| e.value.clone())
    }

    pub fn insert(
        &self,
        user: &str,
        name: &str,
        digest: [u8; 32],
        value: Arc<dyn std::any::Any + Send + Sync>,
    ) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_COMPILED {
            map.clear();
        }
        map.insert(
            (user.to_string(), name.to_string()),
            CompiledEntry { digest, value },
        );
    }

    /// Drops every entry of `user` (its scripts changed).
    pub fn forget_user(&self, user: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<(String, String)> = map
            .range((user.to_string(), String::new())..)
            .take_while(|(k, _)| k.0 == user)
            .map(|(k, _)| k.clone())
            .collect();
        for k in names {
            map.remove(&k);
        }
    }

    /// Entries held (tests, stats).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Caps of one user's scripts (docs/sieve.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SieveLimits {
    /// Largest script, in bytes.
    pub max_size: usize,
    /// Most scripts per user.
    pub max_scripts: usize,
}

impl Default for SieveLimits {
    fn default() -> Self {
        SieveLimits {
            max_size: 64 << 10,
            max_scripts: 32,
        }
    }
}

/// Longest script name, in bytes (RFC 5804 1.6 leaves it to the server).
pub const MAX_SCRIPT_NAME: usize = 128;

/// Why a script change was refused (RFC 5804 response codes in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SieveRefusal {
    /// `NONEXISTENT`
    NoSuchScript,
    /// `ALREADYEXISTS`
    Exists,
    /// `ACTIVE`: the active script cannot be deleted.
    Active,
    /// `QUOTA/MAXSCRIPTS`
    TooMany,
    /// `QUOTA/MAXSIZE`
    TooBig,
    /// A name that is empty, too long or holds control characters.
    BadName,
}

/// A script name as RFC 5804 1.6 allows: not empty, no control characters
/// (CR, LF, NUL, U+007F-U+009F, U+2028, U+2029), bounded.
pub fn valid_script_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SCRIPT_NAME
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// `user`'s active script: name and text.
fn active_script(txn: &redb::ReadTransaction, user: &str) -> Result<Option<(String, Vec<u8>)>> {
    let Some(name) = active_name(&txn.open_table(ACTIVE).map_err(ie)?, user)? else {
        return Ok(None);
    };
    let t = txn.open_table(SCRIPTS).map_err(ie)?;
    let v = t.get((user, name.as_str())).map_err(ie)?;
    Ok(v.map(|v| (name, v.value().to_vec())))
}

/// The name of the user's active script, if any.
fn active_name(
    t: &impl ReadableTable<&'static str, &'static str>,
    user: &str,
) -> Result<Option<String>> {
    Ok(t.get(user).map_err(ie)?.map(|v| v.value().to_string()))
}

impl Inner {
    /// The user's scripts by name, each with whether it is active.
    pub async fn sieve_list(&self, user: &str) -> Result<Vec<(String, bool)>> {
        let user = user.to_string();
        self.read_txn(move |txn| {
            let active = active_name(&txn.open_table(ACTIVE).map_err(ie)?, &user)?;
            let t = txn.open_table(SCRIPTS).map_err(ie)?;
            let mut out = Vec::new();
            for item in t.range((user.as_str(), "")..).map_err(ie)? {
                let (k, _) = item.map_err(ie)?;
                let (u, name) = k.value();
                if u != user {
                    break;
                }
                out.push((name.to_string(), active.as_deref() == Some(name)));
            }
            Ok(out)
        })
        .await
    }

    /// One script's text.
    pub async fn sieve_get(&self, user: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let (user, name) = (user.to_string(), name.to_string());
        self.read_txn(move |txn| {
            let t = txn.open_table(SCRIPTS).map_err(ie)?;
            let v = t.get((user.as_str(), name.as_str())).map_err(ie)?;
            Ok(v.map(|v| v.value().to_vec()))
        })
        .await
    }

    /// The active script: name and text.
    pub async fn sieve_active(&self, user: &str) -> Result<Option<(String, Vec<u8>)>> {
        let user = user.to_string();
        self.read_txn(move |txn| active_script(txn, &user)).await
    }

    /// Final delivery's first step, in one read for a known user: the
    /// user exists (created first, with `partition`, if not) and the name
    /// of its active Sieve script.
    pub async fn delivery_user(
        &self,
        user: &str,
        partition: Option<&str>,
    ) -> Result<Option<String>> {
        let u = user.to_string();
        let known = self
            .read_txn(move |txn| {
                let users = txn.open_table(USERS).map_err(ie)?;
                if users.get(u.as_str()).map_err(ie)?.is_none() {
                    return Ok(None);
                }
                active_name(&txn.open_table(ACTIVE).map_err(ie)?, &u).map(Some)
            })
            .await?;
        match known {
            Some(active) => Ok(active),
            None => {
                self.ensure_user(user, partition).await?;
                Ok(self.sieve_active(user).await?.map(|(name, _)| name))
            }
        }
    }

    /// Stores (creates or replaces) a script, within `limits`.
    pub async fn sieve_put(
        &self,
        user: &str,
        name: &str,
        text: Vec<u8>,
        limits: SieveLimits,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        if !valid_script_name(name) {
            return Ok(Err(SieveRefusal::BadName));
        }
        if text.len() > limits.max_size {
            return Ok(Err(SieveRefusal::TooBig));
        }
        let (user, name) = (user.to_string(), name.to_string());
        self.submit(move |txn, _batch| {
            let mut t = txn.open_table(SCRIPTS).map_err(ie)?;
            let exists = t.get((user.as_str(), name.as_str())).map_err(ie)?.is_some();
            if !exists && count(&t, &user)? >= limits.max_scripts {
                return Ok(Err(SieveRefusal::TooMany));
            }
            t.insert((user.as_str(), name.as_str()), text.as_slice())
                .map_err(ie)?;
            Ok(Ok(()))
        })
        .await
    }

    /// Makes `name` the active script (`None`: no script active).
    pub async fn sieve_set_active(
        &self,
        user: &str,
        name: Option<&str>,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        let user = user.to_string();
        let name = name.map(str::to_string);
        self.submit(move |txn, _batch| {
            if let Some(n) = &name {
                let t = txn.open_table(SCRIPTS).map_err(ie)?;
                if t.get((user.as_str(), n.as_str())).map_err(ie)?.is_none() {
                    return Ok(Err(SieveRefusal::NoSuchScript));
                }
            }
            let mut a = txn.open_table(ACTIVE).map_err(ie)?;
            match &name {
                Some(n) => {
                    a.insert(user.as_str(), n.as_str()).map_err(ie)?;
                }
                None => {
                    a.remove(user.as_str()).map_err(ie)?;
                }
            }
            Ok(Ok(()))
        })
        .await
    }

    /// Deletes a script that is not active.
    pub async fn sieve_delete(
        &self,
        user: &str,
        name: &str,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        let (user, name) = (user.to_string(), name.to_string());
        self.submit(move |txn, _batch| {
            let active = active_name(&txn.open_table(ACTIVE).map_err(ie)?, &user)?;
            if active.as_deref() == Some(name.as_str()) {
                return Ok(Err(SieveRefusal::Active));
            }
            let mut t = txn.open_table(SCRIPTS).map_err(ie)?;
            if t.remove((user.as_str(), name.as_str()))
                .map_err(ie)?
                .is_none()
            {
                return Ok(Err(SieveRefusal::NoSuchScript));
            }
            Ok(Ok(()))
        })
        .await
    }

    /// Renames a script (the active one stays active under its new name).
    pub async fn sieve_rename(
        &self,
        user: &str,
        from: &str,
        to: &str,
    ) -> Result<std::result::Result<(), SieveRefusal>> {
        if !valid_script_name(to) {
            return Ok(Err(SieveRefusal::BadName));
        }
        let (user, from, to) = (user.to_string(), from.to_string(), to.to_string());
        self.submit(move |txn, _batch| {
            let mut t = txn.open_table(SCRIPTS).map_err(ie)?;
            if t.get((user.as_str(), to.as_str())).map_err(ie)?.is_some() {
                return Ok(Err(SieveRefusal::Exists));
            }
            let Some(text) = t
                .remove((user.as_str(), from.as_str()))
                .map_err(ie)?
                .map(|v| v.value().to_vec())
            else {
                return Ok(Err(SieveRefusal::NoSuchScript));
            };
            t.insert((user.as_str(), to.as_str()), text.as_slice())
                .map_err(ie)?;
            drop(t);
            let mut a = txn.open_table(ACTIVE).map_err(ie)?;
            let was_active = a
                .get(user.as_str())
                .map_err(ie)?
                .is_some_and(|v| v.value() == from);
            if was_active {
                a.insert(user.as_str(), to.as_str()).map_err(ie)?;
            }
            Ok(Ok(()))
        })
        .await
    }

    /// Vacation rate limit (RFC 5230 4.2): true when `id` was answered and
    /// its period has not run out; otherwise records it until `now +
    /// period` and returns false (the caller sends the reply). Recorded
    /// before the reply is queued: a crash between loses one reply rather
    /// than sending two.
    pub async fn sieve_vacation_seen(
        &self,
        user: &str,
        id: &str,
        period: i64,
        now: i64,
    ) -> Result<bool> {
        let (user, id) = (user.to_string(), id.to_string());
        self.submit(move |txn, _batch| {
            let mut t = txn.open_table(VACATION).map_err(ie)?;
            if let Some(until) = t.get((user.as_str(), id.as_str())).map_err(ie)? {
                if until.value() > now {
                    return Ok(true);
                }
            }
            // Bound the rows: drop the expired ones, and the oldest if full.
            let mut rows: Vec<(String, i64)> = Vec::new();
            for item in t.range((user.as_str(), "")..).map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                let (u, rid) = k.value();
                if u != user {
                    break;
                }
                rows.push((rid.to_string(), v.value()));
            }
            let mut live = rows.len();
            for (rid, until) in &rows {
                if *until <= now {
                    t.remove((user.as_str(), rid.as_str())).map_err(ie)?;
                    live -= 1;
                }
            }
            if live >= MAX_VACATION_ROWS {
                let mut keep: Vec<&(String, i64)> = rows.iter().filter(|r| r.1 > now).collect();
                keep.sort_by_key(|r| r.1);
                for (rid, _) in keep.iter().take(live + 1 - MAX_VACATION_ROWS) {
                    t.remove((user.as_str(), rid.as_str())).map_err(ie)?;
                }
            }
            t.insert((user.as_str(), id.as_str()), now.saturating_add(period))
                .map_err(ie)?;
            Ok(false)
        })
        .await
    }
}

impl Inner {
    /// Removes every script, the active mark and the vacation record of
    /// `user` (the move's source and the purge of deleted users).
    pub async fn sieve_remove_user(&self, user: &str) -> Result<u64> {
        let user = user.to_string();
        self.submit(move |txn, _batch| {
            let mut n = 0u64;
            let mut t = txn.open_table(SCRIPTS).map_err(ie)?;
            let names: Vec<String> = {
                let mut v = Vec::new();
                for item in t.range((user.as_str(), "")..).map_err(ie)? {
                    let (k, _) = item.map_err(ie)?;
                    let (u, name) = k.value();
                    if u != user {
                        break;
                    }
                    v.push(name.to_string());
                }
                v
            };
            for name in &names {
                t.remove((user.as_str(), name.as_str())).map_err(ie)?;
                n += 1;
            }
            drop(t);
            txn.open_table(ACTIVE)
                .map_err(ie)?
                .remove(user.as_str())
                .map_err(ie)?;
            let mut v = txn.open_table(VACATION).map_err(ie)?;
            let ids: Vec<String> = {
                let mut out = Vec::new();
                for item in v.range((user.as_str(), "")..).map_err(ie)? {
                    let (k, _) = item.map_err(ie)?;
                    let (u, id) = k.value();
                    if u != user {
                        break;
                    }
                    out.push(id.to_string());
                }
                out
            };
            for id in &ids {
                v.remove((user.as_str(), id.as_str())).map_err(ie)?;
            }
            Ok(n)
        })
        .await
    }
}

fn count(t: &redb::Table<(&str, &str), &[u8]>, user: &str) -> Result<usize> {
    let mut n = 0;
    for item in t.range((user, "")..).map_err(ie)? {
        let (k, _) = item.map_err(ie)?;
        if k.value().0 != user {
            break;
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::store::{SieveLimits, SieveRefusal, Store};

    const U: &str = "u@example.test";

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.server.data_dir = d.path().to_path_buf();
        c.store.min_free_disk = 0;
        let s = Store::open(&c).unwrap();
        (d, s)
    }

    #[tokio::test]
    async fn rfc5804_script_rules_and_limits() {
        let (_d, s) = store();
        let lim = SieveLimits {
            max_size: 10,
            max_scripts: 2,
        };
        let put = |n: &'static str, t: &'static str| {
            let s = s.clone();
            async move { s.sieve_put(U, n, t.as_bytes().to_vec(), lim).await.unwrap() }
        };
        assert_eq!(put("a", "keep;").await, Ok(()));
        assert_eq!(put("b", "keep;").await, Ok(()));
        assert_eq!(put("c", "keep;").await, Err(SieveRefusal::TooMany));
        assert_eq!(
            put("a", "discard;").await,
            Ok(()),
            "replacing is no new script"
        );
        assert_eq!(put("a", "01234567890").await, Err(SieveRefusal::TooBig));
        assert_eq!(put("", "keep;").await, Err(SieveRefusal::BadName));
        assert_eq!(put("x\ny", "keep;").await, Err(SieveRefusal::BadName));
        // 2.8: a missing script cannot be made active.
        let r = s.sieve_set_active(U, Some("zz")).await.unwrap();
        assert_eq!(r, Err(SieveRefusal::NoSuchScript));
        s.sieve_set_active(U, Some("a")).await.unwrap().unwrap();
        // 2.10: not the active one.
        let r = s.sieve_delete(U, "a").await.unwrap();
        assert_eq!(r, Err(SieveRefusal::Active));
        // 2.11.1: not onto an existing name; the active mark follows.
        let r = s.sieve_rename(U, "a", "b").await.unwrap();
        assert_eq!(r, Err(SieveRefusal::Exists));
        s.sieve_rename(U, "a", "main").await.unwrap().unwrap();
        assert_eq!(
            s.sieve_active(U).await.unwrap(),
            Some(("main".to_string(), b"discard;".to_vec()))
        );
        s.sieve_delete(U, "b").await.unwrap().unwrap();
        s.sieve_set_active(U, None).await.unwrap().unwrap();
        assert_eq!(s.sieve_active(U).await.unwrap(), None);
        assert_eq!(
            s.sieve_list(U).await.unwrap(),
            vec![("main".to_string(), false)]
        );
        // Another user sees nothing of these.
        assert!(s.sieve_list("v@example.test").await.unwrap().is_empty());
        // The purge takes everything of the user.
        s.sieve_set_active(U, Some("main")).await.unwrap().unwrap();
        assert_eq!(s.sieve_remove_user(U).await.unwrap(), 1);
        assert!(s.sieve_list(U).await.unwrap().is_empty());
        assert_eq!(s.sieve_active(U).await.unwrap(), None);
    }

    #[tokio::test]
    async fn rfc5230_4_2_one_reply_per_period_kept_durably() {
        let (_d, s) = store();
        let day = 86_400;
        assert!(!s.sieve_vacation_seen(U, "_va@x", day, 1000).await.unwrap());
        assert!(s
            .sieve_vacation_seen(U, "_va@x", day, 1000 + day - 1)
            .await
            .unwrap());
        assert!(!s.sieve_vacation_seen(U, "_vb@x", day, 1000).await.unwrap());
        // After the period: answered again (and recorded again).
        assert!(!s
            .sieve_vacation_seen(U, "_va@x", day, 1000 + day)
            .await
            .unwrap());
        assert!(s
            .sieve_vacation_seen(U, "_va@x", day, 1000 + day + 1)
            .await
            .unwrap());
    }
}
