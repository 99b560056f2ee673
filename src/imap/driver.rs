//! The IMAP driver: the thin async loop around the session core
//! (`session`). It owns the connection and does every wait and every
//! byte of I/O: reads (with the deadline the core gives), writes the
//! core's output, runs the TLS handshake and wraps the stream for
//! COMPRESS when the core asks, and reports store signals and shutdown.
//!
//! Invariants:
//! - Output leaves in the order the core produced it: chunks handed over
//!   while a command runs, then the rest of `out`.
//! - When the client stops reading, the core's next hand-over fails (the
//!   channel is closed) and the command stops at its next flush point;
//!   nothing waits on a dead peer beyond `limits.write_timeout` (the
//!   connection's write deadline).
//! - A waiting connection costs its task (this loop, not the command
//!   handlers: `step` boxes them), the core and a 1 KiB read buffer.
//! - Reads are small while the client is quiet (an idle connection holds
//!   1 KiB, not 64) and grow while they come back full (APPEND literals).

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::net::{Conn, ConnInfo};
use crate::services::Services;

use super::session::{Input, Next, Session};

const READ_MIN: usize = 1024;
const READ_MAX: usize = 64 * 1024;

/// Serves one IMAP connection to its end.
pub async fn serve(conn: Conn, info: ConnInfo, services: Services) {
    let (mut core, rx) = Session::new(info, services.clone());
    let mut driver = Driver {
        conn,
        rx: Some(rx),
        read_size: READ_MIN,
    };
    let r = driver.run(&mut core, &services).await;
    match r {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            info!(error = %e, "closing: limits.write_timeout passed");
        }
        Err(e) => debug!(error = %e, "connection ended"),
        Ok(()) => {}
    }
    // TLS: send close_notify (RFC 8446 6.1) so the peer (an mmp, a
    // client) sees a clean end rather than a truncated stream.
    let _ = tokio::time::timeout(Duration::from_secs(5), driver.conn.shutdown()).await;
    core.log_closed();
}

struct Driver {
    conn: Conn,
    /// The core's output while a command runs; `None` once writing failed
    /// (the core's next hand-over then fails too).
    rx: Option<mpsc::Receiver<Vec<u8>>>,
    read_size: usize,
}

impl Driver {
    async fn run(&mut self, core: &mut Session, services: &Services) -> io::Result<()> {
        let mut next = core.start();
        loop {
            self.write(core.take_output()).await?;
            next = match next {
                Next::Close => return Ok(()),
                Next::StartTls => {
                    let (placeholder, _) = tokio::io::duplex(1);
                    let plain = std::mem::replace(&mut self.conn, Box::new(placeholder));
                    match services.tls.accept(plain).await {
                        Ok(tls) => self.conn = tls,
                        Err(e) => {
                            info!(error = %e, "STARTTLS handshake failed");
                            return Err(e);
                        }
                    }
                    core.tls_started();
                    self.step(Box::pin(core.input(Input::Data(&[])))).await?
                }
                Next::Compress => {
                    let (placeholder, _) = tokio::io::duplex(1);
                    let plain = std::mem::replace(&mut self.conn, Box::new(placeholder));
                    self.conn = Box::new(super::compress::Deflated::new(plain));
                    core.compression_started();
                    self.step(Box::pin(core.input(Input::Data(&[])))).await?
                }
                Next::Read => {
                    let wait = core.wait();
                    let mut buf = vec![0u8; self.read_size];
                    let shutdown = services.shutdown.clone();
                    let got = tokio::select! {
                        _ = wait.wake => Ok(None),
                        r = tokio::time::timeout_at(wait.until, self.conn.read(&mut buf)) => match r {
                            Err(_) => Err(Input::Timeout),
                            Ok(Ok(0)) => Err(Input::Eof),
                            Ok(Ok(n)) => Ok(Some(n)),
                            Ok(Err(e)) => return Err(e),
                        },
                        _ = shutdown.cancelled() => Err(Input::Shutdown),
                    };
                    let input = match got {
                        Ok(Some(n)) => {
                            self.read_size = if n == buf.len() {
                                (self.read_size * 2).min(READ_MAX)
                            } else {
                                READ_MIN
                            };
                            Input::Data(buf.get(..n).unwrap_or_default())
                        }
                        Ok(None) => Input::Wake,
                        Err(input) => input,
                    };
                    self.step(Box::pin(core.input(input))).await?
                }
            };
        }
    }

    /// Runs one step of the core, writing what it hands over meanwhile.
    /// The step comes boxed: a command's future (every handler's state)
    /// is large and exists only while it runs, so a waiting connection's
    /// task holds just this loop.
    async fn step(&mut self, step: impl Future<Output = Next>) -> io::Result<Next> {
        tokio::pin!(step);
        let mut failed = None;
        let next = loop {
            let chunk = async {
                match self.rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                next = &mut step => break next,
                Some(chunk) = chunk => {
                    if let Err(e) = self.write(chunk).await {
                        // The core's next hand-over fails: it stops.
                        self.rx = None;
                        failed = Some(e);
                    }
                }
            }
        };
        if let Some(e) = failed {
            return Err(e);
        }
        // A chunk handed over just before the step ended.
        let mut rest = Vec::new();
        if let Some(rx) = self.rx.as_mut() {
            while let Ok(chunk) = rx.try_recv() {
                rest.push(chunk);
            }
        }
        for chunk in rest {
            self.write(chunk).await?;
        }
        Ok(next)
    }

    async fn write(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.conn.write_all(&bytes).await?;
        self.conn.flush().await
    }
}
