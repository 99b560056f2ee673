//! Unix-domain socket listeners (LMTP from MTAs on the same machine, the
//! way Postfix's `lmtp:unix:` transport delivers). The peer is local, so it
//! is treated like loopback: no TLS, no per-address limit; its connections
//! count in the process's total and its writes have the same deadline.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use crate::config::{Protocol, TlsMode};
use crate::net::Accepting;
use crate::net::{Conn, ConnInfo};

/// Binds a unix socket, replacing a stale one left by a previous run, and
/// makes it reachable by local MTAs (mode 0666: access is controlled by the
/// folder it lives in).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Accepts on a unix socket until shutdown; see `net::serve`.
pub async fn serve<S, F, Fut>(
    listener: UnixListener,
    protocol: Protocol,
    services: S,
    tracker: TaskTracker,
    handler: F,
) where
    S: Accepting,
    F: Fn(Conn, ConnInfo, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let conns = services.conns().clone();
    let start_limits = std::sync::Arc::new(services.limits().clone());
    loop {
        let accepted = tokio::select! {
            _ = services.shutdown().cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "accept failed on unix socket");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // The limits of the latest reload apply from the next connection.
        let limits = conns.limits_or(&start_limits);
        let write_timeout = std::time::Duration::from_secs(limits.write_timeout.max(1));
        let Some(permit) = conns.enter(limits.max_connections) else {
            let local: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
            conns.refusals.refused(
                "process connection limit (limits.max_connections)",
                local,
                protocol,
            );
            continue;
        };
        let session_id = conns.next_session_id();
        let mut info = ConnInfo::for_test(protocol);
        info.session_id = session_id;
        info.tls_mode = TlsMode::None;
        let services = services.clone();
        let handler = handler.clone();
        let span = tracing::info_span!(
            "session",
            id = session_id,
            proto = protocol.name(),
            peer = "unix"
        );
        tracker.spawn(
            async move {
                let _permit = permit;
                let conn = crate::net::WriteDeadline::new(stream, write_timeout);
                let _metrics = crate::metrics::session(protocol.name());
                handler(Box::new(conn), info, services).await;
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn lmtp_over_a_unix_socket_reaches_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::test_services(dir.path(), |_| {});
        let path = dir.path().join("run/lmtp.sock");
        let l = super::bind(&path).unwrap();
        // A stale socket file from a previous run is replaced.
        drop(l);
        let l = super::bind(&path).unwrap();
        let tracker = tokio_util::task::TaskTracker::new();
        tokio::spawn(super::serve(
            l,
            crate::config::Protocol::Lmtp,
            services.clone(),
            tracker,
            crate::smtp::serve,
        ));
        let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"220 "),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert!(String::from_utf8_lossy(&buf[..n]).contains("LMTP"));
        s.write_all(b"QUIT\r\n").await.unwrap();
        services.shutdown.cancel();
    }
}
