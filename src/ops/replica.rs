//! The store-to-store transport of `msgd user move`: routes on the
//! target store's HTTP(S) listener, and the source store's client.
//!
//! - `POST /msgd/v1/replica/{user}`: a body in the backup stream format
//!   (`backup.rs`, one user, any number of mailboxes and messages, end
//!   record) is checked (sizes, sha256, order) and put in with
//!   `Store::restore_mailbox`: same UIDs, same UIDVALIDITY, never
//!   overwriting; re-sending is harmless. Answer: the counts (JSON).
//! - `GET /msgd/v1/replica/{user}`: what the target holds for the user
//!   ([`Summary`]: per mailbox its UIDVALIDITY and every message's UID,
//!   size and flags), for the source's verification.
//! - `POST /msgd/v1/replica/{user}/sync`: the source's [`Summary`]; the
//!   target's flags are set to the source's and messages the source no
//!   longer has are expunged (changes made on the source during the copy).
//!
//! Authentication: a bearer token (`crate::http::token`) issued for
//! `replica/<user>` with the key every store and mem share
//! (`http.token_key_file`), accepted only from `http.token_networks`
//! (empty: loopback). A webmail token (issued for a plain user name) is
//! never one for this route. Bodies are read up to a bound (one chunk of
//! at most `CHUNK_BYTES` plus the largest message; a summary up to
//! `MAX_SUMMARY`) within `http.request_timeout`; the source sends in
//! chunks, so memory stays bounded on both sides.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::backup::{self, Item, MailboxRecord, MessageRecord};
use crate::config::Config;
use crate::net::ConnInfo;
use crate::services::Services;
use crate::store::{FlagOp, Flags, Store, Uid};

/// Message bytes per chunk the source sends (one message may exceed it).
pub const CHUNK_BYTES: usize = 8 << 20;
/// Most bytes of a summary body.
pub const MAX_SUMMARY: usize = 256 << 20;

/// What a store holds for a user: mailbox name -> (UIDVALIDITY, UID ->
/// (size, sorted flag names)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub mailboxes: BTreeMap<String, BoxSummary>,
    pub subscriptions: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxSummary {
    pub uidvalidity: u32,
    /// UIDNEXT: UIDs from here on were never the source's (on the target
    /// they are deliveries made there after the switch).
    #[serde(default)]
    pub uidnext: Uid,
    pub messages: BTreeMap<Uid, (u64, Vec<String>)>,
}

impl Summary {
    pub fn messages(&self) -> u64 {
        self.mailboxes
            .values()
            .map(|b| b.messages.len() as u64)
            .sum()
    }
}

fn sorted_names(f: &Flags) -> Vec<String> {
    let mut v: Vec<String> = f.names().iter().map(|n| n.to_ascii_lowercase()).collect();
    v.sort();
    v
}

/// The summary of `user` in `store` (one read transaction).
pub async fn summary(store: &Store, user: &str) -> anyhow::Result<Summary> {
    let mut s = Summary::default();
    let Some(idx) = store.user_index(user).await? else {
        return Ok(s);
    };
    for mb in &idx.mailboxes {
        let b = s.mailboxes.entry(mb.info.name.clone()).or_default();
        b.uidvalidity = mb.info.uidvalidity;
        b.uidnext = mb.info.uidnext;
        for m in &mb.messages {
            b.messages.insert(m.uid, (m.size, sorted_names(&m.flags)));
        }
    }
    s.subscriptions = idx.subscriptions.clone();
    Ok(s)
}

pub fn routes() -> Router<Services> {
    Router::new()
        .route("/msgd/v1/replica/{user}", post(receive).get(report))
        .route("/msgd/v1/replica/{user}/sync", post(sync))
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        msg.to_string(),
    )
        .into_response()
}

/// Checks the caller and returns the store, or the refusal.
#[allow(clippy::result_large_err)]
fn authorize(services: &Services, req: &Request, user: &str) -> Result<Store, Response> {
    let Some(store) = services.store.clone() else {
        return Err(refuse(StatusCode::NOT_FOUND, "no store here"));
    };
    let Some(info) = req.extensions().get::<ConnInfo>() else {
        return Err(refuse(StatusCode::FORBIDDEN, "no connection info"));
    };
    if !crate::jmap::auth::from_trusted(info, &services.config.http.token_networks) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "replica requests are accepted only from http.token_networks",
        ));
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(key) = services.web.jmap.token_key(&services.config) else {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "no token key"));
    };
    if key.verify(token).map(|v| v.user).as_deref() != Some(format!("replica/{user}").as_str()) {
        return Err(refuse(StatusCode::UNAUTHORIZED, "bad or expired token"));
    }
    store.moving().incoming(user);
    // Move traffic: passes a hold of this user here (moved back within
    // `moving::HOLD`).
    Ok(store.for_move())
}

async fn body(services: &Services, req: Request, limit: usize) -> Result<Vec<u8>, Response> {
    let deadline = Duration::from_secs(services.config.http.request_timeout.max(1));
    match tokio::time::timeout(deadline, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(Ok(b)) => Ok(b.to_vec()),
        Ok(Err(_)) => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or cut",
        )),
        Err(_) => Err(refuse(StatusCode::REQUEST_TIMEOUT, "body too slow")),
    }
}

/// A request body that is no valid backup stream for the user: the
/// caller's fault (400), not the store's (500).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Malformed(anyhow::Error);

fn malformed(e: anyhow::Error) -> anyhow::Error {
    Malformed(e).into()
}

fn internal(e: anyhow::Error) -> Response {
    let bad = e.downcast_ref::<Malformed>().is_some()
        || matches!(
            e.downcast_ref::<crate::store::StoreError>(),
            Some(crate::store::StoreError::BadName)
        );
    if bad {
        tracing::info!(error = %format!("{e:#}"), "malformed replica request refused");
        return refuse(StatusCode::BAD_REQUEST, &format!("{e:#}"));
    }
    tracing::warn!(error = %format!("{e:#}"), "replica request failed");
    refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"))
}

async fn receive(
    State(services): State<Services>,
    Path(user): Path<String>,
    req: Request,
) -> Response {
    let store = match authorize(&services, &req, &user) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let max = services.config.smtp.max_message_size;
    let data = match body(&services, req, CHUNK_BYTES + max as usize + (1 << 20)).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    match apply_stream(&services, &store, &user, &data, max).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => internal(e),
    }
}

async fn apply_stream(
    services: &Services,
    store: &Store,
    user: &str,
    data: &[u8],
    max: u64,
) -> anyhow::Result<serde_json::Value> {
    let partition = match services.directory.lookup(user).await {
        Ok(Some(crate::directory::Recipient::User(a))) => a.partition,
        _ => None,
    };
    // Checked before anything is created for the user.
    let mut r = backup::StreamReader::new(std::io::Cursor::new(data), max).map_err(malformed)?;
    let mut first = Some(r.next_item().map_err(malformed)?);
    store.ensure_user(user, partition.as_deref()).await?;
    let mut current: Option<MailboxRecord> = None;
    let mut pending: Vec<(MessageRecord, Vec<u8>)> = Vec::new();
    let mut total = backup::Applied::default();
    let mut subscriptions = Vec::new();
    let mut extras = None;
    loop {
        let item = match first.take() {
            Some(item) => item,
            None => r.next_item().map_err(malformed)?,
        };
        let flush = matches!(
            item,
            None | Some(Item::Mailbox(_)) | Some(Item::Extras(_)) | Some(Item::End { .. })
        );
        if flush {
            if let Some(mb) = current.take() {
                // Also for no messages: an empty mailbox is created (or a
                // never used one adopts) with the recorded UIDVALIDITY.
                let a =
                    backup::apply_chunk(store, user, &mb.name, &mb, std::mem::take(&mut pending))
                        .await?;
                total.restored += a.restored;
                total.renumbered += a.renumbered;
                total.present += a.present;
                total.bytes += a.bytes;
            }
        }
        match item {
            None | Some(Item::End { .. }) => break,
            Some(Item::User {
                user: u,
                subscriptions: s,
            }) => {
                if u != user {
                    return Err(malformed(anyhow::anyhow!("stream for {u} sent to {user}")));
                }
                subscriptions = s;
            }
            Some(Item::Mailbox(m)) => current = Some(m),
            Some(Item::Message(m, d)) => pending.push((m, d)),
            Some(Item::Extras(x)) => {
                super::backup_extra::check(&x).map_err(malformed)?;
                extras = Some(x);
            }
        }
    }
    let have: std::collections::HashSet<String> =
        store.subscriptions(user).await?.into_iter().collect();
    for s in subscriptions {
        if !have.contains(&s) && crate::store::normalize_name(&s).is_ok() {
            store.subscribe(user, &s, true).await?;
        }
    }
    // ACLs, sortOrders, METADATA (JMAP settings), contacts: the source's
    // state wins (a move sends them once, under the hold).
    if let Some(x) = extras {
        let a = super::backup_extra::apply(
            store,
            &services.directory,
            &services.config,
            user,
            &backup::Target::default(),
            &x,
            super::backup_extra::Mode::Mirror,
        )
        .await?;
        let mut v = serde_json::to_value(total)?;
        v["extras"] = serde_json::to_value(a)?;
        return Ok(v);
    }
    Ok(serde_json::to_value(total)?)
}

async fn report(
    State(services): State<Services>,
    Path(user): Path<String>,
    req: Request,
) -> Response {
    let store = match authorize(&services, &req, &user) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match summary(&store, &user).await {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => internal(e),
    }
}

async fn sync(
    State(services): State<Services>,
    Path(user): Path<String>,
    req: Request,
) -> Response {
    let store = match authorize(&services, &req, &user) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let data = match body(&services, req, MAX_SUMMARY).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let want: Summary = match serde_json::from_slice(&data) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("bad summary: {e}")),
    };
    match apply_sync(&store, &user, &want).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => internal(e),
    }
}

/// Brings flags and expunges of the target in line with the source.
async fn apply_sync(
    store: &Store,
    user: &str,
    want: &Summary,
) -> anyhow::Result<serde_json::Value> {
    let (mut reflagged, mut expunged) = (0u64, 0u64);
    for (name, wb) in &want.mailboxes {
        let Ok(snap) = store.snapshot(user, name).await else {
            continue;
        };
        if snap.info.uidvalidity != wb.uidvalidity {
            continue;
        }
        let id = snap.info.id;
        let mut by_flags: HashMap<Vec<String>, Vec<Uid>> = HashMap::new();
        let mut gone = Vec::new();
        for m in &snap.messages {
            match wb.messages.get(&m.uid) {
                // Only what the source once had: a message delivered here
                // after the switch (UID at or above the source's UIDNEXT)
                // is not the source's to expunge.
                None if m.uid < wb.uidnext => gone.push(m.uid),
                None => {}
                Some((_, names)) if *names != sorted_names(&m.flags) => {
                    by_flags.entry(names.clone()).or_default().push(m.uid)
                }
                Some(_) => {}
            }
        }
        for (names, uids) in by_flags {
            reflagged += uids.len() as u64;
            store
                .store_flags(id, uids, FlagOp::Replace, Flags::from_names(&names), None)
                .await?;
        }
        if !gone.is_empty() {
            let del = Flags {
                bits: Flags::DELETED,
                keywords: vec![],
            };
            store
                .store_flags(id, gone.clone(), FlagOp::Add, del, None)
                .await?;
            expunged += store.expunge(id, Some(gone)).await?.len() as u64;
        }
    }
    Ok(serde_json::json!({"reflagged": reflagged, "expunged": expunged}))
}

// ------------------------------------------------------------------------
// the client (source store)

/// Talks to the target store's replica routes.
pub struct Client {
    base: String,
    token: String,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
}

impl Client {
    /// For `user` on the store named `to` (its mailHost), found like the
    /// mem finds stores: `mem.stores`, else `to:mem.store_port`, with
    /// `mem.store_tls`.
    pub fn new(config: &Config, user: &str, to: &str) -> anyhow::Result<Client> {
        let base = crate::mem::proxy::store_base(config, to);
        let key_path = config.data_path(&config.http.token_key_file, "http-token.key");
        let key = crate::http::keys::load_or_create(&key_path)
            .with_context(|| format!("the token key {}", key_path.display()))?;
        let key = crate::http::token::TokenKey::new(&key);
        // Long enough for the whole move; a fresh one per client.
        let token = key.issue(
            &format!("replica/{user}"),
            "replica",
            Duration::from_secs(3600),
        );
        let m = &config.mem;
        let tls = if m.store_tls {
            let mut c = crate::tls::store_client_config(
                config,
                m.store_tls_insecure,
                &m.store_ca_file,
                "mem.store_ca_file is empty: give the stores' CA (or set mem.store_tls = false)",
            )?;
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(c)))
        } else {
            None
        };
        Ok(Client {
            base,
            token,
            tls,
            timeout: Duration::from_secs(m.store_timeout.max(1) * 10),
        })
    }

    pub fn target(&self) -> &str {
        &self.base
    }

    /// One request; the answer's body (at most `MAX_SUMMARY` bytes) when
    /// the status is 2xx, else an error with the target's message.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        ctype: &str,
    ) -> anyhow::Result<Vec<u8>> {
        tokio::time::timeout(self.timeout, self.request_inner(method, path, body, ctype))
            .await
            .with_context(|| format!("{} {path}: no answer within {:?}", self.base, self.timeout))?
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        ctype: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let uri: hyper::Uri = format!("{}{path}", self.base).parse()?;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("connecting to {}", self.base))?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(
                header::HOST,
                uri.authority().map(|a| a.as_str()).unwrap_or(""),
            )
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, ctype)
            .body(axum::body::Body::from(body))?;
        let resp = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())?;
                let s = tls.connect(name, tcp).await?;
                send(hyper_util::rt::TokioIo::new(s), req).await?
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await?,
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), MAX_SUMMARY)
            .await
            .context("reading the answer")?;
        if !status.is_success() {
            bail!(
                "{} {path}: {status}: {}",
                self.base,
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            );
        }
        Ok(bytes.to_vec())
    }
}

async fn send<T>(
    io: T,
    req: hyper::Request<axum::body::Body>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        let mut c = Config::default();
        c.server.data_dir = dir.to_path_buf();
        c.store.min_free_disk = 0;
        c.store.partition.insert(
            "primary".into(),
            crate::config::PartitionConfig {
                path: "partition/primary".into(),
            },
        );
        Store::open(&c).unwrap()
    }

    #[tokio::test]
    async fn sync_sets_flags_and_expunges_only_what_the_source_once_had() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let u = "target@example.test";
        for i in 0..3 {
            let m = crate::store::NewMessage {
                data: std::sync::Arc::new(format!("Subject: {i}\r\n\r\nx\r\n").into_bytes()),
                flags: Flags::default(),
                internal_date: None,
            };
            s.append(u, "INBOX", m, Default::default()).await.unwrap();
        }
        let mut want = summary(&s, u).await.unwrap();
        let inbox = want.mailboxes.get_mut("INBOX").unwrap();
        // the source had UIDs 1 and 2 (2 expunged since), flagged 1 \Seen;
        // UID 3 was delivered here after the switch
        inbox.uidnext = 3;
        inbox.messages.retain(|u, _| *u == 1);
        inbox.messages.get_mut(&1).unwrap().1 = vec!["\\seen".into()];
        let r = apply_sync(&s, u, &want).await.unwrap();
        assert_eq!(r["expunged"], 1);
        assert_eq!(r["reflagged"], 1);
        let snap = s.snapshot(u, "INBOX").await.unwrap();
        let uids: Vec<Uid> = snap.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![1, 3]);
        assert!(snap.messages[0].flags.has(Flags::SEEN));
    }

    #[test]
    fn summaries_compare_flags_case_and_order_insensitively() {
        let a = sorted_names(&Flags::from_names(&["\\Seen", "$Junk"]));
        let b = sorted_names(&Flags::from_names(&["$junk", "\\SEEN"]));
        assert_eq!(a, b);
    }
}
