//! Listeners and connections shared by every protocol: accept loop with
//! connection limits (overall and per client address), one tracing span per
//! connection, HAProxy PROXY v1/v2 headers, implicit TLS, and the boxed
//! stream type sessions run on (so a session can upgrade to TLS in place and
//! tests can drive it in memory).
//!
//! With `listener.X.proxy_protocol = true` every connection must start with
//! a PROXY header; the client address it names becomes `ConnInfo.peer`, and
//! so is what the per-address limit, the logs and the sessions see.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::config::{Protocol, TlsMode};
use crate::services::Services;

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
    /// Plaintext passwords are accepted without TLS only from loopback.
    pub fn is_loopback(&self) -> bool {
        self.peer.ip().is_loopback()
    }

    /// The address of the host that opened the TCP connection (a proxy
    /// or load balancer when one sent a PROXY header; else the client).
    pub fn connected_ip(&self) -> std::net::IpAddr {
        self.via.map_or(self.peer.ip(), |v| v.ip())
    }

    /// May this connection log in, given `login_networks` (empty: yes)?
    pub fn login_allowed(&self, networks: &[String]) -> bool {
        networks.is_empty() || crate::smtp::auth::is_trusted(networks, self.connected_ip())
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

pub(crate) static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Connections per client address, for the per-IP limit.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIpGuard {
    /// Counts one more connection from `ip`, or None if it has `max` already.
    fn enter(table: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut t = table.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                t.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(PerIpGuard {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Accepts on `listener` until shutdown, running `handler` for each
/// connection under the limits. With `proxy_protocol`, a PROXY header is
/// read first and names the client. Implicit-TLS listeners hand the handler
/// a stream that is already TLS. Returns when shutdown is signalled; the
/// caller waits on `tracker` for sessions to drain.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    protocol: Protocol,
    tls_mode: TlsMode,
    proxy_protocol: bool,
    services: Services,
    tracker: TaskTracker,
    handler: F,
) where
    F: Fn(Conn, ConnInfo, Services) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let limits = services.config.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            _ = services.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, tcp_peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(peer = %tcp_peer, protocol = protocol.name(), "connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let local = tcp.local_addr().ok().or(local).unwrap_or(tcp_peer);
        let services = services.clone();
        let handler = handler.clone();
        let per_ip = per_ip.clone();
        let max_per_ip = limits.max_connections_per_ip;
        tracker.spawn(async move {
            let _permit = permit;
            let mut conn: Conn = Box::new(tcp);
            let mut peer = tcp_peer;
            let mut via = None;
            if proxy_protocol {
                // Boxed, like the TLS handshake below: the task keeps its
                // largest state for the whole connection.
                let read = tokio::time::timeout(
                    crate::proxyproto::HEADER_TIMEOUT,
                    Box::pin(crate::proxyproto::read_header(&mut conn)),
                )
                .await;
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
                    Ok(Err(e)) => {
                        warn!(peer = %tcp_peer, protocol = protocol.name(), error = %e, "bad PROXY header; closing");
                        return;
                    }
                    Err(_) => {
                        warn!(peer = %tcp_peer, protocol = protocol.name(), "no PROXY header in time; closing");
                        return;
                    }
                }
            }
            // The per-address limit counts the real client, so it applies
            // after the PROXY header.
            let Some(_ip_guard) = PerIpGuard::enter(&per_ip, peer.ip(), max_per_ip) else {
                warn!(%peer, protocol = protocol.name(), "per-address connection limit reached; refusing");
                return;
            };
            let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
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
                    match Box::pin(services.tls.accept(conn)).await {
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
                handler(conn, info, services).await;
            }
            .instrument(span)
            .await
        });
    }
}
