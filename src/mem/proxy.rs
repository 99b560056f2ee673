//! Forwarding a logged-in user's JMAP calls to their store (mem role
//! alone; all-in-one serves `/jmap/...` with the store's own routes).
//!
//! `/jmap/session`, `/jmap/api`, `/jmap/upload/...`, `/jmap/download/...`
//! and `/jmap/eventsource` go to the store the session names (its
//! mailHost, mapped by `mem.stores` or connected to by name on
//! `mem.store_port`, over HTTPS with `mem.store_tls`), with a bearer token
//! for that user (`crate::http::token`) in place of the cookie, and
//! `X-Forwarded-Host` / `X-Forwarded-Proto` / `X-Forwarded-For` so the
//! store's session resource names the mem's URLs.
//!
//! Invariants:
//! - Bodies stream both ways (hyper bodies passed through, never
//!   collected): an upload, a download or an event source holds no more
//!   than hyper's buffers in the mem.
//! - A store that cannot be reached within `mem.connect_timeout` (lookup
//!   and connect), or does not start answering within
//!   `mem.store_timeout`, gets the user a 503 (a JMAP problem detail, or
//!   an error page for a browser navigation), never a hang.
//! - Connections to the stores are pooled (hyper-util's client, keyed by
//!   store address, `mem.pool_idle_per_store` idle ones kept).
//! - Cookies, the CSRF token and any client `Authorization` or
//!   `X-Forwarded-*` header stay in the mem; `Set-Cookie` from a store
//!   does not reach the browser.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::session::{self, Refusal};
use crate::dns::Resolver;
use crate::net::ConnInfo;
use crate::services::Services;

/// The mem's pooled HTTP(S) client for the stores.
pub struct Stores {
    client: Client<Connector, Body>,
}

impl Stores {
    pub fn new(services: &Services) -> anyhow::Result<Stores> {
        let m = &services.config.mem;
        let tls = if m.store_tls {
            Some(tokio_rustls::TlsConnector::from(client_config(
                &services.config,
            )?))
        } else {
            None
        };
        let connector = Connector {
            resolver: services.resolver.clone(),
            tls,
            timeout: Duration::from_secs(m.connect_timeout.max(1)),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(m.pool_idle_per_store)
            .build(connector);
        Ok(Stores { client })
    }
}

/// Client TLS for the stores: `mem.store_ca_file`, or no verification
/// with `mem.store_tls_insecure`.
fn client_config(config: &crate::config::Config) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let m = &config.mem;
    let mut c = crate::tls::store_client_config(
        config,
        m.store_tls_insecure,
        &m.store_ca_file,
        "mem.store_ca_file is empty: give the stores' CA (or set store_tls = false)",
    )?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// Opens connections to the stores: the process's resolver, one deadline
/// for lookup and connect, TLS when configured.
#[derive(Clone)]
pub struct Connector {
    resolver: Arc<Resolver>,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
}

/// A connection to a store.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other("no host"))?
                .to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if this.tls.is_some() { 443 } else { 80 });
            let connect = async {
                let addrs = this
                    .resolver
                    .socket_addrs(&host, port)
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let mut last = io::Error::other(format!("{host}: no address"));
                for addr in addrs {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(s);
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            };
            let tcp = tokio::time::timeout(this.timeout, connect)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
            let stream = match &this.tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    let bare = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(bare.to_string())
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    let s = tokio::time::timeout(this.timeout, tls.connect(name, tcp))
                        .await
                        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS timeout"))??;
                    Stream::Tls(Box::new(s))
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// A JMAP-style problem detail (RFC 7807, as RFC 8620 section 3.6.1 uses).
pub fn problem(status: StatusCode, kind: &str, detail: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::json!({"type": kind, "status": status.as_u16(), "detail": detail}).to_string(),
    )
        .into_response()
}

/// A browser navigating (a download link) gets a page, a script JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn unavailable(html: bool) -> Response {
    if html {
        super::login::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Mailbox unavailable",
            "Your mailbox server is not answering. Please try again in a few minutes.",
        )
    } else {
        let mut r = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "about:blank",
            "The mail store is not answering; try again later.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        r
    }
}

/// `scheme://authority` of the store serving `mail_host`.
pub fn store_base(config: &crate::config::Config, mail_host: &str) -> String {
    let m = &config.mem;
    let (host, port) = match m
        .stores
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(mail_host))
    {
        Some((_, hp)) => (
            hp.host.as_str().to_string(),
            hp.port.unwrap_or(m.store_port),
        ),
        None => (mail_host.to_string(), m.store_port),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let scheme = if m.store_tls { "https" } else { "http" };
    format!("{scheme}://{host}:{port}")
}

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1),
/// and what the mem keeps for itself.
fn dropped_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "cookie"
            | "authorization"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-csrf-token"
    )
}

fn dropped_response_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "set-cookie"
    )
}

/// Reads (and drops) what is left of a small refused request's body, so
/// the client's keep-alive connection stays usable (hyper closes one whose
/// body was not read); a large or slow body is left, and the connection
/// with it.
async fn drain_small(body: Body) {
    const SMALL: usize = 64 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(2), axum::body::to_bytes(body, SMALL)).await;
}

/// `GET /.well-known/jmap` (RFC 8620 section 2.2).
pub async fn well_known() -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, "/jmap/session")],
    )
        .into_response()
}

/// `/jmap/...`: the user's call, forwarded to their store.
pub async fn forward(State(services): State<Services>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let html = wants_html(&parts.headers);
    let s = match session::from_headers(&services, &parts.headers, &parts.method) {
        Ok(Some(s)) => s,
        Ok(None) | Err(Refusal::NoSession) => {
            drain_small(body).await;
            return problem(StatusCode::UNAUTHORIZED, "about:blank", "Not logged in");
        }
        Err(Refusal::Csrf) => {
            drain_small(body).await;
            return problem(
                StatusCode::FORBIDDEN,
                "about:blank",
                "Missing or wrong X-CSRF-Token",
            );
        }
    };
    let Ok(state) = super::state(&services) else {
        return unavailable(html);
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .split('/')
        .any(|seg| seg == ".." || seg == "." || seg.contains('\\'))
    {
        return problem(StatusCode::BAD_REQUEST, "about:blank", "Bad path");
    }
    if s.mail_host.is_empty() {
        return unavailable(html);
    }
    // A body larger than the limits is refused here, before any of it is
    // read or a store connection taken (the mem's `[http]` limits: set
    // them as the stores').
    if let Some(p) = too_large(&services.config.http, path, &parts.headers) {
        return p;
    }
    let base = store_base(&services.config, &s.mail_host);
    let Ok(uri) = format!("{base}{path}").parse::<Uri>() else {
        return problem(StatusCode::BAD_REQUEST, "about:blank", "Bad path");
    };
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(axum::http::Version::HTTP_11);
    let h = out.headers_mut().expect("builder");
    for (name, value) in parts.headers.iter() {
        if !dropped_request_header(name) {
            h.append(name.clone(), value.clone());
        }
    }
    let token = state.tokens.issue(
        &s.user,
        &s.id,
        Duration::from_secs(services.config.http.token_ttl.max(30)),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        h.insert("x-forwarded-host", host.clone());
    }
    let tls = conn.as_ref().is_some_and(|c| c.tls_active);
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(c) = &conn {
        if let Ok(v) = HeaderValue::from_str(&c.peer.ip().to_string()) {
            h.insert("x-forwarded-for", v);
        }
    }
    let Ok(out) = out.body(body) else {
        return problem(StatusCode::BAD_REQUEST, "about:blank", "Bad request");
    };
    let m = &services.config.mem;
    let deadline = Duration::from_secs(m.connect_timeout.max(1) + m.store_timeout.max(1));
    let resp = match tokio::time::timeout(deadline, state.stores.client.request(out)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if crate::http::deadline::is_body_timeout(&e) => {
            info!(user = %s.user, "webmail request body did not arrive in time");
            return problem(
                StatusCode::REQUEST_TIMEOUT,
                "about:blank",
                "the request body did not arrive in time",
            );
        }
        Ok(Err(e)) => {
            warn!(user = %s.user, store = %base, error = %e, connect = e.is_connect(), "store unavailable for a webmail call");
            return unavailable(html);
        }
        Err(_) => {
            warn!(user = %s.user, store = %base, "store did not answer a webmail call in time");
            return unavailable(html);
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    let names: Vec<HeaderName> = rparts
        .headers
        .keys()
        .filter(|n| dropped_response_header(n))
        .cloned()
        .collect();
    for n in names {
        rparts.headers.remove(n);
    }
    if rparts.status.is_server_error() {
        info!(user = %s.user, store = %base, status = %rparts.status, "store error on a webmail call");
    }
    if ended(rparts.status, &rparts.headers) {
        // A logout on another mem ended this session: forget it here too
        // and drop the browser's cookie.
        state.sealer.revoke(&s, m.session_max);
        rparts.headers.append(
            header::SET_COOKIE,
            session::clear_cookie(session::COOKIE, "/", tls),
        );
    }
    Response::from_parts(rparts, Body::new(rbody))
}

/// 413 for a request whose Content-Length exceeds what the store would
/// take: `maxSizeUpload` for uploads, `maxSizeRequest` for anything else.
fn too_large(
    http: &crate::config::HttpConfig,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    let claimed = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let (max, limit) = if path.starts_with("/jmap/upload/") {
        (http.max_size_upload, "maxSizeUpload")
    } else {
        (http.max_size_request, "maxSizeRequest")
    };
    if claimed <= max {
        return None;
    }
    let body = serde_json::json!({
        "type": "urn:ietf:params:jmap:error:limit",
        "limit": limit,
        "status": 413,
        "detail": format!("the body is larger than {max} bytes"),
    });
    Some(
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONNECTION, "close"),
            ],
            body.to_string(),
        )
            .into_response(),
    )
}

/// The store's answer says the session was ended by a logout.
fn ended(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers
            .get(header::WWW_AUTHENTICATE)
            .is_some_and(|v| v.as_bytes() == crate::jmap::auth::SESSION_ENDED.as_bytes())
}

/// What the user's store says of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSession {
    /// Not ended by a logout.
    Live,
    /// Ended by a logout (on any mem).
    Ended,
    /// The store did not answer in time.
    Unknown,
}

/// Asks the session's store whether a logout ended `s` (all-in-one: this
/// process's store). An ended session is remembered here too.
pub async fn session_state(services: &Services, s: &session::Session) -> StoreSession {
    let Ok(state) = super::state(services) else {
        return StoreSession::Unknown;
    };
    if state.sealer.is_revoked(s) {
        return StoreSession::Ended;
    }
    let answer = if let Some(store) = services.store.as_ref() {
        match store.session_revoked(&s.id).await {
            Ok(true) => StoreSession::Ended,
            Ok(false) => StoreSession::Live,
            Err(e) => {
                warn!(error = %e, "cannot read the revoked sessions");
                StoreSession::Unknown
            }
        }
    } else {
        match store_call(
            services,
            &state,
            s,
            axum::http::Method::GET,
            "/msgd/session/check",
        )
        .await
        {
            Some((st, h)) if ended(st, &h) => StoreSession::Ended,
            // The store is the authority: any other answer (204, or an
            // older store without the route) is no logout.
            Some(_) => StoreSession::Live,
            None => StoreSession::Unknown,
        }
    };
    if answer == StoreSession::Ended {
        state.sealer.revoke(s, services.config.mem.session_max);
    }
    answer
}

/// Records at the session's store (all-in-one: this process's) that a
/// logout ended `s`, so every mem refuses its cookie; false when the
/// store could not record it.
pub async fn end_session(services: &Services, s: &session::Session) -> bool {
    let until = s.login.saturating_add(services.config.mem.session_max);
    let until = i64::try_from(until).unwrap_or(i64::MAX);
    if let Some(store) = services.store.as_ref() {
        return match store.revoke_session(&s.id, until).await {
            Ok(()) => true,
            Err(e) => {
                warn!(user = %s.user, error = %e, "cannot record a webmail logout");
                false
            }
        };
    }
    let Ok(state) = super::state(services) else {
        return false;
    };
    let path = format!("/msgd/session/revoke?until={until}");
    match store_call(services, &state, s, axum::http::Method::POST, &path).await {
        Some((st, _)) if st == StatusCode::NO_CONTENT => true,
        other => {
            warn!(user = %s.user, answer = ?other.map(|(st, _)| st), "the store did not record a webmail logout: other mems accept the cookie until it expires");
            false
        }
    }
}

/// One small request to the session's store with the session's bearer
/// token, within the mem's deadlines: its status and headers.
async fn store_call(
    services: &Services,
    state: &super::State,
    s: &session::Session,
    method: axum::http::Method,
    path: &str,
) -> Option<(StatusCode, HeaderMap)> {
    if s.mail_host.is_empty() {
        return None;
    }
    let base = store_base(&services.config, &s.mail_host);
    let token = state.tokens.issue(
        &s.user,
        &s.id,
        Duration::from_secs(services.config.http.token_ttl.max(30)),
    );
    let req = axum::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .ok()?;
    let m = &services.config.mem;
    let deadline = Duration::from_secs(m.connect_timeout.max(1) + m.store_timeout.max(1));
    match tokio::time::timeout(deadline, state.stores.client.request(req)).await {
        Ok(Ok(r)) => {
            let (parts, body) = r.into_parts();
            // Read the (small) body so the pooled connection can be reused.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                axum::body::to_bytes(Body::new(body), 64 * 1024),
            )
            .await;
            Some((parts.status, parts.headers))
        }
        Ok(Err(e)) => {
            warn!(user = %s.user, store = %base, error = %e, "store unavailable for a session check");
            None
        }
        Err(_) => {
            warn!(user = %s.user, store = %base, "store did not answer a session check in time");
            None
        }
    }
}

/// A small GET to the store serving `mail_host` for `user` (the console's
/// usage page): a bearer token for `user` alone, valid for a minute and
/// naming a session of its own; within the mem's deadlines; the status and
/// at most `max` bytes of the body (None: no answer in time).
pub async fn store_get(
    services: &Services,
    user: &str,
    mail_host: &str,
    path: &str,
    max: usize,
) -> Option<(StatusCode, axum::body::Bytes)> {
    let state = super::state(services).ok()?;
    let base = store_base(&services.config, mail_host);
    let token = state
        .tokens
        .issue(user, &session::random_token(), Duration::from_secs(60));
    let req = axum::http::Request::builder()
        .method(axum::http::Method::GET)
        .uri(format!("{base}{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .ok()?;
    let m = &services.config.mem;
    let deadline = Duration::from_secs(m.connect_timeout.max(1) + m.store_timeout.max(1));
    let answer = tokio::time::timeout(deadline, async {
        let r = state.stores.client.request(req).await?;
        let (parts, body) = r.into_parts();
        let body = axum::body::to_bytes(Body::new(body), max)
            .await
            .unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((parts.status, body))
    })
    .await;
    match answer {
        Ok(Ok(a)) => Some(a),
        Ok(Err(e)) => {
            warn!(user = %user, store = %base, error = %e, "store unavailable");
            None
        }
        Err(_) => {
            warn!(user = %user, store = %base, "store did not answer in time");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_found_by_mail_host_or_by_name() {
        let mut c = crate::config::Config::default();
        c.mem.stores.insert(
            "Store1.example.com".into(),
            "10.0.0.5:8081".parse().unwrap(),
        );
        c.mem
            .stores
            .insert("store2.example.com".into(), "10.0.0.6".parse().unwrap());
        c.mem
            .stores
            .insert("v6".into(), "[::1]:9000".parse().unwrap());
        assert_eq!(store_base(&c, "store1.example.com"), "http://10.0.0.5:8081");
        assert_eq!(store_base(&c, "store2.example.com"), "http://10.0.0.6:8080");
        assert_eq!(store_base(&c, "v6"), "http://[::1]:9000");
        c.mem.store_tls = true;
        c.mem.store_port = 8443;
        assert_eq!(
            store_base(&c, "other.example.com"),
            "https://other.example.com:8443"
        );
    }

    #[test]
    fn bodies_over_the_jmap_limits_are_refused_before_reading() {
        let http = crate::config::HttpConfig {
            max_size_upload: 1000,
            max_size_request: 100,
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("500"));
        assert!(too_large(&http, "/jmap/upload/a", &h).is_none());
        let r = too_large(&http, "/jmap/api", &h).unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1001"));
        assert!(too_large(&http, "/jmap/upload/a", &h).is_some());
        assert!(too_large(&http, "/jmap/api", &HeaderMap::new()).is_none());
    }

    #[test]
    fn only_the_stores_session_ended_challenge_drops_the_cookie() {
        let mut h = HeaderMap::new();
        assert!(!ended(StatusCode::UNAUTHORIZED, &h));
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(crate::jmap::auth::SESSION_ENDED),
        );
        assert!(ended(StatusCode::UNAUTHORIZED, &h));
        assert!(!ended(StatusCode::FORBIDDEN, &h));
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(crate::jmap::auth::REALM),
        );
        assert!(!ended(StatusCode::UNAUTHORIZED, &h));
    }

    #[test]
    fn hop_by_hop_and_mem_only_headers_stay_in_the_mem() {
        for n in [
            "cookie",
            "authorization",
            "x-csrf-token",
            "connection",
            "x-forwarded-for",
        ] {
            assert!(dropped_request_header(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!dropped_request_header(&header::CONTENT_TYPE));
        assert!(!dropped_request_header(&header::CONTENT_LENGTH));
        assert!(dropped_response_header(&header::SET_COOKIE));
        assert!(!dropped_response_header(&header::CONTENT_TYPE));
    }
}
