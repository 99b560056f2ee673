//! The provisioning HTTP API (JSON under `/admin/api/`) and what the
//! console (`super::console`, HTML under `/admin/`) shares with it: the
//! administrator's session, authentication, the error mapping and the
//! security headers. Both are served only on the `console` listener
//! (`[listener.console]`, the mem role), never on the webmail's.
//! Documented for tools in docs/admin.md ("HTTP API").
//!
//! Authentication, in order:
//! 1. the console's session cookie `msgd_console` (path `/admin`): a
//!    webmail `Session` sealed under its own key file
//!    (`mem.session_key_file` + `.console`: a webmail cookie never opens
//!    here, nor the reverse) whose `mail_host` is the marker [`MARK`]. It
//!    carries who logged in, not their rights: the rights are read from
//!    the directory again at every request (`Provisioner::actor_named`),
//!    so a revoked administrator loses them at once. State-changing
//!    requests need the session's CSRF token (`X-CSRF-Token`, or the
//!    console forms' hidden `csrf` field), as in the webmail;
//! 2. `Authorization: Basic` (tools): only over TLS or from loopback, with
//!    the process's failed-login limits; no CSRF token (no browser holds
//!    these credentials: a 401 never carries a Basic challenge, so a
//!    browser never asks for and caches them).
//!
//! Invariants:
//! - Passwords are never logged, never echoed, never in a response.
//! - Every body is bounded (`MAX_BODY`) and read under the HTTP
//!   deadlines of `crate::http::serve`; listings are capped at
//!   `super::MAX_PAGE`.
//! - A refusal is `{"error": kind, "message": text}` with the status of
//!   its `ProvError` class; a server fault answers 500 with a generic
//!   text and the cause goes to the log.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query as UrlQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use tracing::{info, warn};

use super::{Actor, DomainChange, GroupChange, ProvError, Provisioner, Query, User, UserChange};
use crate::loginlimit::Verdict;
use crate::mem::session::{self, Sealer, Session};
use crate::net::ConnInfo;
use crate::redact::Secret;
use crate::services::Services;

/// The console's session cookie (path `/admin`).
pub const COOKIE: &str = "msgd_console";
/// The cookie's path: the console pages and the API.
pub const COOKIE_PATH: &str = "/admin";
/// `Session::mail_host` of an administrator's session.
pub const MARK: &str = "@console";
/// Largest request body read (a user with many aliases is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest login name and password accepted.
const MAX_LOGIN: usize = 320;
const MAX_PASSWORD: usize = 1024;

/// What the console's routes share: the provisioner and the cookie key.
pub struct ConsoleState {
    pub prov: Provisioner,
    pub sealer: Sealer,
}

/// The console's state, built at the first request.
pub fn state(services: &Services) -> Result<Arc<ConsoleState>, ApiError> {
    if let Some(s) = services.web.console.get() {
        return Ok(s.clone());
    }
    let built = build(services).map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "administration console unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the administration service is not available",
        )
    })?;
    Ok(services.web.console.get_or_init(|| built).clone())
}

fn build(services: &Services) -> anyhow::Result<Arc<ConsoleState>> {
    let c = &services.config;
    let key_name = if c.mem.session_key_file.is_empty() {
        "mem-session.key.console".to_string()
    } else {
        format!("{}.console", c.mem.session_key_file)
    };
    let key =
        crate::http::keys::load_or_create(&c.data_path(&key_name, "mem-session.key.console"))?;
    Ok(Arc::new(ConsoleState {
        prov: Provisioner::open(services.config.clone())?,
        sealer: Sealer::new(&key),
    }))
}

/// The router of the console listener: the API, the console pages, the
/// security headers and session renewal over all of them.
pub fn app(services: &Services) -> Router {
    Router::new()
        .merge(routes())
        .merge(super::console::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            headers,
        ))
        .with_state(services.clone())
}

/// The JSON routes (docs/admin.md, "HTTP API").
pub fn routes() -> Router<Services> {
    Router::new()
        .route("/admin/api/login", post(login))
        .route("/admin/api/logout", post(logout))
        .route("/admin/api/session", get(session_info))
        .route("/admin/api/users", get(users_list).post(user_add))
        .route(
            "/admin/api/users/{address}",
            get(user_get).patch(user_modify).delete(user_delete),
        )
        .route("/admin/api/users/{address}/usage", get(user_usage))
        .route("/admin/api/groups", get(groups_list).post(group_add))
        .route(
            "/admin/api/groups/{address}",
            get(group_get).patch(group_modify).delete(group_delete),
        )
        .route("/admin/api/domains", get(domains_list).post(domain_add))
        .route(
            "/admin/api/domains/{name}",
            get(domain_get).patch(domain_modify).delete(domain_delete),
        )
}

// ------------------------------------------------------------------------
// errors

/// A refusal: status, a short kind for programs, a text for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
}

impl From<ProvError> for ApiError {
    fn from(e: ProvError) -> ApiError {
        let (status, kind) = match &e {
            ProvError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ProvError::Exists(_) => (StatusCode::CONFLICT, "exists"),
            ProvError::Denied(_) => (StatusCode::FORBIDDEN, "denied"),
            ProvError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit"),
            ProvError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            ProvError::Temporary(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ProvError::Other(cause) => {
                warn!(error = %format!("{cause:#}"), "provisioning failed");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the request could not be completed; see the server log",
                );
            }
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({"error": self.kind, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ------------------------------------------------------------------------
// who is asking

/// An authenticated administrator: the rights read now, and the console
/// session when the cookie authenticated the request.
pub struct Admin {
    pub actor: Actor,
    pub session: Option<Session>,
}

/// Where a state-changing request's CSRF token comes from.
pub enum Csrf<'a> {
    /// The API: the `X-CSRF-Token` header.
    Header,
    /// A console form's hidden field.
    Field(&'a str),
}

pub fn conn(ext: &axum::http::Extensions) -> Option<&ConnInfo> {
    ext.get::<ConnInfo>()
}

/// The console session in a request's cookie: `Ok(None)` without one,
/// `Err` for one that is forged, expired or logged out.
pub fn cookie_session(
    services: &Services,
    st: &ConsoleState,
    headers: &HeaderMap,
) -> Result<Option<Session>, ApiError> {
    let Some(value) = session::cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let m = &services.config.mem;
    st.sealer
        .open(value)
        .filter(|s| s.mail_host == MARK)
        .filter(|s| s.live(session::now(), m.session_idle, m.session_max))
        .filter(|s| !st.sealer.is_revoked(s))
        .map(Some)
        .ok_or_else(|| ApiError::unauthorized("the session has ended; log in again"))
}

/// Authenticates a request (see the module doc) and reads the rights.
pub async fn authenticate(
    services: &Services,
    st: &ConsoleState,
    headers: &HeaderMap,
    method: &Method,
    ext: &axum::http::Extensions,
    csrf: Csrf<'_>,
) -> ApiResult<Admin> {
    if let Some(s) = cookie_session(services, st, headers)? {
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let sent = match csrf {
                Csrf::Header => headers
                    .get(session::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                Csrf::Field(f) => f,
            };
            if !session::same_token(sent, &s.csrf) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "missing or wrong CSRF token",
                ));
            }
        }
        let actor = st.prov.actor_named(&s.user).await?;
        return Ok(Admin {
            actor,
            session: Some(s),
        });
    }
    let Some((login, password)) = basic(headers) else {
        return Err(ApiError::unauthorized("authentication required"));
    };
    let conn = conn(ext).ok_or_else(|| ApiError::unauthorized("no connection"))?;
    let actor = password_login(services, st, conn, &login, &password).await?;
    Ok(Admin {
        actor,
        session: None,
    })
}

/// `Authorization: Basic` credentials.
fn basic(headers: &HeaderMap) -> Option<(String, Secret)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 4 * (MAX_LOGIN + MAX_PASSWORD) {
        return None;
    }
    let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (l, p) = raw.split_once(':')?;
    Some((l.to_string(), Secret::from(p)))
}

/// An administrator's password login (the login form, the API's login,
/// Basic): TLS or loopback only, the failed-login limits of the process.
pub async fn password_login(
    services: &Services,
    st: &ConsoleState,
    conn: &ConnInfo,
    login: &str,
    password: &Secret,
) -> ApiResult<Actor> {
    if !conn.tls_active && !conn.is_loopback() {
        info!(from = %conn.peer, "console login refused: password over plaintext HTTP");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tls_required",
            "passwords are only accepted over HTTPS (or from this host)",
        ));
    }
    if login.is_empty()
        || login.len() > MAX_LOGIN
        || password.is_empty()
        || password.expose().len() > MAX_PASSWORD
    {
        return Err(ApiError::unauthorized("wrong login or password"));
    }
    let login = login.trim().to_lowercase();
    let ip = conn.peer.ip();
    if let Verdict::Refuse(delay) = services.logins.before(ip, &login) {
        tokio::time::sleep(delay).await;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed logins; wait a while and try again",
        ));
    }
    match st.prov.admin_login(&login, password).await {
        Ok(actor) => {
            services.logins.success(ip, &login);
            info!(admin = actor.id(), from = %conn.peer, "console login");
            Ok(actor)
        }
        Err(ProvError::Temporary(m)) => Err(ProvError::Temporary(m).into()),
        Err(ProvError::Other(e)) => Err(ProvError::Other(e).into()),
        Err(e) => {
            // Wrong password, unknown login, or not an administrator:
            // one answer for all (the cause goes to the log only).
            info!(login = %login, from = %conn.peer, reason = %e, "console login failed");
            let delay = services.logins.failure(ip, &login);
            tokio::time::sleep(delay).await;
            Err(ApiError::unauthorized("wrong login or password"))
        }
    }
}

/// A new console session for `actor`, and its `Set-Cookie`.
pub fn new_session(
    services: &Services,
    st: &ConsoleState,
    actor: &Actor,
    tls: bool,
) -> (Session, HeaderValue) {
    let s = Session::new(actor.id(), MARK, session::now());
    let v = set_cookie(services, st, &s, tls);
    (s, v)
}

fn set_cookie(services: &Services, st: &ConsoleState, s: &Session, tls: bool) -> HeaderValue {
    let v = format!(
        "{COOKIE}={}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        st.sealer.seal(s),
        services.config.mem.session_max,
        if tls { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).expect("cookie header")
}

/// Ends a console session (logout): revoked in this process until its
/// absolute expiry.
pub fn end_session(services: &Services, st: &ConsoleState, s: &Session) {
    st.sealer.revoke(s, services.config.mem.session_max);
    info!(admin = %s.user, "console logout");
}

pub fn clear_cookie(tls: bool) -> HeaderValue {
    session::clear_cookie(COOKIE, COOKIE_PATH, tls)
}

/// An `Origin` header, when a browser sends one, names this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    bare.is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host))
}

/// Security headers on every response of the console listener (the
/// webmail's CSP: no inline script), `no-store`, and the session renewed
/// (new last-activity time) on an accepted request.
async fn headers(State(services): State<Services>, req: Request, next: Next) -> Response {
    let live = state(&services)
        .ok()
        .and_then(|st| cookie_session(&services, &st, req.headers()).ok().flatten());
    let tls = session::secure(req.extensions());
    let mut resp = next.run(req).await;
    let refused = matches!(resp.status().as_u16(), 401 | 403);
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", session::CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        if !h.contains_key(name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    if let (Some(mut s), false) = (live, refused) {
        if !h.contains_key(header::SET_COOKIE) {
            if let Ok(st) = state(&services) {
                s.last = session::now().max(s.last);
                h.insert(header::SET_COOKIE, set_cookie(&services, &st, &s, tls));
            }
        }
    }
    resp
}

// ------------------------------------------------------------------------
// handlers

/// What a handler starts with: the state and who asks.
async fn admin(
    services: &Services,
    headers: &HeaderMap,
    method: &Method,
    ext: &axum::http::Extensions,
) -> ApiResult<(Arc<ConsoleState>, Actor)> {
    let st = state(services)?;
    let a = authenticate(services, &st, headers, method, ext, Csrf::Header).await?;
    Ok((st, a.actor))
}

/// The administrator of an API request (`admin`: session with the
/// `X-CSRF-Token` header, or Basic), checked before any body is read.
struct ApiAdmin(Arc<ConsoleState>, Actor);

impl axum::extract::FromRequestParts<Services> for ApiAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        services: &Services,
    ) -> ApiResult<ApiAdmin> {
        let (st, actor) = admin(services, &parts.headers, &parts.method, &parts.extensions).await?;
        Ok(ApiAdmin(st, actor))
    }
}

/// A JSON body, its rejection (wrong type, malformed, too large) as a
/// 400/413/415 in the API's error shape.
fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> ApiResult<T> {
    match b {
        Ok(Json(v)) => Ok(v),
        Err(e) => Err(ApiError::new(e.status(), "invalid", e.body_text())),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    login: String,
    password: Secret,
}

/// `POST /admin/api/login {login, password}`: a console session (cookie)
/// and its CSRF token.
async fn login(
    State(services): State<Services>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    b: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let b = body(b)?;
    if !same_origin(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "the request came from another site",
        ));
    }
    let st = state(&services)?;
    let conn = conn(&ext).ok_or_else(|| ApiError::unauthorized("no connection"))?;
    let actor = password_login(&services, &st, conn, &b.login, &b.password).await?;
    let (s, cookie) = new_session(&services, &st, &actor, session::secure(&ext));
    let mut r = Json(serde_json::json!({"actor": actor, "csrfToken": s.csrf})).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

/// `POST /admin/api/logout` (CSRF token needed).
async fn logout(
    State(services): State<Services>,
    headers: HeaderMap,
    method: Method,
    ext: axum::http::Extensions,
) -> ApiResult<Response> {
    let st = state(&services)?;
    let a = authenticate(&services, &st, &headers, &method, &ext, Csrf::Header).await?;
    if let Some(s) = &a.session {
        end_session(&services, &st, s);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(session::secure(&ext)));
    Ok(r)
}

/// `GET /admin/api/session`: who is logged in, their rights, the CSRF
/// token.
async fn session_info(
    State(services): State<Services>,
    headers: HeaderMap,
    method: Method,
    ext: axum::http::Extensions,
) -> ApiResult<Response> {
    let st = state(&services)?;
    let a = authenticate(&services, &st, &headers, &method, &ext, Csrf::Header).await?;
    Ok(Json(serde_json::json!({
        "actor": a.actor,
        "csrfToken": a.session.as_ref().map(|s| s.csrf.clone()),
    }))
    .into_response())
}

/// Query string of a listing; `limit` capped at `MAX_PAGE`.
fn page_query(mut q: Query) -> Query {
    q.limit = q.limit.clamp(1, super::MAX_PAGE);
    q
}

fn ok<T: serde::Serialize>(v: T) -> ApiResult<Response> {
    Ok(Json(v).into_response())
}

fn created<T: serde::Serialize>(v: T) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn users_list(
    ApiAdmin(st, actor): ApiAdmin,
    q: Result<UrlQuery<Query>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let UrlQuery(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text()))?;
    ok(st.prov.user_list(&actor, &page_query(q)).await?)
}

/// A new user and its first password.
#[derive(Deserialize)]
pub struct NewUser {
    #[serde(flatten)]
    pub user: User,
    pub password: Secret,
}

async fn user_add(
    ApiAdmin(st, actor): ApiAdmin,
    b: Result<Json<NewUser>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let NewUser { user, password } = body(b)?;
    created(st.prov.user_add(&actor, user, password).await?)
}

async fn user_get(
    ApiAdmin(st, actor): ApiAdmin,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    ok(st.prov.user_get(&actor, &address).await?)
}

/// `PATCH /admin/api/users/{address}`: 200 and the user; with a new
/// `mail_host`, the other fields are changed first, then the move starts
/// (`start_move`): 202 and `{"user": ..., "move": {"to": HOST}}`.
async fn user_modify(
    State(services): State<Services>,
    headers: HeaderMap,
    method: Method,
    ext: axum::http::Extensions,
    Path(address): Path<String>,
    b: Result<Json<UserChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let (st, actor) = admin(&services, &headers, &method, &ext).await?;
    let change = body(b)?;
    match modify_or_move(&services, &st, &actor, &address, change).await? {
        (user, None) => ok(user),
        (user, Some(to)) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"user": user, "move": {"to": to}})),
        )
            .into_response()),
    }
}

/// Applies a user change; a new mailHost starts the move instead of
/// rewriting the attribute (the second value: the move's target).
pub async fn modify_or_move(
    services: &Services,
    st: &Arc<ConsoleState>,
    actor: &Actor,
    address: &str,
    mut change: UserChange,
) -> ApiResult<(User, Option<String>)> {
    let to =
        match change.mail_host.take() {
            None => None,
            Some(to) => {
                // The rights first: a domain administrator may not move mail.
                super::policy::may_change_user(
                    actor,
                    &UserChange {
                        mail_host: Some(to.clone()),
                        ..Default::default()
                    },
                )?;
                let before = st.prov.user_get(actor, address).await?;
                match to.filter(|h| !h.trim().is_empty()) {
                    Some(h) if Some(h.as_str()) != before.mail_host.as_deref() => Some(h),
                    Some(_) => None,
                    None if before.mail_host.is_none() => None,
                    None => return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "mail_host: a user's mail host cannot be cleared (it names their store)",
                    )),
                }
            }
        };
    if let Some(h) = &to {
        // Checked before any other change is made.
        check_move(services, st, actor, address, h).await?;
    }
    let user = st.prov.user_modify(actor, address, change).await?;
    if let Some(h) = &to {
        start_move(services, st, actor, &user, h);
    }
    Ok((user, to))
}

/// A move can start from here: the user's store is this process's, the
/// target another, no move of the user already running.
async fn check_move(
    services: &Services,
    st: &ConsoleState,
    actor: &Actor,
    address: &str,
    to: &str,
) -> ApiResult<()> {
    let user = st.prov.user_get(actor, address).await?;
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "move_elsewhere", m);
    let Some(store) = services.store.as_ref() else {
        return Err(conflict(format!(
            "changing the mail host moves the mail, which runs on the user's store: \
             run `msgd user move {} --to {to}` there (this console runs without a store)",
            user.address
        )));
    };
    let config = &services.config;
    if !crate::deliver::is_own_store(config, user.mail_host.as_deref()) {
        return Err(conflict(format!(
            "{} lives on {}, not on this console's store: run `msgd user move {} --to {to}` there",
            user.address,
            user.mail_host.unwrap_or_default(),
            user.address
        )));
    }
    if crate::deliver::is_own_store(config, Some(to)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("mail_host: {to} is the user's store already"),
        ));
    }
    if store.moving().deferred(&user.address).is_some() {
        return Err(conflict(format!(
            "{} is already being moved (or was just moved)",
            user.address
        )));
    }
    Ok(())
}

/// Starts `msgd user move` (src/ops/moveuser.rs) in this process: it
/// copies the mail, switches mailHost when the copy is verified, and
/// removes the mail here. Its end is logged and recorded in the change
/// log; the user's mailHost shows the result.
fn start_move(services: &Services, st: &Arc<ConsoleState>, actor: &Actor, user: &User, to: &str) {
    let Some(store) = services.store.clone() else {
        return;
    };
    let ctx = crate::ops::Ctx {
        config: services.config.clone(),
        store,
        directory: services.directory.clone(),
        online: true,
        history: None,
    };
    let args = crate::ops::moveuser::MoveArgs {
        user: user.address.clone(),
        to: to.to_string(),
        json: false,
    };
    st.prov.record(
        actor,
        "user.move.start",
        &user.address,
        &serde_json::json!({"to": to}),
    );
    info!(admin = actor.id(), user = %user.address, to, "console: user move started");
    let (st, actor, address, to) = (
        st.clone(),
        actor.clone(),
        user.address.clone(),
        to.to_string(),
    );
    tokio::spawn(async move {
        let progress = crate::ops::Progress::new();
        match crate::ops::moveuser::run(&ctx, args, &progress).await {
            Ok(v) => {
                info!(admin = actor.id(), user = %address, to = %to, result = %v, "console: user moved");
                st.prov.record(&actor, "user.move.done", &address, &v);
            }
            Err(e) => {
                let error = format!("{e:#}");
                warn!(admin = actor.id(), user = %address, to = %to, error = %error, "console: user move failed; the user stays here");
                st.prov.record(
                    &actor,
                    "user.move.failed",
                    &address,
                    &serde_json::json!({"to": to, "error": error}),
                );
            }
        }
    });
}

async fn user_delete(
    ApiAdmin(st, actor): ApiAdmin,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    ok(st.prov.user_delete(&actor, &address).await?)
}

/// What a user's store holds for them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserUsage {
    pub address: String,
    pub bytes: u64,
    pub messages: u64,
    pub quota: Option<u64>,
    pub msg_quota: Option<u64>,
}

/// A user's usage from their store: the store of this process
/// (all-in-one), else the store their mailHost (or `mem.default_store`)
/// names, asked by the mem like the webmail's calls (`GET /msgd/usage`
/// with a bearer token for that user, `store_routes`).
pub async fn usage_of(services: &Services, user: &User) -> ApiResult<UserUsage> {
    let unavailable = |m: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m);
    let u = if let Some(store) = services.store.as_ref() {
        store.usage(&user.address).await.map_err(|e| {
            warn!(user = %user.address, error = %e, "cannot read a user's usage");
            unavailable("the store did not answer")
        })?
    } else {
        let host = user
            .mail_host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| services.config.mem.default_store.clone());
        if host.is_empty() {
            return Err(unavailable(
                "the user has no mailHost (and mem.default_store is empty)",
            ));
        }
        match crate::mem::proxy::store_get(services, &user.address, &host, "/msgd/usage", 4096)
            .await
        {
            Some((StatusCode::OK, body)) => serde_json::from_slice::<crate::store::Usage>(&body)
                .map_err(|_| unavailable("the store's answer was not understood"))?,
            Some((status, _)) => {
                warn!(user = %user.address, store = %host, %status, "the store refused a usage question");
                return Err(unavailable(
                    "the store did not give the usage (is the user active there?)",
                ));
            }
            None => return Err(unavailable("the store did not answer")),
        }
    };
    Ok(UserUsage {
        address: user.address.clone(),
        bytes: u.bytes,
        messages: u.messages,
        quota: user.quota,
        msg_quota: user.msg_quota,
    })
}

/// The store's side of `usage_of`: `GET /msgd/usage`, authenticated as
/// JMAP is (a mem's bearer token for the user, accepted only from
/// `http.token_networks`): `{bytes, messages}` of that user.
pub fn store_routes() -> Router<Services> {
    Router::new().route("/msgd/usage", get(store_usage))
}

async fn store_usage(
    State(services): State<Services>,
    axum::Extension(info): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    method: Method,
) -> Response {
    let user = match crate::jmap::auth::authenticate(&services, &info, &headers, &method).await {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    let Some(store) = services.store.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match store.usage(&user).await {
        Ok(u) => Json(u).into_response(),
        Err(e) => {
            warn!(user = %user, error = %e, "cannot read a user's usage");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn user_usage(
    State(services): State<Services>,
    headers: HeaderMap,
    method: Method,
    ext: axum::http::Extensions,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    let (st, actor) = admin(&services, &headers, &method, &ext).await?;
    let user = st.prov.user_get(&actor, &address).await?;
    ok(usage_of(&services, &user).await?)
}

async fn groups_list(
    ApiAdmin(st, actor): ApiAdmin,
    q: Result<UrlQuery<Query>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let UrlQuery(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text()))?;
    ok(st.prov.group_list(&actor, &page_query(q)).await?)
}

async fn group_add(
    ApiAdmin(st, actor): ApiAdmin,
    b: Result<Json<super::Group>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    created(st.prov.group_add(&actor, body(b)?).await?)
}

async fn group_get(
    ApiAdmin(st, actor): ApiAdmin,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    ok(st.prov.group_get(&actor, &address).await?)
}

async fn group_modify(
    ApiAdmin(st, actor): ApiAdmin,
    Path(address): Path<String>,
    b: Result<Json<GroupChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    ok(st.prov.group_modify(&actor, &address, body(b)?).await?)
}

async fn group_delete(
    ApiAdmin(st, actor): ApiAdmin,
    Path(address): Path<String>,
) -> ApiResult<Response> {
    st.prov.group_delete(&actor, &address).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn domains_list(
    ApiAdmin(st, actor): ApiAdmin,
    q: Result<UrlQuery<Query>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let UrlQuery(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text()))?;
    ok(st.prov.domain_list(&actor, &page_query(q)).await?)
}

async fn domain_add(
    ApiAdmin(st, actor): ApiAdmin,
    b: Result<Json<super::Domain>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    created(st.prov.domain_add(&actor, body(b)?).await?)
}

async fn domain_get(
    ApiAdmin(st, actor): ApiAdmin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    ok(st.prov.domain_get(&actor, &name).await?)
}

async fn domain_modify(
    ApiAdmin(st, actor): ApiAdmin,
    Path(name): Path<String>,
    b: Result<Json<DomainChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    ok(st.prov.domain_modify(&actor, &name, body(b)?).await?)
}

async fn domain_delete(
    ApiAdmin(st, actor): ApiAdmin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    st.prov.domain_delete(&actor, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_status() {
        let s = |e: ProvError| ApiError::from(e).status;
        assert_eq!(s(ProvError::NotFound("a".into())), StatusCode::NOT_FOUND);
        assert_eq!(s(ProvError::Exists("a".into())), StatusCode::CONFLICT);
        assert_eq!(s(ProvError::Denied("a".into())), StatusCode::FORBIDDEN);
        assert_eq!(
            s(ProvError::Limit("a".into())),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(s(ProvError::Invalid("a".into())), StatusCode::BAD_REQUEST);
        assert_eq!(
            s(ProvError::Temporary("a".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let e = ApiError::from(ProvError::Other(anyhow::anyhow!("secret path /x")));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("/x"));
    }

    #[test]
    fn basic_credentials_are_read_and_bounded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("a@x.test:p:w"))).unwrap(),
        );
        let (l, p) = basic(&h).unwrap();
        assert_eq!((l.as_str(), p.expose()), ("a@x.test", "p:w"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", "A".repeat(20_000))).unwrap(),
        );
        assert!(basic(&h).is_none());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(basic(&h).is_none());
    }

    #[test]
    fn webmail_sessions_are_no_console_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::test_services(dir.path(), |_| {});
        let st = state(&services).unwrap();
        let cookie = |s: &Session| {
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{COOKIE}={}", st.sealer.seal(s))).unwrap(),
            );
            h
        };
        // A webmail session sealed under the console's key still lacks
        // the mark.
        let webmail = Session::new("a@x.test", "store1", session::now());
        assert!(cookie_session(&services, &st, &cookie(&webmail)).is_err());
        let admin = Session::new("a@x.test", MARK, session::now());
        assert_eq!(
            cookie_session(&services, &st, &cookie(&admin)).unwrap(),
            Some(admin.clone())
        );
        // The webmail's key does not open a console cookie.
        let mem = crate::mem::state(&services).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={}", mem.sealer.seal(&admin))).unwrap(),
        );
        assert!(cookie_session(&services, &st, &h).is_err());
        end_session(&services, &st, &admin);
        assert!(cookie_session(&services, &st, &cookie(&admin)).is_err());
    }
}
