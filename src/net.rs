//! Listeners and connections shared by every protocol: accept loop with
//! connection limits (overall and per client address), one tracing span per
//! connection, implicit TLS, and the boxed stream type sessions run on (so a
//! session can upgrade to TLS in place and tests can drive it in memory).

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
    pub peer: SocketAddr,
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

    /// A ConnInfo for tests driving a session over an in-memory stream.
    pub fn for_test(protocol: Protocol) -> ConnInfo {
        ConnInfo {
            session_id: 1,
            peer: "127.0.0.1:50000".parse().unwrap(),
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
/// connection under the limits. Implicit-TLS listeners hand the handler a
/// stream that is already TLS. Returns when shutdown is signalled; the
/// caller waits on `tracker` for sessions to drain.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    protocol: Protocol,
    tls_mode: TlsMode,
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
        let (tcp, peer) = match accepted {
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
            warn!(%peer, protocol = protocol.name(), "connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        let ip_guard = {
            let mut t = per_ip.0.lock().unwrap_or_else(|e| e.into_inner());
            let n = t.entry(peer.ip()).or_insert(0);
            if *n >= limits.max_connections_per_ip {
                warn!(%peer, protocol = protocol.name(), "per-address connection limit reached; refusing");
                drop(tcp);
                continue;
            }
            *n += 1;
            PerIpGuard {
                table: per_ip.clone(),
                ip: peer.ip(),
            }
        };
        let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let info = ConnInfo {
            session_id,
            peer,
            local: tcp.local_addr().ok().or(local).unwrap_or(peer),
            protocol,
            tls_mode,
            tls_active: false,
        };
        let services = services.clone();
        let handler = handler.clone();
        let span = tracing::info_span!("session", id = session_id, proto = protocol.name(), %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                let _ip_guard = ip_guard;
                let mut info = info;
                let conn: Conn = if tls_mode == TlsMode::Implicit {
                    match services.tls.accept(Box::new(tcp)).await {
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
                    Box::new(tcp)
                };
                handler(conn, info, services).await;
            }
            .instrument(span),
        );
    }
}
