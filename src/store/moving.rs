//! Users being moved away from this store (`msgd user move`), and users
//! moved away recently.
//!
//! While a user is `Moving` (its last changes are being copied and its
//! mailHost switched), and for `HOLD` after it `Moved` away, this store
//! answers deliveries for the user with a temporary failure (LMTP 451
//! 4.x: the MTA keeps the message and retries, then reaching the new
//! store) and logins with a temporary refusal (IMAP `NO [UNAVAILABLE]`,
//! POP `-ERR [SYS/TEMP]`), instead of storing mail nobody would see again
//! or answering "wrong store" (a permanent 5.1.6) to an MTA or proxy whose
//! directory cache still names this store.
//!
//! The target of a move records users pushed to it (`incoming`): while
//! its own directory cache still names the old store, their deliveries
//! get the same temporary failure instead of "wrong store" (5.1.6).
//!
//! The state belongs to the store (`Store::moving`) and is kept in
//! `<data_dir>/moving.json` (written durably on every change, read at
//! `Store::open`), so a restart in the middle of a move keeps refusing.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How long a moved user's deliveries and logins are still deferred here
/// (longer than any directory cache of the MTAs and proxies).
pub const HOLD: i64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Copying the last changes; the user's mail is still here.
    Moving { to: String, since: i64 },
    /// Gone to `to` at `at`.
    Moved { to: String, at: i64 },
}

struct Registry {
    file: Option<PathBuf>,
    users: BTreeMap<String, State>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn read(file: &Path) -> anyhow::Result<BTreeMap<String, State>> {
    match std::fs::read(file) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| anyhow::anyhow!("{}: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", file.display())),
    }
}

impl Registry {
    fn save(&self) -> anyhow::Result<()> {
        if let Some(f) = &self.file {
            let mut b = serde_json::to_vec_pretty(&self.users)?;
            b.push(b'\n');
            crate::fsutil::write_durable(f, &b)?;
        }
        Ok(())
    }

    fn set(&mut self, user: &str, s: Option<State>) -> anyhow::Result<()> {
        let cutoff = now() - HOLD;
        self.users
            .retain(|_, v| !matches!(v, State::Moved { at, .. } if *at < cutoff));
        match s {
            Some(s) => self.users.insert(user.to_string(), s),
            None => self.users.remove(user),
        };
        self.save()
    }

    fn deferred(&self, user: &str) -> Option<State> {
        match self.users.get(user) {
            Some(State::Moved { at, .. }) if *at < now() - HOLD => None,
            s => s.cloned(),
        }
    }
}

/// The moves of one store: built by `Store::open` from
/// `<data_dir>/moving.json` and reached as `store.moving()` (no
/// process-wide state: two stores in one process, as in unit tests, never
/// see each other's moves).
pub struct Moving {
    registry: Mutex<Registry>,
    /// Users whose mail another store is pushing here (replica requests),
    /// by the time of the last push: the target side of a move.
    incoming: Mutex<BTreeMap<String, i64>>,
    /// Client mutations hold it shared from their check to their commit;
    /// `begin` takes it exclusively, so once `begin` returns no mutation
    /// that passed the check before the hold is still under way.
    gate: tokio::sync::RwLock<()>,
    /// Bumped when a user's hold begins: open sessions of the user end.
    signals: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Moving {
    /// Reads `<data_dir>/moving.json` (Store::open). A missing file is no
    /// moves; an unreadable one is an error (refusing to open beats
    /// delivering into a store that gave the user away).
    pub fn load(data_dir: &Path) -> anyhow::Result<Moving> {
        let file = data_dir.join("moving.json");
        let users = read(&file)?;
        Ok(Moving::with(Some(file), users))
    }

    fn with(file: Option<PathBuf>, users: BTreeMap<String, State>) -> Moving {
        Moving {
            registry: Mutex::new(Registry { file, users }),
            incoming: Mutex::default(),
            gate: tokio::sync::RwLock::new(()),
            signals: Mutex::default(),
        }
    }

    fn set(&self, user: &str, s: Option<State>) -> anyhow::Result<()> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(user, s)
    }

    /// The user's deliveries, logins and client mutations are refused
    /// from now on, and its open sessions are told to end. Returns once
    /// every client mutation that passed its check before is committed.
    pub async fn begin(&self, user: &str, to: &str) -> anyhow::Result<()> {
        {
            let _closed = self.gate.write().await;
            self.set(
                user,
                Some(State::Moving {
                    to: to.to_string(),
                    since: now(),
                }),
            )?;
        }
        let signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = signals.get(user) {
            s.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    /// The user now lives on `to`; still deferred here for `HOLD`.
    pub fn moved(&self, user: &str, to: &str) -> anyhow::Result<()> {
        self.set(
            user,
            Some(State::Moved {
                to: to.to_string(),
                at: now(),
            }),
        )
    }

    /// A failed move: the user is served here again.
    pub fn abort(&self, user: &str) -> anyhow::Result<()> {
        self.set(user, None)
    }

    /// Whether `user` (canonical address) is moving away or moved away
    /// within `HOLD`: deliveries, logins and client mutations get
    /// temporary failures.
    pub fn deferred(&self, user: &str) -> Option<State> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deferred(user)
    }

    /// Whether any user at all is deferred (the cheap test before a
    /// mailbox's owner is looked up).
    pub fn any(&self) -> bool {
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.users.keys().any(|u| r.deferred(u).is_some())
    }

    /// Held by a client mutation from its check to its commit.
    pub(crate) async fn pass(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Changes when `user`'s hold begins: sessions open for the user wait
    /// on it and end (IMAP `BYE [UNAVAILABLE]`, POP without deletions).
    pub fn watch(&self, user: &str) -> watch::Receiver<u64> {
        let mut map = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.receiver_count() > 0);
        map.entry(user.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Another store is moving `user` here (called on every replica
    /// request).
    pub fn incoming(&self, user: &str) {
        let mut m = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        let cutoff = now() - HOLD;
        m.retain(|_, t| *t >= cutoff);
        m.insert(user.to_string(), now());
    }

    /// Whether `user` was being moved here within `HOLD`: while this
    /// store's directory cache still names the old store, its deliveries
    /// get a temporary failure instead of "wrong store" (5.1.6, a bounce).
    pub fn arriving(&self, user: &str) -> bool {
        let m = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        m.get(user).is_some_and(|t| *t >= now() - HOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_moved_here_are_arriving_for_a_while() {
        let m = Moving::with(None, BTreeMap::new());
        let u = "arriving-unit@example.test";
        assert!(!m.arriving(u));
        m.incoming(u);
        assert!(m.arriving(u));
    }

    /// Issue 11's invariant (no process-wide role state): two stores in
    /// one process keep their moves apart.
    #[tokio::test]
    async fn two_stores_in_one_process_do_not_share_moves() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            Moving::load(d1.path()).unwrap(),
            Moving::load(d2.path()).unwrap(),
        );
        let u = "shared@example.test";
        a.begin(u, "s2").await.unwrap();
        a.incoming("in@example.test");
        assert!(a.deferred(u).is_some() && a.any());
        assert!(b.deferred(u).is_none() && !b.any());
        assert!(!b.arriving("in@example.test"));
        // and a reopened store sees its own file only
        assert!(Moving::load(d1.path()).unwrap().deferred(u).is_some());
        assert!(Moving::load(d2.path()).unwrap().deferred(u).is_none());
    }

    #[tokio::test]
    async fn begin_signals_the_users_sessions_and_waits_for_mutations() {
        let m = std::sync::Arc::new(Moving::with(None, BTreeMap::new()));
        let w = m.watch("u@example.test");
        let pass = m.pass().await;
        let m2 = m.clone();
        let begun = tokio::spawn(async move { m2.begin("u@example.test", "s2").await });
        tokio::task::yield_now().await;
        // a mutation under way holds the hold back
        assert!(!begun.is_finished());
        assert!(m.deferred("u@example.test").is_none());
        drop(pass);
        begun.await.unwrap().unwrap();
        assert!(m.deferred("u@example.test").is_some());
        assert!(w.has_changed().unwrap());
    }

    #[test]
    fn moving_then_moved_users_are_deferred_and_persisted() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("moving.json");
        let mut r = Registry {
            file: Some(file.clone()),
            users: read(&file).unwrap(),
        };
        let u = "mover@example.test";
        assert_eq!(r.deferred(u), None);
        r.set(
            u,
            Some(State::Moving {
                to: "s2".into(),
                since: now(),
            }),
        )
        .unwrap();
        assert!(matches!(r.deferred(u), Some(State::Moving { .. })));
        r.set(
            u,
            Some(State::Moved {
                to: "s2".into(),
                at: now(),
            }),
        )
        .unwrap();
        // survives a restart
        let r2 = Registry {
            file: Some(file.clone()),
            users: read(&file).unwrap(),
        };
        assert!(matches!(r2.deferred(u), Some(State::Moved { .. })));
        // a move older than HOLD no longer defers
        r.set(
            u,
            Some(State::Moved {
                to: "s2".into(),
                at: now() - HOLD - 1,
            }),
        )
        .unwrap();
        assert_eq!(r.deferred(u), None);
        r.set(u, None).unwrap();
        assert!(read(&file).unwrap().is_empty());
    }

    /// Issue 14: nothing a client session changes for a held user is lost
    /// with the old store: the store refuses it (temporary), the move's own
    /// handle still removes the user.
    #[tokio::test]
    async fn held_users_mutations_are_refused_but_the_move_passes() {
        use crate::store::{FlagOp, Flags, NewMessage, Quota, StoreError};
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let st = s.store().clone();
        let (u, other) = ("held@x", "other@x");
        let msg = || NewMessage {
            data: std::sync::Arc::new(b"From: a@b\r\nSubject: s\r\n\r\nhi\r\n".to_vec()),
            flags: Flags::default(),
            internal_date: None,
        };
        let p = st
            .append(u, "INBOX", msg(), Quota::default())
            .await
            .unwrap();
        st.append(other, "INBOX", msg(), Quota::default())
            .await
            .unwrap();
        st.moving().begin(u, "s2").await.unwrap();
        let seen = Flags {
            bits: Flags::SEEN,
            keywords: vec![],
        };
        let r = st
            .store_flags(p.mailbox, vec![p.uid], FlagOp::Add, seen.clone(), None)
            .await;
        assert!(matches!(r, Err(StoreError::Moving)), "{r:?}");
        assert!(StoreError::Moving.is_temporary());
        let r = st.append(u, "INBOX", msg(), Quota::default()).await;
        assert!(matches!(r, Err(StoreError::Moving)));
        let r = st.create_mailbox(u, "New", None).await;
        assert!(matches!(r, Err(StoreError::Moving)));
        let r = st.expunge(p.mailbox, None).await;
        assert!(matches!(r, Err(StoreError::Moving)));
        let r = st.subscribe(u, "INBOX", false).await;
        assert!(matches!(r, Err(StoreError::Moving)));
        // nothing changed; reads still work
        let snap = st.snapshot(u, "INBOX").await.unwrap();
        assert_eq!(snap.messages.len(), 1);
        assert!(!snap.messages[0].flags.has(Flags::SEEN));
        // other users are served as before
        st.create_mailbox(other, "New", None).await.unwrap();
        // the move's own handle passes
        st.for_move()
            .store_flags(p.mailbox, vec![p.uid], FlagOp::Add, seen, None)
            .await
            .unwrap();
        st.moving().abort(u).unwrap();
        st.create_mailbox(u, "New", None).await.unwrap();
    }

    #[tokio::test]
    async fn a_held_users_cache_writes_are_skipped_and_ensure_user_refused() {
        use crate::store::{NewMessage, Quota, StoreError};
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let st = s.store().clone();
        let u = "held@x";
        let p = st
            .append(
                u,
                "INBOX",
                NewMessage {
                    data: std::sync::Arc::new(b"Subject: s\r\n\r\nhi\r\n".to_vec()),
                    flags: Default::default(),
                    internal_date: None,
                },
                Quota::default(),
            )
            .await
            .unwrap();
        let uidnext = st.mailbox_info(p.mailbox).await.unwrap().uidnext;
        st.moving().begin(u, "s2").await.unwrap();
        // Cache writes: answered Ok, nothing written.
        st.put_previews(p.mailbox, vec![(p.uid, "pv".into())])
            .await
            .unwrap();
        st.put_summaries(p.mailbox, vec![(p.uid, b"sum".to_vec())])
            .await
            .unwrap();
        assert_eq!(
            st.previews(p.mailbox, vec![p.uid]).await.unwrap(),
            vec![None]
        );
        assert_eq!(
            st.summaries(p.mailbox, vec![p.uid]).await.unwrap(),
            vec![None]
        );
        // \Recent: nothing claimed, so a later session still gets the
        // message as recent (on the target, after the move: its copy).
        assert_eq!(st.claim_recent(p.mailbox).await.unwrap(), uidnext);
        // ensure_user: refused like every mutation (a new held user is
        // never created here).
        let r = st.ensure_user("held@x", None).await;
        assert!(matches!(r, Err(StoreError::Moving)), "{r:?}");
        st.moving().begin("new@x", "s2").await.unwrap();
        let r = st.ensure_user("new@x", None).await;
        assert!(matches!(r, Err(StoreError::Moving)), "{r:?}");
        assert!(st.users().await.unwrap().iter().all(|x| x != "new@x"));
        // The move's own handle passes; after the hold, caches fill again.
        st.for_move().ensure_user("new@x", None).await.unwrap();
        st.moving().abort(u).unwrap();
        st.put_previews(p.mailbox, vec![(p.uid, "pv".into())])
            .await
            .unwrap();
        assert_eq!(
            st.previews(p.mailbox, vec![p.uid]).await.unwrap(),
            vec![Some("pv".to_string())]
        );
        assert_eq!(st.claim_recent(p.mailbox).await.unwrap(), p.uid);
    }
}
