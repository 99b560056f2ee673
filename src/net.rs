//! Listeners and connections shared by every protocol: binding (IPv6
//! sockets are `IPV6_V6ONLY`, so `0.0.0.0:P` and `[::]:P` bind side by
//! side), the accept loop with the process's connection table, one tracing
//! span per connection, HAProxy PROXY v1/v2 headers, implicit TLS, a write
//! deadline on every stream, and the boxed stream type sessions run on (so
//! a session can upgrade to TLS in place and tests can drive it in memory).
//!
//! Invariants:
//! - Session ids come from the process's `ConnTable` (in `Services`), not
//!   from a static: 1, 2, 3, ... per process.
//! - Networks (`proxy_networks`, `store.lmtp_networks`) are the config's
//!   typed `Network` values, parsed when it loaded; nothing is parsed per
//!   connection.
//! - Connection limits are per process: one `ConnTable` (in `Services`)
//!   counts every TCP listener; the per-client limit groups IPv6 clients by
//!   /64. A refused connection gets the protocol's short refusal where that
//!   is cheap (plaintext listeners) and is closed.
//! - Trust only where configured: with `listener.X.proxy_protocol = true`
//!   a PROXY header is read only from `listener.X.proxy_networks` (the load
//!   balancers); anyone else is closed. The client address such a header
//!   names becomes `ConnInfo.peer` (what limits, logs and sessions see);
//!   `ConnInfo.via` keeps the balancer. No other claim of the peer (an IMAP
//!   ID, an SMTP HELO) ever changes `peer`.
//! - The store's LMTP listener serves only `store.lmtp_networks`.
//! - Every write of every session goes through `WriteDeadline`: a client
//!   that stops reading is disconnected after `limits.write_timeout`.
//! - Refusals are logged at a bounded rate (`RefusalLog`): a flood costs
//!   one line per reason every few seconds, not one per connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::config::{LimitsConfig, Protocol, TlsMode};
use crate::netaddr::{in_any, Network};
use crate::tls::Tls;
use tokio_util::sync::CancellationToken;

/// What the accept loops need of a role's shared state; the handler of
/// each connection gets the same value. `Services` is the one there is
/// (kept above this module: `net` knows nothing of the roles).
pub trait Accepting: Clone + Send + Sync + 'static {
    /// The limits the process started with (a reload's are in `conns`).
    fn limits(&self) -> &LimitsConfig;
    fn conns(&self) -> &Arc<ConnTable>;
    fn shutdown(&self) -> &CancellationToken;
    fn tls(&self) -> &Tls;
}

/// Any byte stream a session can run on: TCP, TLS over TCP, an in-memory
/// duplex in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type Conn = Box<dyn Stream>;

/// What a session knows about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Short unique id for log lines of this connection.
    pub session_id: u64,
    /// The client: the TCP peer, or the address a PROXY header gave.
    pub peer: SocketAddr,
    /// The TCP peer (the load balancer) when a PROXY header named another
    /// client address; None for a direct connection.
    pub via: Option<SocketAddr>,
    pub local: SocketAddr,
    pub protocol: Protocol,
    pub tls_mode: TlsMode,
    /// True once TLS is active (implicit or after STARTTLS).
    pub tls_active: bool,
}

impl ConnInfo {
    /// Plaintext passwords are accepted without TLS only from loopback:
    /// the client and the host that opened the TCP connection both are
    /// (a balancer elsewhere that names a loopback client does not count).
    pub fn is_loopback(&self) -> bool {
        self.peer.ip().is_loopback() && self.connected_ip().is_loopback()
    }

    /// The address of the host that opened the TCP connection (a proxy
    /// or load balancer when one sent a PROXY header; else the client).
    pub fn connected_ip(&self) -> std::net::IpAddr {
        self.via.map_or(self.peer.ip(), |v| v.ip())
    }

    /// May this connection log in, given `login_networks` (empty: yes)?
    pub fn login_allowed(&self, networks: &[Network]) -> bool {
        networks.is_empty() || in_any(networks, self.connected_ip())
    }

    /// A ConnInfo for tests driving a session over an in-memory stream.
    pub fn for_test(protocol: Protocol) -> ConnInfo {
        ConnInfo {
            session_id: 1,
            peer: "127.0.0.1:50000".parse().unwrap(),
            via: None,
            local: "127.0.0.1:25".parse().unwrap(),
            protocol,
            tls_mode: protocol.default_tls(),
            tls_active: false,
        }
    }
}

/// Binds a TCP listener. An IPv6 socket is `IPV6_V6ONLY`: on Linux it would
/// otherwise take the IPv4 port too, and the usual pair of binds
/// (`0.0.0.0:P` and `[::]:P`) would fail with "Address already in use".
/// To serve IPv4 and IPv6, list both addresses.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Like tokio's TcpListener::bind: a restart can rebind at once.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// How one listener accepts: its protocol and TLS, and whom it trusts.
#[derive(Debug, Clone)]
pub struct Listen {
    pub protocol: Protocol,
    pub tls_mode: TlsMode,
    /// Some: every connection starts with a PROXY header, read only from
    /// these networks (the load balancers); others are closed.
    pub proxy_networks: Option<Vec<Network>>,
    /// Some: only clients in these networks are served (LMTP: the MTAs).
    pub allow_networks: Option<Vec<Network>>,
}

impl Listen {
    /// A listener that trusts no PROXY header and serves anyone.
    pub fn new(protocol: Protocol, tls_mode: TlsMode) -> Listen {
        Listen {
            protocol,
            tls_mode,
            proxy_networks: None,
            allow_networks: None,
        }
    }

    /// The listener `name` of the configuration.
    pub fn from_config(
        name: &str,
        l: &crate::config::ListenerConfig,
        config: &crate::config::Config,
    ) -> Option<Listen> {
        let protocol = l.protocol(name)?;
        Some(Listen {
            protocol,
            tls_mode: l.tls_mode(protocol),
            proxy_networks: l.proxy_protocol.then(|| l.proxy_networks.clone()),
            allow_networks: (protocol == Protocol::Lmtp)
                .then(|| config.store.lmtp_networks.clone()),
        })
    }
}

/// The key a client is counted under: its IPv4 address, or the /64 of its
/// IPv6 address (one subscriber usually holds a whole /64, so counting
/// single addresses would let one client open 2^64 slots).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        },
    }
}

/// The process's connection table: every TCP listener (and the unix
/// sockets, in the total) counts here. Lives in `Services`.
#[derive(Default)]
pub struct ConnTable {
    counts: Mutex<Counts>,
    /// Rate-bounded log of refused connections.
    pub refusals: RefusalLog,
    /// Session ids handed out so far (log lines and message ids name the
    /// session by its id, unique within the process).
    sessions: AtomicU64,
    /// The `[limits]` the accept loops apply, once a reload (SIGHUP) set
    /// them (`set_limits`); before that, each loop's start configuration.
    live_limits: Mutex<Option<Arc<crate::config::LimitsConfig>>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// The most connections open at once since the last memory trim.
    peak: usize,
    /// When memory was last given back (`crate::memory`).
    trimmed: Option<std::time::Instant>,
    /// Open connections per `client_key`.
    per_client: HashMap<IpAddr, usize>,
}

/// One open connection in the table; dropping it frees its slots.
pub struct ConnGuard {
    table: Arc<ConnTable>,
    /// The client key counted for this connection, once known.
    client: Option<IpAddr>,
}

impl ConnTable {
    /// The `[limits]` of a reloaded configuration: new connections are
    /// admitted (`max_connections`, `max_connections_per_ip`) and get
    /// their `write_timeout` by them; open ones keep their slots.
    pub fn set_limits(&self, limits: &crate::config::LimitsConfig) {
        *self.live_limits.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(limits.clone()));
    }

    /// The limits in force: the reloaded ones, else `start`.
    pub fn limits_or(
        &self,
        start: &Arc<crate::config::LimitsConfig>,
    ) -> Arc<crate::config::LimitsConfig> {
        self.live_limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| start.clone())
    }

    /// A new session id: 1, 2, 3, ... for this process.
    pub fn next_session_id(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one of the process's `max` slots, or None when all are taken.
    pub fn enter(self: &Arc<Self>, max: usize) -> Option<ConnGuard> {
        let mut c = self.counts();
        if c.total >= max {
            return None;
        }
        c.total += 1;
        c.peak = c.peak.max(c.total);
        Some(ConnGuard {
            table: self.clone(),
            client: None,
        })
    }

    /// Counts the connection against its client (grouped by `client_key`);
    /// false when that client has `max` open already.
    pub fn enter_client(&self, guard: &mut ConnGuard, ip: IpAddr, max: usize) -> bool {
        let key = client_key(ip);
        let mut c = self.counts();
        let n = c.per_client.entry(key).or_insert(0);
        if *n >= max {
            if *n == 0 {
                c.per_client.remove(&key);
            }
            return false;
        }
        *n += 1;
        guard.client = Some(key);
        true
    }

    /// Open connections in the process, and from `ip`'s client key.
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.counts();
        let per = c.per_client.get(&client_key(ip)).copied().unwrap_or(0);
        (c.total, per)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.table.counts();
        c.total = c.total.saturating_sub(1);
        // Many connections closed: give their memory back, at once or
        // (one trim per TRIM_EVERY) when the last trim is old enough.
        if c.peak >= crate::memory::TRIM_MIN_PEAK && c.total <= c.peak / 2 {
            let now = std::time::Instant::now();
            let at = c
                .trimmed
                .map_or(now, |t| (t + crate::memory::TRIM_EVERY).max(now));
            c.peak = c.total;
            c.trimmed = Some(at);
            crate::memory::trim_at(at);
        }
        if let Some(key) = self.client {
            if let Some(n) = c.per_client.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    c.per_client.remove(&key);
                }
            }
        }
    }
}

/// How often, at most, one reason of refusal is logged.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Refused connections, logged at a bounded rate: the first refusal of a
/// reason is logged at once, later ones are counted and reported in one
/// line at most every `REFUSAL_LOG_EVERY`. A flood costs a few lines a
/// minute, whatever its size.
#[derive(Default)]
pub struct RefusalLog {
    /// Per reason: when it was last logged, refusals since.
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RefusalLog {
    /// Notes one refusal at `now`; Some(n) when a line should be written
    /// now, covering `n` refusals.
    pub fn note(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(reason) {
            None => {
                seen.insert(reason, (now, 0));
                Some(1)
            }
            Some((last, count)) => {
                *count += 1;
                if now.saturating_duration_since(*last) >= REFUSAL_LOG_EVERY {
                    let n = *count;
                    *last = now;
                    *count = 0;
                    Some(n)
                } else {
                    None
                }
            }
        }
    }

    /// Logs (rate-bounded) that a connection from `peer` was refused.
    pub fn refused(&self, reason: &'static str, peer: SocketAddr, protocol: Protocol) {
        crate::metrics::refused(reason);
        if let Some(n) = self.note(reason, Instant::now()) {
            warn!(
                %peer,
                protocol = protocol.name(),
                refused = n,
                "connection refused: {reason} (count since the last such line; at most one every {}s)",
                REFUSAL_LOG_EVERY.as_secs()
            );
        }
    }
}

/// The protocol's short "go away" for a refused connection, where one can
/// be sent in plaintext (not on implicit-TLS listeners).
pub fn refusal_text(protocol: Protocol, tls_mode: TlsMode) -> Option<&'static [u8]> {
    if tls_mode == TlsMode::Implicit {
        return None;
    }
    match protocol {
        // RFC 5321 3.8 / RFC 3463 X.7.0
        Protocol::Smtp | Protocol::Submission | Protocol::Submissions | Protocol::Lmtp => {
            Some(b"421 4.7.0 Too many connections\r\n")
        }
        // RFC 9051 7.1.5
        Protocol::Imap | Protocol::Imaps => Some(b"* BYE Too many connections\r\n"),
        // RFC 3206 SYS/TEMP
        Protocol::Pop3 | Protocol::Pop3s => Some(b"-ERR [SYS/TEMP] Too many connections\r\n"),
        Protocol::Http | Protocol::Https | Protocol::Console => None,
        // RFC 5804 1.3
        Protocol::Managesieve => Some(b"BYE \"Too many connections\"\r\n"),
    }
}

/// A stream whose writes have a deadline: a write (or flush, or shutdown)
/// that makes no progress for `timeout` fails with `TimedOut`, so a client
/// that never reads its responses cannot hold a session (and its buffers)
/// forever. Reads are untouched; sessions time those themselves.
pub struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is pending; allocated on the first stall only.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// Passes a Ready through (disarming the timer); on Pending, arms the
    /// timer and fails once it fires.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out: the peer does not read",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, r)
    }
}

/// Accepts on `listener` until shutdown, running `handler` for each
/// connection under the process's limits. With PROXY on, the header is read
/// first (from the configured balancers only) and names the client.
/// Implicit-TLS listeners hand the handler a stream that is already TLS.
/// Returns when shutdown is signalled; the caller waits on `tracker` for
/// sessions to drain.
pub async fn serve<S, F, Fut>(
    listener: TcpListener,
    listen: Listen,
    services: S,
    tracker: TaskTracker,
    handler: F,
) where
    S: Accepting,
    F: Fn(Conn, ConnInfo, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let listen = Arc::new(listen);
    let protocol = listen.protocol;
    let tls_mode = listen.tls_mode;
    let refusal = refusal_text(protocol, tls_mode);
    let start_limits = Arc::new(services.limits().clone());
    let conns = services.conns().clone();
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            _ = services.shutdown().cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, tcp_peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // The limits of the latest reload apply from the next connection.
        let limits = conns.limits_or(&start_limits);
        let write_timeout = Duration::from_secs(limits.write_timeout.max(1));
        // Cheap refusals happen here, before a task exists: a best-effort
        // non-blocking write of the refusal, then close.
        let refuse_now = |reason: &'static str, text: Option<&'static [u8]>| {
            conns.refusals.refused(reason, tcp_peer, protocol);
            if let Some(t) = text {
                let _ = tcp.try_write(t);
            }
        };
        let Some(mut guard) = conns.enter(limits.max_connections) else {
            refuse_now("process connection limit (limits.max_connections)", refusal);
            continue;
        };
        match &listen.proxy_networks {
            Some(nets) => {
                if !in_any(nets, tcp_peer.ip()) {
                    refuse_now("PROXY listener, peer not in proxy_networks", None);
                    continue;
                }
            }
            None => {
                if let Some(allow) = &listen.allow_networks {
                    if !in_any(allow, tcp_peer.ip()) {
                        refuse_now("client not in store.lmtp_networks", None);
                        continue;
                    }
                }
                if !conns.enter_client(&mut guard, tcp_peer.ip(), limits.max_connections_per_ip) {
                    refuse_now("per-client limit (limits.max_connections_per_ip)", refusal);
                    continue;
                }
            }
        }
        let local = tcp.local_addr().ok().or(local).unwrap_or(tcp_peer);
        let services = services.clone();
        let handler = handler.clone();
        let listen = listen.clone();
        let max_per_client = limits.max_connections_per_ip;
        tracker.spawn(async move {
            let mut guard = guard;
            let mut conn: Conn = Box::new(WriteDeadline::new(tcp, write_timeout));
            let mut peer = tcp_peer;
            let mut via = None;
            if listen.proxy_networks.is_some() {
                // Boxed, like the TLS handshake below: the task keeps its
                // largest state for the whole connection.
                let read = tokio::time::timeout(
                    crate::proxyproto::HEADER_TIMEOUT,
                    Box::pin(crate::proxyproto::read_header(&mut conn)),
                )
                .await;
                let refusals = &services.conns().refusals;
                match read {
                    Ok(Ok((header, rest))) => {
                        if let Some(client) = header.source {
                            peer = client;
                            via = Some(tcp_peer);
                        }
                        if !rest.is_empty() {
                            conn = Box::new(crate::proxyproto::Rewind::new(rest, conn));
                        }
                    }
                    Ok(Err(_)) => {
                        refusals.refused("bad PROXY header", tcp_peer, protocol);
                        return;
                    }
                    Err(_) => {
                        refusals.refused("no PROXY header in time", tcp_peer, protocol);
                        return;
                    }
                }
                // The client the balancer names is the one limited.
                if let Some(allow) = &listen.allow_networks {
                    if !in_any(allow, peer.ip()) {
                        refusals.refused("client not in store.lmtp_networks", peer, protocol);
                        return;
                    }
                }
                if !services.conns().enter_client(&mut guard, peer.ip(), max_per_client) {
                    refusals.refused("per-client limit (limits.max_connections_per_ip)", peer, protocol);
                    if let Some(t) = refusal_text(protocol, listen.tls_mode) {
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn.write_all(t)).await;
                    }
                    return;
                }
            }
            let _guard = guard;
            let session_id = services.conns().next_session_id();
            let info = ConnInfo {
                session_id,
                peer,
                via,
                local,
                protocol,
                tls_mode,
                tls_active: false,
            };
            let span = match via {
                Some(via) => tracing::info_span!("session", id = session_id, proto = protocol.name(), %peer, %via),
                None => tracing::info_span!("session", id = session_id, proto = protocol.name(), %peer),
            };
            async move {
                let mut info = info;
                let conn: Conn = if tls_mode == TlsMode::Implicit {
                    match Box::pin(services.tls().accept(conn)).await {
                        Ok(s) => {
                            info.tls_active = true;
                            s
                        }
                        Err(e) => {
                            info!(error = %e, "TLS handshake failed");
                            return;
                        }
                    }
                } else {
                    conn
                };
                let _metrics = crate::metrics::session(protocol.name());
                handler(conn, info, services).await;
            }
            .instrument(span)
            .await
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            client_key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:3::1")),
            client_key(ip("2001:db8:1:2::1"))
        );
        // IPv4 addresses are counted one by one, mapped ones as IPv4.
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(client_key(ip("192.0.2.7")), client_key(ip("192.0.2.8")));
    }

    #[test]
    fn plaintext_loopback_needs_both_hops_on_loopback() {
        let mut i = ConnInfo::for_test(Protocol::Imap);
        assert!(i.is_loopback());
        // A balancer elsewhere naming a loopback client: the password
        // would cross the network between it and us.
        i.via = Some("192.0.2.1:4000".parse().unwrap());
        assert!(!i.is_loopback());
        // A balancer on this host naming a remote client.
        i.via = Some("127.0.0.1:4000".parse().unwrap());
        i.peer = "192.0.2.7:1".parse().unwrap();
        assert!(!i.is_loopback());
        i.peer = "127.0.0.1:1".parse().unwrap();
        assert!(i.is_loopback());
    }

    /// When half of the connections of a peak have closed, the table
    /// gives freed memory back (`crate::memory`); the next trim waits for
    /// `TRIM_EVERY` after it; small peaks are not worth it.
    #[test]
    fn memory_is_trimmed_when_connections_fall_to_half_their_peak() {
        let t = Arc::new(ConnTable::default());
        let mut open: Vec<ConnGuard> = (0..10).map(|_| t.enter(1000).unwrap()).collect();
        open.clear();
        assert!(t.counts().trimmed.is_none(), "a peak of 10 is not trimmed");
        open = (0..100).map(|_| t.enter(1000).unwrap()).collect();
        assert_eq!(t.counts().peak, 100);
        open.truncate(51);
        assert!(t.counts().trimmed.is_none());
        open.truncate(50);
        let first = t.counts().trimmed;
        assert!(first.is_some(), "trimmed at half the peak");
        assert_eq!(t.counts().peak, 50);
        let more: Vec<ConnGuard> = (0..100).map(|_| t.enter(1000).unwrap()).collect();
        drop(more);
        let next = t.counts().trimmed.unwrap();
        assert_eq!(
            next,
            first.unwrap() + crate::memory::TRIM_EVERY,
            "the next trim waits for TRIM_EVERY"
        );
        drop(open);
    }

    #[test]
    fn connection_table_counts_per_process_and_per_64() {
        let t = Arc::new(ConnTable::default());
        let mut a = t.enter(3).unwrap();
        assert!(t.enter_client(&mut a, ip("2001:db8::1"), 2));
        let mut b = t.enter(3).unwrap();
        // Another address of the same /64 is the same client.
        assert!(t.enter_client(&mut b, ip("2001:db8::ffff:2"), 2));
        let mut c = t.enter(3).unwrap();
        assert!(!t.enter_client(&mut c, ip("2001:db8::3"), 2));
        assert!(t.enter_client(&mut c, ip("2001:db8:0:1::3"), 2));
        // The process limit of 3 is reached, whoever asks.
        assert!(t.enter(3).is_none());
        assert_eq!(t.open(ip("2001:db8::9")), (3, 2));
        drop(a);
        assert_eq!(t.open(ip("2001:db8::9")), (2, 1));
        let mut d = t.enter(3).unwrap();
        assert!(t.enter_client(&mut d, ip("2001:db8::1"), 2));
        drop((b, c, d));
        assert_eq!(t.open(ip("2001:db8::9")), (0, 0));
        assert!(t.counts().per_client.is_empty());
    }

    /// The session counter lives in the process's `ConnTable` (in
    /// `Services`), not in a static: each table counts from 1.
    #[test]
    fn session_ids_come_from_the_connection_table() {
        let a = ConnTable::default();
        let b = ConnTable::default();
        assert_eq!((a.next_session_id(), a.next_session_id()), (1, 2));
        assert_eq!(b.next_session_id(), 1);
        assert_eq!(a.next_session_id(), 3);
    }

    /// A listener's trusted networks are the configuration's typed values,
    /// parsed once when it loaded; nothing is parsed per connection.
    #[test]
    fn listen_takes_the_typed_networks_of_the_config() {
        let mut c = crate::config::Config::default();
        let mut l = crate::config::ListenerConfig {
            proxy_protocol: true,
            proxy_networks: vec!["192.0.2.0/24".parse().unwrap()],
            protocol: Some(Protocol::Lmtp),
            ..Default::default()
        };
        c.store.lmtp_networks = vec!["10.9.0.0/16".parse().unwrap()];
        let listen = Listen::from_config("lmtp-mtas", &l, &c).unwrap();
        assert_eq!(listen.protocol, Protocol::Lmtp);
        assert_eq!(listen.tls_mode, TlsMode::None);
        assert_eq!(
            listen.proxy_networks.as_deref(),
            Some(&l.proxy_networks[..])
        );
        assert_eq!(
            listen.allow_networks.as_deref(),
            Some(&c.store.lmtp_networks[..])
        );
        assert!(in_any(
            listen.allow_networks.as_ref().unwrap(),
            ip("10.9.1.1")
        ));
        // Without proxy_protocol no PROXY header is trusted from anyone;
        // an IMAP listener serves every network.
        l.proxy_protocol = false;
        l.protocol = None;
        let listen = Listen::from_config("imap", &l, &c).unwrap();
        assert_eq!(listen.proxy_networks, None);
        assert_eq!(listen.allow_networks, None);
        assert_eq!(listen.tls_mode, TlsMode::StartTls);
        assert!(Listen::from_config("second", &l, &c).is_none());
    }

    #[test]
    fn refusals_are_logged_at_a_bounded_rate() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note("limit", t0), Some(1));
        let lines = (1..10_000u64)
            .filter_map(|i| log.note("limit", t0 + Duration::from_micros(i)))
            .count();
        assert_eq!(lines, 0, "a flood within the interval writes nothing more");
        // Another reason has its own line.
        assert_eq!(log.note("proxy", t0), Some(1));
        // After the interval, one line covers everything since.
        assert_eq!(log.note("limit", t0 + REFUSAL_LOG_EVERY), Some(10_000));
        assert_eq!(log.note("limit", t0 + REFUSAL_LOG_EVERY), None);
    }

    #[test]
    fn refusal_texts_follow_each_protocol() {
        assert_eq!(
            refusal_text(Protocol::Smtp, TlsMode::StartTls),
            Some(&b"421 4.7.0 Too many connections\r\n"[..])
        );
        assert!(refusal_text(Protocol::Imap, TlsMode::StartTls)
            .unwrap()
            .starts_with(b"* BYE "));
        assert!(refusal_text(Protocol::Pop3, TlsMode::StartTls)
            .unwrap()
            .starts_with(b"-ERR "));
        assert_eq!(refusal_text(Protocol::Imaps, TlsMode::Implicit), None);
    }

    #[tokio::test]
    async fn ipv4_and_ipv6_listeners_share_a_port() {
        // Without IPV6_V6ONLY, [::]:P would also take 0.0.0.0:P on Linux
        // and the second bind of a role profile would fail.
        let any4 = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let p = any4.local_addr().unwrap().port();
        let any6 = bind(SocketAddr::new(ip("::"), p));
        assert!(any6.is_ok(), "{any6:?}");
        // And the other order.
        let any6 = bind("[::]:0".parse().unwrap()).unwrap();
        let p = any6.local_addr().unwrap().port();
        assert!(bind(SocketAddr::new(ip("0.0.0.0"), p)).is_ok());
    }

    #[tokio::test]
    async fn write_deadline_fails_a_write_the_peer_never_reads() {
        let (a, _b) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(a, Duration::from_millis(100));
        let started = Instant::now();
        let r = w.write_all(&[0u8; 4096]).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn write_deadline_lets_a_reading_peer_through() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(a, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            // Slow but steady: each read makes room within the deadline.
            while got.len() < 4096 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let n = b.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got.len()
        });
        w.write_all(&[7u8; 4096]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 4096);
    }
}

/// Helpers for session tests over in-memory streams.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

    /// A slowloris client: sends `text` (repeated) one byte every 200 ms
    /// until the server answers with a line, and returns that line; empty
    /// if the server closed first or 100 bytes went unanswered.
    pub(crate) async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
        c: &mut BufReader<S>,
        text: &[u8],
    ) -> String {
        for b in text.iter().cycle().take(100) {
            if c.get_mut().write_all(&[*b]).await.is_err() {
                break;
            }
            let mut line = String::new();
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(200), c.read_line(&mut line)).await
            {
                r.unwrap();
                return line;
            }
        }
        String::new()
    }
}
