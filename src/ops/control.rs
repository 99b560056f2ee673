//! The store's admin socket: how an operator command reaches a running
//! store role, and the CLI side that falls back to opening the store
//! itself when no server runs.
//!
//! Wire format (newline-delimited JSON on a Unix stream socket):
//! - the client sends one [`Request`] line (at most `MAX_REQUEST` bytes,
//!   within `REQUEST_DEADLINE`);
//! - the server answers with any number of `{"progress": Snapshot}` lines
//!   (at most two a second) and then exactly one `{"result": value}` or
//!   `{"error": "message"}` line, and closes.
//!
//! The socket is `<data_dir>/admin.sock`, created mode 0600 and replaced
//! at start (a stale one from a killed server is removed). A client that
//! goes away does not stop the command: it runs to its end and logs its
//! result, so a backup is never left half-written because a terminal
//! closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::progress::{Display, Snapshot};
use super::{dispatch, Ctx, Progress, Request};
use crate::config::Config;

const MAX_REQUEST: usize = 1 << 20;
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Progress(Snapshot),
    Result(serde_json::Value),
    Error(String),
}

pub fn socket_path(config: &Config) -> PathBuf {
    config.server.data_dir.join("admin.sock")
}

/// Binds the admin socket (store role); a stale socket is replaced.
pub fn bind(config: &Config) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(config);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let l =
        UnixListener::bind(&path).with_context(|| format!("admin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves operator requests until shutdown. Each connection runs its
/// command in its own task.
pub async fn serve(listener: UnixListener, ctx: Ctx, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "admin socket accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, ctx).await {
                warn!(error = %format!("{e:#}"), "admin socket");
            }
        });
    }
}

async fn connection(stream: UnixStream, ctx: Ctx) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r.take(MAX_REQUEST as u64));
    let mut line = String::new();
    tokio::time::timeout(REQUEST_DEADLINE, r.read_line(&mut line))
        .await
        .context("no request within the deadline")??;
    let req: Request = match serde_json::from_str(line.trim_end()) {
        Ok(r) => r,
        Err(e) => {
            send(&mut w, &Reply::Error(format!("bad request: {e}"))).await?;
            return Ok(());
        }
    };
    let name = req.name();
    info!(command = name, "admin command started");
    let progress = Progress::new();
    let work = {
        let (ctx, progress) = (ctx.clone(), progress.clone());
        tokio::spawn(async move { dispatch(&ctx, req, &progress).await })
    };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut last = Snapshot::default();
    let mut client_gone = false;
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                client_gone = client_gone
                    || send_updates(&mut w, &progress, &mut last).await.is_err();
            }
        }
    };
    // The final counts, also of a command shorter than one tick.
    client_gone = client_gone || send_updates(&mut w, &progress, &mut last).await.is_err();
    let reply = match outcome {
        Ok(Ok(v)) => {
            info!(command = name, "admin command done");
            Reply::Result(v)
        }
        Ok(Err(e)) => {
            warn!(command = name, error = %format!("{e:#}"), "admin command failed");
            Reply::Error(format!("{e:#}"))
        }
        Err(e) => Reply::Error(format!("the command failed: {e}")),
    };
    if !client_gone {
        send(&mut w, &reply).await?;
    }
    Ok(())
}

/// Sends the snapshots that changed since `last`.
async fn send_updates(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    progress: &Progress,
    last: &mut Snapshot,
) -> anyhow::Result<()> {
    for s in progress.updates() {
        if &s != last && !s.stage.is_empty() {
            send(w, &Reply::Progress(s.clone())).await?;
            *last = s;
        }
    }
    Ok(())
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> anyhow::Result<()> {
    let mut b = serde_json::to_vec(r)?;
    b.push(b'\n');
    tokio::time::timeout(Duration::from_secs(30), w.write_all(&b))
        .await
        .context("write deadline")??;
    Ok(())
}

/// Runs a request from the CLI: through a running server's admin socket,
/// or, with none running, on the store opened here. Progress is shown on
/// standard error.
pub fn call(config: &Config, req: Request) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(call_async(config, req))
}

async fn call_async(config: &Config, req: Request) -> anyhow::Result<serde_json::Value> {
    let path = socket_path(config);
    let mut display = Display::new(req.name());
    match UnixStream::connect(&path).await {
        Ok(s) => {
            let r = remote(s, req, &mut display).await;
            display.finish();
            r
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let r = local(config, req, &mut display).await;
            display.finish();
            r
        }
        Err(e) => Err(e).with_context(|| format!("admin socket {}", path.display())),
    }
}

async fn remote(
    s: UnixStream,
    req: Request,
    display: &mut Display,
) -> anyhow::Result<serde_json::Value> {
    let (r, mut w) = s.into_split();
    let mut line = serde_json::to_vec(&req)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut lines = BufReader::new(r).lines();
    while let Some(l) = lines.next_line().await? {
        match serde_json::from_str::<Reply>(&l).context("reply from the server")? {
            Reply::Progress(s) => display.show(&s),
            Reply::Result(v) => return Ok(v),
            Reply::Error(e) => anyhow::bail!("{e}"),
        }
    }
    anyhow::bail!("the server closed the admin socket without an answer")
}

/// No server: open the store here (the mboxlist's lock refuses this while
/// a server holds it, e.g. one whose admin socket was removed).
async fn local(
    config: &Config,
    req: Request,
    display: &mut Display,
) -> anyhow::Result<serde_json::Value> {
    let store = crate::store::Store::open(config).with_context(|| {
        format!(
            "no server answers on {} and the store cannot be opened here",
            socket_path(config).display()
        )
    })?;
    let ctx = Ctx {
        config: Arc::new(config.clone()),
        store,
        directory: crate::directory::Directory::open(config)?,
        online: false,
        history: None,
    };
    let progress = Progress::new();
    let work = {
        let progress = progress.clone();
        tokio::spawn(async move { dispatch(&ctx, req, &progress).await })
    };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            r = &mut work => {
                for s in progress.updates() {
                    display.show(&s);
                }
                return r?;
            }
            _ = tick.tick() => {
                for s in progress.updates() {
                    display.show(&s);
                }
            }
        }
    }
}

/// True when `path` is an admin socket a server answers on.
pub fn server_running(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}
