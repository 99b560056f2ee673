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
//! The state is per process (one store per process) and kept in
//! `<data_dir>/moving.json` (written durably on every change, read at
//! `Store::open`), so a restart in the middle of a move keeps refusing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

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

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    file: None,
    users: BTreeMap::new(),
});

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Reads `<data_dir>/moving.json` (Store::open). A missing file is no
/// moves; an unreadable one is an error (refusing to open beats
/// delivering into a store that gave the user away).
pub fn load(data_dir: &Path) -> anyhow::Result<()> {
    let file = data_dir.join("moving.json");
    let users = read(&file)?;
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    r.file = Some(file);
    r.users = users;
    Ok(())
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

fn set(user: &str, s: Option<State>) -> anyhow::Result<()> {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set(user, s)
}

/// The user's deliveries and logins are deferred from now on.
pub fn begin(user: &str, to: &str) -> anyhow::Result<()> {
    set(
        user,
        Some(State::Moving {
            to: to.to_string(),
            since: now(),
        }),
    )
}

/// The user now lives on `to`; still deferred here for `HOLD`.
pub fn moved(user: &str, to: &str) -> anyhow::Result<()> {
    set(
        user,
        Some(State::Moved {
            to: to.to_string(),
            at: now(),
        }),
    )
}

/// A failed move: the user is served here again.
pub fn abort(user: &str) -> anyhow::Result<()> {
    set(user, None)
}

/// Whether `user` (canonical address) is moving away or moved away within
/// `HOLD`: deliveries and logins get temporary failures.
pub fn deferred(user: &str) -> Option<State> {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .deferred(user)
}

/// Users whose mail another store is pushing here (replica requests),
/// by the time of the last push: the target side of a move.
static INCOMING: Mutex<BTreeMap<String, i64>> = Mutex::new(BTreeMap::new());

/// Another store is moving `user` here (called on every replica request).
pub fn incoming(user: &str) {
    let mut m = INCOMING.lock().unwrap_or_else(|e| e.into_inner());
    let cutoff = now() - HOLD;
    m.retain(|_, t| *t >= cutoff);
    m.insert(user.to_string(), now());
}

/// Whether `user` was being moved here within `HOLD`: while this store's
/// directory cache still names the old store, its deliveries get a
/// temporary failure instead of "wrong store" (5.1.6, a bounce).
pub fn arriving(user: &str) -> bool {
    let m = INCOMING.lock().unwrap_or_else(|e| e.into_inner());
    m.get(user).is_some_and(|t| *t >= now() - HOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_moved_here_are_arriving_for_a_while() {
        let u = "arriving-unit@example.test";
        assert!(!arriving(u));
        incoming(u);
        assert!(arriving(u));
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
}
