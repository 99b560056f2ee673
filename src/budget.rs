//! The process-wide budget of message bytes held in memory
//! (`limits.max_bytes_in_flight`).
//!
//! Every place where a client can make msgd hold message data in RAM takes
//! a `Lease` from the one `Budget` in `Services` before it does, and the
//! lease gives the bytes back when it is dropped:
//! - SMTP/LMTP: the in-memory part of a DATA/BDAT body (at most
//!   `limits.spool_threshold`; the rest is spooled to disk), taken when the
//!   body starts, and the whole message while it is being delivered.
//! - IMAP: an APPEND literal, taken when the literal is announced.
//!
//! When the budget is spent the client is told to come back later
//! (`452 4.3.1`, `NO [LIMIT]`) instead of the process growing without
//! bound. Accounting is in KiB (rounded up) so one lease can stand for up
//! to 4 TiB with tokio's `u32` permit counts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of message data the process may hold in memory at once.
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    /// The limit, in KiB; changed by a reload (`set_limit`).
    limit_kib: std::sync::atomic::AtomicU64,
}

/// Bytes taken from the budget; given back on drop.
#[derive(Debug)]
pub struct Lease {
    permit: Option<OwnedSemaphorePermit>,
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// The semaphore size for a limit in bytes (0: effectively unlimited).
fn limit_in_kib(limit: u64) -> u64 {
    if limit == 0 {
        (Semaphore::MAX_PERMITS as u64).min(u64::from(u32::MAX))
    } else {
        kib(limit).min(Semaphore::MAX_PERMITS as u64)
    }
}

impl Budget {
    /// A budget of `limit` bytes (0: effectively unlimited).
    pub fn new(limit: u64) -> Budget {
        let limit_kib = limit_in_kib(limit);
        Budget {
            sem: Arc::new(Semaphore::new(limit_kib as usize)),
            limit_kib: limit_kib.into(),
        }
    }

    /// A new limit from a reloaded `limits.max_bytes_in_flight` (SIGHUP).
    /// A higher one is available at once; a lower one takes what is free
    /// now and the rest as leases held now are given back (a task waits
    /// for them), so bytes in flight never exceed the new limit for long
    /// and no lease is cut short. Call it within the runtime.
    pub fn set_limit(&self, limit: u64) {
        use std::sync::atomic::Ordering;
        let new = limit_in_kib(limit);
        let old = self.limit_kib.swap(new, Ordering::SeqCst);
        if new > old {
            self.sem.add_permits((new - old) as usize);
        } else if new < old {
            let owed = (old - new) as usize;
            let rest = owed - self.sem.forget_permits(owed);
            if rest > 0 {
                let sem = self.sem.clone();
                tokio::spawn(async move {
                    if let Ok(p) = sem.acquire_many_owned(rest as u32).await {
                        p.forget();
                    }
                });
            }
        }
    }

    /// Takes `bytes` now, or None when the budget does not have them.
    pub fn try_take(&self, bytes: u64) -> Option<Lease> {
        let n = self.permits(bytes)?;
        if n == 0 {
            return Some(Lease::empty());
        }
        let permit = self.sem.clone().try_acquire_many_owned(n).ok()?;
        Some(Lease {
            permit: Some(permit),
        })
    }

    /// Takes `bytes`, waiting up to `wait` for other holders to give some
    /// back. None: still not available (or more than the whole budget).
    pub async fn take(&self, bytes: u64, wait: Duration) -> Option<Lease> {
        let n = self.permits(bytes)?;
        if n == 0 {
            return Some(Lease::empty());
        }
        let permit = tokio::time::timeout(wait, self.sem.clone().acquire_many_owned(n))
            .await
            .ok()?
            .ok()?;
        Some(Lease {
            permit: Some(permit),
        })
    }

    /// Bytes still available (approximate: KiB granularity).
    pub fn available(&self) -> u64 {
        (self.sem.available_permits() as u64).saturating_mul(1024)
    }

    /// The whole budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit_kib
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_mul(1024)
    }

    /// Permits for `bytes`; None when no wait could ever give them.
    fn permits(&self, bytes: u64) -> Option<u32> {
        let k = kib(bytes);
        if k > self.limit_kib.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        u32::try_from(k).ok()
    }
}

impl Lease {
    /// A lease of nothing (the data is not held in memory).
    pub fn empty() -> Lease {
        Lease { permit: None }
    }

    /// Adds another lease's bytes to this one.
    pub fn merge(&mut self, other: Lease) {
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_given_back_when_the_lease_drops() {
        let b = Budget::new(10 * 1024);
        let a = b.try_take(6 * 1024).expect("fits");
        assert!(b.try_take(6 * 1024).is_none(), "spent");
        let c = b.try_take(4 * 1024).expect("the rest fits");
        assert_eq!(b.available(), 0);
        drop(a);
        drop(c);
        assert_eq!(b.available(), 10 * 1024);
    }

    #[test]
    fn budget_never_grants_more_than_the_whole() {
        let b = Budget::new(1 << 20);
        assert!(b.try_take((1 << 20) + 1).is_none());
        assert!(b.try_take(1 << 20).is_some());
    }

    #[test]
    fn merged_leases_release_together() {
        let b = Budget::new(8 * 1024);
        let mut l = b.try_take(1024).unwrap();
        l.merge(b.try_take(2048).unwrap());
        l.merge(Lease::empty());
        assert_eq!(b.available(), 5 * 1024);
        drop(l);
        assert_eq!(b.available(), 8 * 1024);
    }

    #[tokio::test]
    async fn take_waits_for_a_release() {
        let b = Arc::new(Budget::new(4096));
        let held = b.try_take(4096).unwrap();
        let b2 = b.clone();
        let waiter =
            tokio::spawn(async move { b2.take(4096, Duration::from_secs(30)).await.is_some() });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.unwrap());
        assert!(b.take(8192, Duration::from_secs(30)).await.is_none());
    }

    #[tokio::test]
    async fn a_reloaded_limit_applies_and_a_lower_one_waits_for_leases_in_use() {
        let b = Budget::new(8192);
        let held = b.try_take(8192).unwrap();
        b.set_limit(16384);
        assert_eq!((b.limit(), b.available()), (16384, 8192));
        // Lower than what is in use: new takes see the new limit at once,
        // the bytes in use are taken back as they are given back.
        b.set_limit(4096);
        assert_eq!((b.limit(), b.available()), (4096, 0));
        assert!(b.try_take(8192).is_none());
        drop(held);
        for _ in 0..100 {
            if b.available() == 4096 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(b.available(), 4096);
        assert!(b.try_take(4096).is_some());
    }
}
