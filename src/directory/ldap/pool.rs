//! Connections to the LDAP servers: failover over several URLs, and pools of
//! open connections.
//!
//! ldap3 has no pool of its own, and a bind changes the identity of the whole
//! connection. So there are two pools over one `Servers`: one of connections
//! bound as the service account (lookups, shared by every role of the
//! process), and one used only for user-password binds, where each lease
//! carries one bind at a time and nothing else.
//!
//! Invariants:
//! - A lease is exclusive. It goes back to its pool only through
//!   `Lease::release`, after an operation that left the connection healthy;
//!   a lease dropped any other way closes its connection (drop = discard).
//! - A pooled connection is checked before reuse: its driver must still run,
//!   it must be on the server failover currently prefers, and after
//!   `health_check_idle` of idleness it must answer a WhoAmI.
//! - Servers are tried in order from the preferred one. After a failover the
//!   first URL is preferred again once `failback_after` has passed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::directory::DirError;

/// The servers, in order of preference, and which one is in use.
pub(super) struct Servers {
    urls: Vec<String>,
    failback_after: Duration,
    connect_timeout: Duration,
    op_timeout: Duration,
    starttls: bool,
    /// Our own TLS settings when a CA file is configured; None: ldap3 builds
    /// one from the system's roots.
    tls: Option<Arc<rustls::ClientConfig>>,
    state: Mutex<Failover>,
}

struct Failover {
    /// Index of the URL new connections go to first.
    current: usize,
    /// When `current` was last chosen because an earlier URL failed.
    since: Instant,
}

pub(super) struct ServerSettings {
    pub urls: Vec<String>,
    pub failback_after: Duration,
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    pub starttls: bool,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Servers {
    pub fn new(s: ServerSettings) -> Servers {
        Servers {
            urls: s.urls,
            failback_after: s.failback_after,
            connect_timeout: s.connect_timeout,
            op_timeout: s.op_timeout,
            starttls: s.starttls,
            tls: s.tls,
            state: Mutex::new(Failover {
                current: 0,
                since: Instant::now(),
            }),
        }
    }

    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// The URL index new connections should go to.
    pub fn preferred(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.current != 0 && s.since.elapsed() >= self.failback_after {
            0
        } else {
            s.current
        }
    }

    fn settings(&self) -> LdapConnSettings {
        let mut s = LdapConnSettings::new()
            .set_conn_timeout(self.connect_timeout)
            .set_starttls(self.starttls);
        if let Some(c) = &self.tls {
            s = s.set_config(c.clone());
        }
        s
    }

    /// Opens a connection to the first reachable server from the preferred
    /// one on, bound as `bind` (DN, password) if given.
    async fn connect(
        &self,
        bind: Option<&(String, String)>,
    ) -> Result<(ldap3::Ldap, usize), DirError> {
        let n = self.urls.len();
        let start = self.preferred();
        let mut last = String::from("no LDAP URL configured");
        for k in 0..n {
            let i = (start + k) % n;
            let url = &self.urls[i];
            // Belt and braces: the connect timeout covers TCP and TLS, the
            // operation timeout the bind; nothing may hang beyond both.
            let limit = self.connect_timeout + self.op_timeout;
            let r = match tokio::time::timeout(limit, self.connect_one(url, bind)).await {
                Ok(r) => r,
                Err(_) => Err("timed out".to_string()),
            };
            match r {
                Ok(ldap) => {
                    self.chose(start, i);
                    return Ok((ldap, i));
                }
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, "LDAP server unusable, trying the next");
                    last = format!("{url}: {e}");
                }
            }
        }
        Err(DirError::Temporary(format!(
            "no LDAP server reachable (last: {last})"
        )))
    }

    async fn connect_one(
        &self,
        url: &str,
        bind: Option<&(String, String)>,
    ) -> Result<ldap3::Ldap, String> {
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings(), url)
            .await
            .map_err(|e| e.to_string())?;
        let url_owned = url.to_string();
        // The driver ends when the last `Ldap` handle is dropped.
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(url = %url_owned, error = %e, "LDAP connection ended");
            }
        });
        if let Some((dn, pw)) = bind {
            let r = ldap
                .with_timeout(self.op_timeout)
                .simple_bind(dn, pw)
                .await
                .map_err(|e| e.to_string())?;
            if r.rc != 0 {
                // Never log the password; the DN is configuration.
                return Err(format!(
                    "service bind as {dn} refused: rc={} {}",
                    r.rc, r.text
                ));
            }
        }
        Ok(ldap)
    }

    /// Records that URL `i` answered when `start` was tried first.
    fn chose(&self, start: usize, i: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if i != s.current {
            if i == 0 {
                tracing::info!(url = %self.urls[0], "LDAP back on the first server");
            } else {
                tracing::warn!(url = %self.urls[i], "LDAP failed over");
            }
            s.current = i;
            s.since = Instant::now();
        } else if start != i {
            // The first URL was retried after failback_after and is still
            // down: wait another period before trying it again.
            s.since = Instant::now();
        }
    }
}

/// One kind of pooled connection.
pub(super) struct Pool {
    /// For logs: "lookup" or "auth".
    name: &'static str,
    servers: Arc<Servers>,
    /// Service account (DN, password) to bind as after connecting.
    bind: Option<(String, String)>,
    idle: Mutex<Vec<Idle>>,
    /// Caps the open connections (idle + leased) at the pool size.
    permits: Semaphore,
    health_check_idle: Duration,
}

struct Idle {
    ldap: ldap3::Ldap,
    server: usize,
    since: Instant,
}

/// A connection on loan from a pool.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    pub ldap: ldap3::Ldap,
    server: usize,
    /// Came from the idle list (so a failure may just mean "stale").
    pub reused: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// Gives a healthy connection back for reuse.
    pub fn release(self) {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(Idle {
            ldap: self.ldap,
            server: self.server,
            since: Instant::now(),
        });
    }
}

impl Pool {
    pub fn new(
        name: &'static str,
        servers: Arc<Servers>,
        bind: Option<(String, String)>,
        size: usize,
        health_check_idle: Duration,
    ) -> Pool {
        Pool {
            name,
            servers,
            bind,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            health_check_idle,
        }
    }

    /// A connection: a checked idle one, or a new one. `fresh` skips the
    /// idle list (a retry after a stale connection failed).
    pub async fn get(&self, fresh: bool) -> Result<Lease<'_>, DirError> {
        let op_timeout = self.servers.op_timeout();
        let permit = match tokio::time::timeout(op_timeout, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(DirError::Temporary(format!(
                    "all LDAP {} connections busy",
                    self.name
                )))
            }
        };
        if !fresh {
            let preferred = self.servers.preferred();
            loop {
                let candidate = {
                    let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                    idle.pop()
                };
                let Some(mut c) = candidate else { break };
                if c.server != preferred || c.ldap.is_closed() {
                    continue;
                }
                if c.since.elapsed() >= self.health_check_idle && !self.ping(&mut c.ldap).await {
                    tracing::debug!(pool = self.name, "idle LDAP connection failed its check");
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    ldap: c.ldap,
                    server: c.server,
                    reused: true,
                    _permit: permit,
                });
            }
        }
        let (ldap, server) = self.servers.connect(self.bind.as_ref()).await?;
        Ok(Lease {
            pool: self,
            ldap,
            server,
            reused: false,
            _permit: permit,
        })
    }

    /// One round trip (RFC 4532 WhoAmI) within the operation timeout.
    async fn ping(&self, ldap: &mut ldap3::Ldap) -> bool {
        matches!(
            ldap.with_timeout(self.servers.op_timeout())
                .extended(ldap3::exop::WhoAmI)
                .await,
            Ok(ldap3::result::ExopResult(_, ref r)) if r.rc == 0
        )
    }

    #[cfg(test)]
    pub fn bind_password(&self) -> Option<&str> {
        self.bind.as_ref().map(|(_, p)| p.as_str())
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Does this error leave the connection unusable (transport, timeout), as
/// opposed to an LDAP result code on a healthy connection?
pub(super) fn is_connection_error(e: &LdapError) -> bool {
    !matches!(
        e,
        LdapError::LdapResult { .. } | LdapError::FilterParsing | LdapError::DecodingUTF8
    )
}
