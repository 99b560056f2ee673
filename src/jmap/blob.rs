//! Blobs (RFC 8620 6): `POST /jmap/upload/{accountId}`,
//! `GET /jmap/download/{accountId}/{blobId}/{name}?accept=`, and `read`,
//! the bytes of a blob for methods (Email/import, EmailSubmission,
//! Email/parse).
//!
//! - Uploads are streamed to `<data_dir>/jmap-uploads/<user hash>/` (a
//!   temporary file, fsynced, renamed into place): at most
//!   `http.max_size_upload` bytes each, `http.max_concurrent_upload` at
//!   once per user, `http.upload_quota` bytes kept per user; they expire
//!   `http.upload_ttl` seconds after upload (removed at the user's next
//!   upload, never served after). Each body frame must arrive within
//!   `http.request_timeout`.
//! - A message's blob is its raw bytes; a part's (`ids::Blob::Part`, IMAP
//!   section numbers) is the part decoded (transfer encoding removed, as
//!   IMAP BINARY gives it).
//! - Downloads are served as attachments, with `X-Content-Type-Options:
//!   nosniff` and a sandbox Content-Security-Policy, so no message is ever
//!   rendered as a page of this origin (the webmail's).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper::body::{Body as _, Frame};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::error::Problem;
use super::ids::{self, Blob};
use super::{auth, json_response, Ctx, MethodError};
use crate::net::ConnInfo;
use crate::services::Services;

/// A response body fed by a channel (downloads of files, event streams):
/// memory per stream is the channel's few chunks.
pub(crate) struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "about:blank", "no such blob").into_response()
}

/// The folder of `user`'s uploads (named by a hash: no user text in paths).
fn user_dir(services: &Services, user: &str) -> PathBuf {
    let d = ring::digest::digest(&ring::digest::SHA256, user.as_bytes());
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    services.config.data_path("", "jmap-uploads").join(hex)
}

fn expired(meta: &std::fs::Metadata, ttl: u64) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age > Duration::from_secs(ttl))
}

/// Removes expired uploads and leftovers; the bytes still kept.
fn sweep(dir: &Path, ttl: u64) -> u64 {
    let mut kept = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let name = e.file_name();
            let tmp = name.to_string_lossy().starts_with('.');
            if expired(&meta, ttl) || (tmp && expired(&meta, 3600)) {
                let _ = std::fs::remove_file(e.path());
            } else {
                kept += meta.len();
            }
        }
    }
    kept
}

/// Removes expired uploads of every user, hourly, until shutdown (a
/// user's own are also swept at each of their uploads).
pub async fn sweeper(services: Services) {
    let root = services.config.data_path("", "jmap-uploads");
    let ttl = services.config.http.upload_ttl;
    loop {
        let r = root.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(rd) = std::fs::read_dir(&r) {
                for e in rd.flatten() {
                    let p = e.path();
                    if sweep(&p, ttl) == 0 {
                        // Empty folders of users who have no uploads left.
                        let _ = std::fs::remove_dir(&p);
                    }
                }
            }
        })
        .await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = services.shutdown.cancelled() => return,
        }
    }
}

fn upload_path(services: &Services, user: &str, r: &[u8; 16]) -> PathBuf {
    user_dir(services, user).join(ids::blob_id(&Blob::Upload(*r)))
}

pub async fn upload(
    State(services): State<Services>,
    Extension(info): Extension<ConnInfo>,
    UrlPath(account): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = match auth::authenticate(&services, &info, &headers, &method).await {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    if account != ids::account_id(&user) {
        return Problem::new(StatusCode::NOT_FOUND, "about:blank", "no such account")
            .into_response();
    }
    let cfg = &services.config.http;
    let _slot = match services.web.jmap.uploads.enter_or_refuse(
        &user,
        cfg.max_concurrent_upload,
        "maxConcurrentUpload",
        "too many uploads in progress for this account",
    ) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let too_large = || {
        Problem::limit(
            StatusCode::PAYLOAD_TOO_LARGE,
            "maxSizeUpload",
            format!("uploads are limited to {} bytes", cfg.max_size_upload),
        )
        .into_response()
    };
    let claimed = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if claimed.is_some_and(|n| n > cfg.max_size_upload) {
        return too_large();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.len() <= 200 && t.is_ascii())
        .unwrap_or("application/octet-stream")
        .to_string();
    let dir = user_dir(&services, &user);
    let ttl = cfg.upload_ttl;
    let d = dir.clone();
    let kept = match tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&d)?;
        Ok::<_, std::io::Error>(sweep(&d, ttl))
    })
    .await
    {
        Ok(Ok(k)) => k,
        _ => return server_error("cannot prepare the upload folder"),
    };
    let room = cfg.upload_quota.saturating_sub(kept);
    let over_quota = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "urn:ietf:params:jmap:error:limit",
            "upload space of this account is full; uploads expire after a day",
        )
        .into_response()
    };
    if claimed.is_some_and(|n| n > room) {
        return over_quota();
    }
    let max = cfg.max_size_upload.min(room);
    let r: [u8; 16] = rand::random();
    let tmp = dir.join(format!(".{}", ids::blob_id(&Blob::Upload(r))));
    let fin = upload_path(&services, &user, &r);
    // The sweeper may have removed the (empty) folder meanwhile: once more.
    let created = match tokio::fs::File::create(&tmp).await {
        Ok(f) => Ok(f),
        Err(_) => {
            let _ = tokio::fs::create_dir_all(&dir).await;
            tokio::fs::File::create(&tmp).await
        }
    };
    let Ok(mut file) = created else {
        return server_error("cannot create the upload file");
    };
    let frame_timeout = Duration::from_secs(cfg.request_timeout.max(1));
    let mut body = body;
    let mut size: u64 = 0;
    let outcome: Result<(), Response> = async {
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
            let frame = match tokio::time::timeout(frame_timeout, next).await {
                Err(_) => {
                    return Err(Problem::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "about:blank",
                        "the upload stalled",
                    )
                    .into_response())
                }
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    let timeout = crate::http::deadline::is_body_timeout(&e);
                    return Err(Problem::new(
                        if timeout {
                            StatusCode::REQUEST_TIMEOUT
                        } else {
                            StatusCode::BAD_REQUEST
                        },
                        "about:blank",
                        if timeout {
                            "the upload did not arrive in time"
                        } else {
                            "upload interrupted"
                        },
                    )
                    .into_response());
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                size += data.len() as u64;
                if size > max {
                    return Err(if size > cfg.max_size_upload {
                        too_large()
                    } else {
                        over_quota()
                    });
                }
                if file.write_all(&data).await.is_err() {
                    return Err(server_error("cannot write the upload"));
                }
            }
        }
    }
    .await;
    if let Err(resp) = outcome {
        drop(file);
        let _ = tokio::fs::remove_file(&tmp).await;
        return resp;
    }
    let durable = async {
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, &fin).await?;
        let d = dir.clone();
        tokio::task::spawn_blocking(move || crate::fsutil::sync_dir(&d))
            .await
            .map_err(std::io::Error::other)??;
        Ok::<_, std::io::Error>(())
    }
    .await;
    if let Err(e) = durable {
        warn!(error = %e, "jmap: cannot store an upload");
        let _ = tokio::fs::remove_file(&tmp).await;
        return server_error("cannot store the upload");
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "accountId": account,
            "blobId": ids::blob_id(&Blob::Upload(r)),
            "type": content_type,
            "size": size,
        }),
    )
}

fn server_error(detail: &str) -> Response {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", detail).into_response()
}

/// Where an uploaded blob of `user` is, when it exists and has not expired.
async fn upload_file(services: &Services, user: &str, r: &[u8; 16]) -> Option<(PathBuf, u64)> {
    let p = upload_path(services, user, r);
    let meta = tokio::fs::metadata(&p).await.ok()?;
    if expired(&meta, services.config.http.upload_ttl) {
        return None;
    }
    Some((p, meta.len()))
}

/// The decoded content of one part (IMAP section numbers) of a message;
/// None when the message has no such part.
pub fn part_bytes(msg: &[u8], path: &[u32]) -> Option<Vec<u8>> {
    let section: Vec<NonZeroU32> = path.iter().filter_map(|p| NonZeroU32::new(*p)).collect();
    if section.len() != path.len() || section.is_empty() {
        return None;
    }
    crate::imap::mime::binary_section(msg, &section).ok()
}

/// A blob's bytes for `user`: an upload, a message, or one part of it.
/// `None` when the id is not a blob of theirs (or has expired).
pub async fn read_for(
    services: &Services,
    user: &str,
    blob_id: &str,
) -> Result<Option<Vec<u8>>, MethodError> {
    match ids::parse_blob_id(blob_id) {
        None => Ok(None),
        Some(Blob::Upload(r)) => match upload_file(services, user, &r).await {
            Some((p, _)) => Ok(tokio::fs::read(&p).await.ok()),
            None => Ok(None),
        },
        Some(Blob::Message(e)) => Ok(services.store().read_email(user, e).await?),
        Some(Blob::Part(e, path)) => {
            let Some(msg) = services.store().read_email(user, e).await? else {
                return Ok(None);
            };
            Ok(tokio::task::spawn_blocking(move || part_bytes(&msg, &path))
                .await
                .map_err(|e| MethodError::ServerFail(e.to_string()))?)
        }
    }
}

/// A blob's bytes for the request's user (methods use this).
pub async fn read(ctx: &Ctx, blob_id: &str) -> Result<Option<Vec<u8>>, MethodError> {
    read_for(&ctx.services, &ctx.user, blob_id).await
}

/// A `type/subtype` media type made of token characters; anything else
/// is served as application/octet-stream.
fn safe_type(t: Option<&String>) -> String {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match t.and_then(|t| t.split_once('/')) {
        Some((a, b)) if ok(a) && ok(b) => {
            format!("{}/{}", a.to_ascii_lowercase(), b.to_ascii_lowercase())
        }
        _ => "application/octet-stream".into(),
    }
}

/// `attachment; filename="..."; filename*=UTF-8''...`: an ASCII fallback
/// without quotes, slashes or controls, and the name percent-encoded.
pub fn disposition(name: &str) -> String {
    let name: String = name.chars().take(200).collect();
    let mut ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " .-_()+,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    ascii = ascii.trim_matches(|c| c == '.' || c == ' ').to_string();
    if ascii.is_empty() {
        ascii = "download".into();
    }
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    if enc.is_empty() {
        enc = "download".into();
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

pub async fn download(
    State(services): State<Services>,
    Extension(info): Extension<ConnInfo>,
    UrlPath((account, blob, name)): UrlPath<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let user = match auth::authenticate(&services, &info, &headers, &method).await {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    if account != ids::account_id(&user) {
        return not_found();
    }
    let body = match ids::parse_blob_id(&blob) {
        None => return not_found(),
        Some(Blob::Upload(r)) => {
            let Some((p, len)) = upload_file(&services, &user, &r).await else {
                return not_found();
            };
            let Ok(mut f) = tokio::fs::File::open(&p).await else {
                return not_found();
            };
            let (tx, rx) = mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let mut left = len;
                while left > 0 {
                    let mut buf = vec![0u8; 64 * 1024];
                    match f.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            buf.truncate(n);
                            left = left.saturating_sub(n as u64);
                            if tx.send(Bytes::from(buf)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            let mut b = Response::new(Body::new(ChannelBody(rx)));
            if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
                b.headers_mut().insert(header::CONTENT_LENGTH, v);
            }
            b
        }
        Some(_) => match read_for(&services, &user, &blob).await {
            Ok(Some(bytes)) => Response::new(Body::from(bytes)),
            Ok(None) => return not_found(),
            Err(_) => return server_error("cannot read the blob"),
        },
    };
    let mut resp = body;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&safe_type(q.get("accept"))) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition(&name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_are_attachments_with_safe_names_and_types() {
        let d = disposition("../\"evil\"\r\n.html");
        assert!(d.starts_with("attachment; "));
        assert!(!d.contains('\r') && !d.contains('\n') && !d.contains("\"evil"));
        assert!(!d.contains('/'));
        assert_eq!(
            disposition(""),
            "attachment; filename=\"download\"; filename*=UTF-8''download"
        );
        assert_eq!(safe_type(Some(&"text/html".to_string())), "text/html");
        assert_eq!(
            safe_type(Some(&"text/html; x=\"\r\n".to_string())),
            "application/octet-stream"
        );
        assert_eq!(safe_type(None), "application/octet-stream");
    }

    #[test]
    fn expired_uploads_are_swept_and_counted_out() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("Uold");
        let new = dir.path().join("Unew");
        std::fs::write(&old, b"12345").unwrap();
        std::fs::write(&new, b"123").unwrap();
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(90_000))
            .unwrap();
        drop(f);
        assert_eq!(sweep(dir.path(), 86_400), 3);
        assert!(!old.exists() && new.exists());
    }

    #[test]
    fn parts_are_decoded_by_section() {
        let msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n";
        assert_eq!(part_bytes(msg, &[2]).as_deref(), Some(&b"hi"[..]));
        assert_eq!(part_bytes(msg, &[0]), None);
        assert_eq!(part_bytes(msg, &[]), None);
    }
}
