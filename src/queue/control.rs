//! The operator's control channel to a running queue (`msgd queue ...`).
//!
//! The server owns the queue's schedule in memory, so a command from the
//! CLI must reach it. The channel is a folder, `<queue dir>/control/`:
//! - The running server holds an exclusive lock on `control/server.lock`;
//!   the CLI tries the same lock to learn whether a server is running.
//! - Server running: the CLI writes `control/<unique>.cmd` (one line,
//!   `VERB [ID]`, written to a temporary name and renamed, so the server
//!   never reads half a command) and waits for `<unique>.done`, which the
//!   server writes with the one-line result after applying the command.
//! - No server: the CLI edits the queue folder itself (delete the file,
//!   create or remove the `<id>.hold` marker); the next start reads it.
//!
//! Why files and not a socket: nothing to configure, works with the
//! folder permissions as the only access control, and a command given
//! while the server restarts is not lost (it waits in the folder).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fs2::FileExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{remove_files, valid_id, Queue};

/// How often the server looks for commands.
const POLL: Duration = Duration::from_millis(200);

/// A command the operator can give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Flush,
    Retry(String),
    Delete(String),
    Hold(String),
    Release(String),
}

impl Command {
    pub fn parse(line: &str) -> Option<Command> {
        let mut w = line.split_whitespace();
        let verb = w.next()?;
        let id = w.next().map(str::to_string);
        if w.next().is_some() {
            return None;
        }
        let with_id = |f: fn(String) -> Command| id.clone().filter(|i| valid_id(i)).map(f);
        match verb {
            "flush" if id.is_none() => Some(Command::Flush),
            "retry" => with_id(Command::Retry),
            "delete" => with_id(Command::Delete),
            "hold" => with_id(Command::Hold),
            "release" => with_id(Command::Release),
            _ => None,
        }
    }

    pub fn line(&self) -> String {
        match self {
            Command::Flush => "flush".into(),
            Command::Retry(i) => format!("retry {i}"),
            Command::Delete(i) => format!("delete {i}"),
            Command::Hold(i) => format!("hold {i}"),
            Command::Release(i) => format!("release {i}"),
        }
    }
}

fn control_dir(queue_dir: &Path) -> PathBuf {
    queue_dir.join("control")
}

fn lock_path(queue_dir: &Path) -> PathBuf {
    control_dir(queue_dir).join("server.lock")
}

/// Applies a command to the running queue; the one-line result.
pub fn apply(queue: &Queue, cmd: &Command) -> String {
    let found = |r: std::io::Result<bool>, what: &str, id: &str| match r {
        Ok(true) => format!("{id}: {what}"),
        Ok(false) => format!("{id}: no such message"),
        Err(e) => format!("{id}: failed: {e}"),
    };
    info!(command = %cmd.line(), "queue control command");
    match cmd {
        Command::Flush => {
            queue.flush();
            format!("flushed: {} messages due now", queue.len())
        }
        Command::Retry(id) => found(Ok(queue.retry(id)), "due now", id),
        Command::Delete(id) => found(queue.delete(id), "deleted", id),
        Command::Hold(id) => found(queue.hold(id), "held", id),
        Command::Release(id) => found(queue.release(id), "released", id),
    }
}

/// Takes the server lock of a queue folder; a second server on the same
/// folder is refused here. Hold the file for as long as the server runs.
pub fn lock(queue_dir: &Path) -> anyhow::Result<std::fs::File> {
    let dir = control_dir(queue_dir);
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(queue_dir))?;
    if lock.try_lock_exclusive().is_err() {
        anyhow::bail!(
            "queue folder {} is in use by another msgd process",
            queue_dir.display()
        );
    }
    Ok(lock)
}

/// Serves the control folder until shutdown, holding `lock` (from `lock`).
pub async fn serve(queue: Arc<Queue>, lock: std::fs::File, shutdown: CancellationToken) {
    let dir = control_dir(queue.dir());
    loop {
        let mut cmds: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "cmd"))
                    .collect()
            })
            .unwrap_or_default();
        cmds.sort();
        for path in cmds {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let result = match Command::parse(text.trim()) {
                Some(c) => apply(&queue, &c),
                None => "error: unknown command".to_string(),
            };
            let done = path.with_extension("done");
            if let Err(e) = std::fs::write(&done, format!("{result}\n")) {
                warn!(error = %e, "cannot answer a queue control command");
            }
            let _ = std::fs::remove_file(&path);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    drop(lock);
}

/// True when a server holds the queue (its lock is taken).
pub fn server_running(queue_dir: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .open(lock_path(queue_dir))
    else {
        return false;
    };
    match f.try_lock_exclusive() {
        Ok(()) => {
            let _ = FileExt::unlock(&f);
            false
        }
        Err(_) => true,
    }
}

/// The CLI side: gives the command to the running server and waits for
/// its answer, or applies it to the folder when no server runs.
pub fn send(queue_dir: &Path, cmd: &Command) -> anyhow::Result<String> {
    if !server_running(queue_dir) {
        return apply_offline(queue_dir, cmd);
    }
    let dir = control_dir(queue_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("{nanos:020}-{}", std::process::id());
    let tmp = dir.join(format!("{name}.tmp"));
    let cmd_path = dir.join(format!("{name}.cmd"));
    let done = dir.join(format!("{name}.done"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(cmd.line().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &cmd_path)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&done) {
            if text.ends_with('\n') {
                let _ = std::fs::remove_file(&done);
                return Ok(text.trim().to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "the running server did not answer within 10 s; the command stays in {}",
        cmd_path.display()
    )
}

/// No server runs: edit the folder directly.
fn apply_offline(queue_dir: &Path, cmd: &Command) -> anyhow::Result<String> {
    let exists = |id: &str| queue_dir.join(format!("{id}.q")).exists();
    Ok(match cmd {
        Command::Flush => "no server is running; every message is tried when it starts".into(),
        Command::Retry(id) if exists(id) => {
            format!("{id}: no server is running; it is tried when the server starts")
        }
        Command::Delete(id) if exists(id) => {
            remove_files(queue_dir, id)?;
            format!("{id}: deleted")
        }
        Command::Hold(id) if exists(id) => {
            std::fs::write(queue_dir.join(format!("{id}.hold")), b"")?;
            format!("{id}: held")
        }
        Command::Release(id) if exists(id) => {
            super::remove_if_present(&queue_dir.join(format!("{id}.hold")))?;
            format!("{id}: released")
        }
        Command::Retry(id) | Command::Delete(id) | Command::Hold(id) | Command::Release(id) => {
            format!("{id}: no such message")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_refuse_path_tricks() {
        assert_eq!(Command::parse("flush"), Some(Command::Flush));
        assert_eq!(
            Command::parse("hold ABC123"),
            Some(Command::Hold("ABC123".into()))
        );
        assert_eq!(Command::parse("hold ../etc"), None);
        assert_eq!(Command::parse("delete"), None);
        assert_eq!(Command::parse("flush X"), None);
        assert_eq!(Command::parse("explode X"), None);
        for c in [Command::Flush, Command::Release("A1".into())] {
            assert_eq!(Command::parse(&c.line()), Some(c));
        }
    }
}
