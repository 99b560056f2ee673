//! Store connections kept between logins (IMAP; `mmp.backend_reuse`).
//!
//! When a client logs out and the store has nothing left to answer, the
//! relay answers the LOGOUT itself and hands the store connection back
//! (`relay::End::Logout`). Here it is made not authenticated with the
//! mmp's own UNAUTHENTICATE (RFC 8437: the mmp never relays a client's)
//! in a task of its own, and kept for the next login at that store
//! address, which then sends only its ID and LOGIN: no TCP or TLS
//! handshake, no greeting, and the store spares a session set-up.
//!
//! Safety: a connection is kept only after the store's tagged OK to the
//! UNAUTHENTICATE with nothing after it (nothing of the last user's
//! session can reach the next client), for `backend_reuse_idle` seconds
//! at most, `backend_reuse` per store address at most; before use it is
//! checked to be open and silent (a store that timed it out has sent BYE
//! or closed). A login that fails on a kept connection for any reason but
//! the store's NO goes on with a new connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::deliver::pool::Pool;
use crate::net::Conn;

/// A kept connection: not authenticated, between responses.
pub struct Kept {
    pub conn: Conn,
    /// The store's capabilities before login (from its UNAUTHENTICATE
    /// answer), if it sent them.
    pub caps: Option<String>,
}

/// Where a kept connection goes: the address and the name it was
/// connected for (its TLS certificate was checked for that name).
type Key = (SocketAddr, String);

/// The idle-connection pool the MTAs use (`deliver::pool`: bounded per
/// key, newest first, nothing past its idle time handed out), with the
/// mmp's rules on top: the newest connections are kept, and one is used
/// only if the store has not spoken since.
pub struct StorePool(Pool<Key, Kept>);

impl StorePool {
    pub fn new(per_store: usize, max_idle: Duration) -> StorePool {
        StorePool(Pool::new(per_store, max_idle))
    }

    pub fn enabled(&self) -> bool {
        self.0.keeps()
    }

    /// The most recently kept connection to `addr`, connected for `name`,
    /// that is still open and silent; older ones past their time are
    /// dropped on the way.
    pub fn take(&self, addr: SocketAddr, name: &str) -> Option<Kept> {
        let key = (addr, name.to_string());
        loop {
            let mut kept = self.0.take(&key)?;
            if quiet(&mut kept.conn) {
                return Some(kept);
            }
        }
    }

    /// Keeps a connection the store has just made not authenticated; the
    /// oldest one to the same place goes when there are too many, and
    /// those past their time go everywhere (their stores close them
    /// soon).
    pub fn put(&self, (addr, name): (SocketAddr, &str), conn: Conn, caps: Option<String>) {
        if !self.enabled() {
            return;
        }
        drop(self.0.expired());
        drop(
            self.0
                .put_newest((addr, name.to_string()), Kept { conn, caps }),
        );
    }

    /// Kept connections to `addr` (tests).
    #[cfg(test)]
    pub fn kept(&self, addr: SocketAddr) -> usize {
        self.0.idle_where(|(a, _)| *a == addr)
    }
}

/// The connection is open and the store has said nothing since it was
/// kept (a read would wait).
fn quiet(conn: &mut Conn) -> bool {
    let mut byte = [0u8; 1];
    super::relay::read_now(conn, &mut byte).is_none()
}

/// After the mmp answered a client's LOGOUT: UNAUTHENTICATE, then keep
/// the connection, in a task of its own.
pub fn give_back(
    pool: Arc<StorePool>,
    (addr, name): (SocketAddr, String),
    conn: Conn,
    timeout: Duration,
) {
    if !pool.enabled() {
        return;
    }
    tokio::spawn(async move {
        if let Ok(Some((conn, caps))) =
            tokio::time::timeout(timeout, super::backend::unauthenticate(conn)).await
        {
            pool.put((addr, &name), conn, caps);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn keeps_the_newest_few_and_only_open_silent_ones() {
        let addr: SocketAddr = "127.0.0.1:143".parse().unwrap();
        let pool = StorePool::new(2, Duration::from_secs(60));
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (a, b) = tokio::io::duplex(64);
            pool.put((addr, "store"), Box::new(a), Some("IMAP4rev1".into()));
            peers.push(b);
        }
        assert_eq!(pool.kept(addr), 2, "the oldest went");
        assert!(pool.take(addr, "other.name").is_none(), "kept for its name");
        // The newest store has said something (BYE): not used.
        peers[2].write_all(b"* BYE idle\r\n").await.unwrap();
        let k = pool.take(addr, "store").expect("the middle one");
        assert_eq!(k.caps.as_deref(), Some("IMAP4rev1"));
        assert_eq!(pool.kept(addr), 0);
        assert!(pool.take(addr, "store").is_none());
        // Closed by the store: not used.
        let (a, b) = tokio::io::duplex(64);
        pool.put((addr, "store"), Box::new(a), None);
        drop(b);
        assert!(pool.take(addr, "store").is_none());
        // Past its time: not used.
        let pool = StorePool::new(2, Duration::from_millis(1));
        let (a, _b) = tokio::io::duplex(64);
        pool.put((addr, "store"), Box::new(a), None);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(pool.take(addr, "store").is_none());
        // Off.
        let pool = StorePool::new(0, Duration::from_secs(60));
        let (a, _b) = tokio::io::duplex(64);
        pool.put((addr, "store"), Box::new(a), None);
        assert!(pool.take(addr, "store").is_none());
    }
}
