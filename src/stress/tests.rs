//! The stress tester end to end: a clean run against msgd's own IMAP
//! server in process, and violations caught from a fake server that breaks
//! the rules on purpose.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{run, StressArgs};
use crate::config::Protocol;
use crate::directory::embedded;
use crate::net::ConnInfo;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: StressArgs,
}

fn args(port: u16, users: &str, extra: &[&str]) -> StressArgs {
    let port = port.to_string();
    let mut v = vec!["stress", "--port", &port, "--users", users];
    v.extend_from_slice(extra);
    Cmd::try_parse_from(v).expect("arguments").args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3501_msgd_imap_server_passes_a_short_stress_run() {
    let dir = tempfile::tempdir().unwrap();
    embedded::edit(&dir.path().join("directory.json"), |d| {
        embedded::add_user(d, "s1@example.com", "pw-s1", None, true)?;
        embedded::add_user(d, "s2@example.com", "pw-s2", None, true)
    })
    .unwrap();
    let services = crate::services::test_services(dir.path(), |c| {
        c.server.domain = "example.com".into();
        c.store.dbcachesize = 4 << 20;
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((sock, peer)) = listener.accept().await {
            let mut info = ConnInfo::for_test(Protocol::Imap);
            info.peer = peer;
            tokio::spawn(crate::imap::serve(Box::new(sock), info, services.clone()));
        }
    });
    let a = args(
        port,
        "s1@example.com:pw-s1,s2@example.com:pw-s2",
        &["--clients", "4", "--duration", "3", "--seed", "5"],
    );
    assert_eq!(run(a).await, 0, "violations against msgd's IMAP server");
    server.abort();
}

/// A scripted IMAP server: answers just enough for the tester's setup and
/// a client's first SELECT, misbehaving as `mode` says.
async fn fake_server(mode: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let selects = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let selects = selects.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w
                    .write_all(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE IDLE] fake\r\n")
                    .await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut parts = line.splitn(3, ' ');
                    let tag = parts.next().unwrap_or("*").to_string();
                    let verb = parts.next().unwrap_or("").to_ascii_uppercase();
                    let out = match verb.as_str() {
                        "SELECT" => {
                            let n = selects.fetch_add(1, Ordering::SeqCst);
                            // Setup selects 3 mailboxes; the client's is the 4th.
                            let (exists, validity) = match mode {
                                "uidvalidity" => (0, 100 + n),
                                _ => (if n >= 3 { 2 } else { 0 }, 100),
                            };
                            format!(
                                "* {exists} EXISTS\r\n* OK [UIDVALIDITY {validity}] v\r\n* OK [UIDNEXT 10] n\r\n{tag} OK [READ-WRITE] done\r\n"
                            )
                        }
                        // The client learns the UIDs of its 2 messages with a
                        // FETCH by sequence number: no EXPUNGE allowed then.
                        "FETCH" => format!(
                            "* 1 FETCH (UID 3 FLAGS ())\r\n* 1 EXPUNGE\r\n{tag} OK done\r\n"
                        ),
                        "LOGOUT" => format!("* BYE bye\r\n{tag} OK done\r\n"),
                        _ => format!("{tag} OK done\r\n"),
                    };
                    if w.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn rfc3501_2_3_1_1_changed_uidvalidity_is_a_violation() {
    let port = fake_server("uidvalidity").await;
    let a = args(port, "u@x:pw", &["--clients", "1", "--duration", "2"]);
    assert_eq!(run(a).await, super::EXIT_VIOLATION);
}

#[tokio::test]
async fn rfc3501_7_4_1_expunge_during_fetch_is_a_violation() {
    let port = fake_server("expunge").await;
    let a = args(port, "u@x:pw", &["--clients", "1", "--duration", "2"]);
    assert_eq!(run(a).await, super::EXIT_VIOLATION);
}

#[tokio::test]
async fn non_loopback_target_is_refused() {
    let a = args(143, "u@x:pw", &["--host", "192.0.2.7", "--duration", "1"]);
    assert_eq!(run(a).await, crate::cli::EXIT_USAGE);
}
