//! Who a JMAP request is for. In order:
//! 1. all-in-one (`services.web.mem`): the webmail's session cookie
//!    (`crate::mem::session::user_from_cookie`);
//! 2. `Authorization: Bearer` — a token a mem issued for a user
//!    (`crate::http::token`), accepted only from `http.token_networks`
//!    (empty: loopback only);
//! 3. `Authorization: Basic` — login and password through the shared
//!    login sequence (`crate::login`, its failure limits included), only
//!    over TLS or from loopback.
//!
//! A bearer token or cookie naming a webmail session that a logout ended
//! (on any mem: the store keeps the ended ids, `Store::revoke_session`)
//! is refused with 401 and `WWW-Authenticate: Bearer error="invalid_token",
//! error_description="session ended"` ([`SESSION_ENDED`]), which tells the
//! mem to drop the cookie. The mems reach the store's record through two
//! routes of their own, bearer-authenticated like the API
//! (`session_routes`): `POST /msgd/session/revoke?until=<unix seconds>`
//! (logout) and `GET /msgd/session/check` (204 live, 401 ended).
//!
//! Whatever the scheme, the user must be an active account whose mailHost
//! is this store (as for IMAP logins). Refusals are problem details: 401
//! with `WWW-Authenticate: Basic realm="msgd"` when credentials are
//! missing or wrong, 403 when they cannot be accepted here, 503 when the
//! directory cannot answer. Passwords and tokens are never logged.

use axum::http::{header, HeaderMap, Method, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tracing::{info, warn};

use super::error::Problem;
use crate::directory::Recipient;
use crate::net::ConnInfo;
use crate::services::Services;

pub const REALM: &str = "Basic realm=\"msgd\", charset=\"UTF-8\"";
/// The challenge of a 401 for a session a logout ended (the mem looks for
/// it to drop the cookie).
pub const SESSION_ENDED: &str =
    "Bearer realm=\"msgd\", error=\"invalid_token\", error_description=\"session ended\"";

fn session_ended() -> Problem {
    let mut p = Problem::new(
        StatusCode::UNAUTHORIZED,
        AUTH_TYPE,
        "the session has ended; log in again",
    );
    p.www_authenticate = Some(SESSION_ENDED.to_string());
    p
}

/// Refuses a webmail session a logout ended (on any mem).
async fn check_session(services: &Services, session: Option<&str>) -> Result<(), Problem> {
    let (Some(id), Some(store)) = (session, services.store.as_ref()) else {
        return Ok(());
    };
    match store.session_revoked(id).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(session_ended()),
        Err(e) => {
            warn!(error = %e, "jmap: cannot read the revoked sessions");
            Err(unavailable("the store is not available"))
        }
    }
}
const AUTH_TYPE: &str = "about:blank";

fn unauthorized(detail: &str) -> Problem {
    let mut p = Problem::new(StatusCode::UNAUTHORIZED, AUTH_TYPE, detail);
    p.www_authenticate = Some(REALM.to_string());
    p
}

fn forbidden(detail: &str) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, AUTH_TYPE, detail)
}

fn unavailable(detail: &str) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, AUTH_TYPE, detail)
}

/// The scheme a request's credentials use, decided from the headers and
/// the connection alone (no directory): what `authenticate` then checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Basic { login: String, password: String },
    Bearer(String),
    None,
}

/// Parses the Authorization header, and refuses what the connection does
/// not allow: Basic without TLS from elsewhere than loopback, a bearer
/// token from outside `token_networks`.
pub fn presented(
    headers: &HeaderMap,
    info: &ConnInfo,
    token_networks: &[crate::netaddr::Network],
) -> Result<Presented, Problem> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(Presented::None);
    };
    let v = v
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        if !info.tls_active && !info.is_loopback() {
            return Err(forbidden(
                "Basic authentication is only accepted over TLS (use https)",
            ));
        }
        let raw = STANDARD
            .decode(rest)
            .map_err(|_| unauthorized("malformed Basic credentials"))?;
        let s = String::from_utf8(raw).map_err(|_| unauthorized("malformed Basic credentials"))?;
        let (login, password) = s
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        if login.is_empty() || login.len() > 320 || password.len() > 1024 {
            return Err(unauthorized("malformed Basic credentials"));
        }
        return Ok(Presented::Basic {
            login: login.to_string(),
            password: password.to_string(),
        });
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        if !from_trusted(info, token_networks) {
            return Err(forbidden(
                "bearer tokens are accepted only from the webmail front ends",
            ));
        }
        return Ok(Presented::Bearer(rest.to_string()));
    }
    Err(unauthorized("unsupported authentication scheme"))
}

/// The client comes from `networks` (empty: loopback only): a mem,
/// whose bearer tokens and X-Forwarded-* headers are trusted. The client
/// address is the one a trusted PROXY header gave, so a client behind a
/// load balancer is judged by its own address, never the balancer's; for
/// loopback both the client and the TCP peer must be loopback.
pub fn from_trusted(info: &ConnInfo, networks: &[crate::netaddr::Network]) -> bool {
    let ip = info.peer.ip().to_canonical();
    if networks.is_empty() {
        ip.is_loopback() && info.connected_ip().to_canonical().is_loopback()
    } else {
        networks.iter().any(|n| n.contains(ip))
    }
}

/// How long a client waits before retrying a request of a user being
/// moved to another store (the move's hold is short; the directory caches
/// then name the new store).
const MOVING_RETRY_AFTER: u32 = 30;

/// The user a request is for, or the problem to answer. A user being
/// moved away from this store (`store::moving`) gets 503 + Retry-After
/// (`local_user`): API, blob and event source requests all come through
/// here.
pub async fn authenticate(
    services: &Services,
    info: &ConnInfo,
    headers: &HeaderMap,
    method: &Method,
) -> Result<String, Problem> {
    let cfg = &services.config.http;
    if services.web.mem {
        match crate::mem::session::from_headers(services, headers, method) {
            Ok(Some(s)) => {
                check_session(services, Some(&s.id)).await?;
                return local_user(services, &s.user).await;
            }
            Ok(None) => {}
            Err(crate::mem::session::Refusal::NoSession) => {
                return Err(unauthorized("the session has ended; log in again"))
            }
            Err(crate::mem::session::Refusal::Csrf) => {
                return Err(forbidden("missing or wrong CSRF token"))
            }
        }
    }
    match presented(headers, info, &cfg.token_networks)? {
        Presented::None => Err(unauthorized("authentication required")),
        Presented::Bearer(token) => {
            let Some(key) = services.web.jmap.token_key(&services.config) else {
                return Err(unavailable("bearer tokens are not available"));
            };
            match key.verify(&token) {
                Some(v) => {
                    check_session(services, v.session.as_deref()).await?;
                    local_user(services, &v.user).await
                }
                None => {
                    info!(from = %info.connected_ip(), "jmap: invalid or expired bearer token");
                    Err(unauthorized("invalid or expired token"))
                }
            }
        }
        Presented::Basic { login, password } => basic(services, info, &login, &password).await,
    }
}

/// The routes a mem uses to end a session everywhere and to ask whether
/// one was ended (see the module doc).
pub fn session_routes() -> axum::Router<Services> {
    axum::Router::new()
        .route("/msgd/session/revoke", axum::routing::post(revoke))
        .route("/msgd/session/check", axum::routing::get(check))
}

/// The webmail session of a mem's bearer token (not checked against the
/// revoked ones).
fn bearer_session(
    services: &Services,
    info: &ConnInfo,
    headers: &HeaderMap,
) -> Result<crate::http::token::Verified, Problem> {
    let Presented::Bearer(token) = presented(headers, info, &services.config.http.token_networks)?
    else {
        return Err(unauthorized("a mem's bearer token is required"));
    };
    let Some(key) = services.web.jmap.token_key(&services.config) else {
        return Err(unavailable("bearer tokens are not available"));
    };
    match key.verify(&token) {
        Some(v) if v.session.is_some() => Ok(v),
        _ => Err(unauthorized("invalid or expired token")),
    }
}

#[derive(serde::Deserialize)]
struct RevokeQuery {
    until: i64,
}

/// `POST /msgd/session/revoke?until=<unix seconds>`: ends the token's
/// session on every mem; answered once durable.
async fn revoke(
    axum::extract::State(services): axum::extract::State<Services>,
    axum::Extension(info): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<RevokeQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let v = match bearer_session(&services, &info, &headers) {
        Ok(v) => v,
        Err(p) => return p.into_response(),
    };
    let Some(store) = services.store.as_ref() else {
        return unavailable("no store here").into_response();
    };
    let id = v.session.as_deref().unwrap_or_default();
    match store.revoke_session(id, q.until).await {
        Ok(()) => {
            info!(user = %v.user, "webmail session ended by logout");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            warn!(error = %e, "cannot record a webmail logout");
            unavailable("the store is not available").into_response()
        }
    }
}

/// `GET /msgd/session/check`: 204 while the token's session is live, 401
/// ([`SESSION_ENDED`]) once a logout ended it.
async fn check(
    axum::extract::State(services): axum::extract::State<Services>,
    axum::Extension(info): axum::Extension<ConnInfo>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let v = match bearer_session(&services, &info, &headers) {
        Ok(v) => v,
        Err(p) => return p.into_response(),
    };
    match check_session(&services, v.session.as_deref()).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(p) => p.into_response(),
    }
}

async fn basic(
    services: &Services,
    info: &ConnInfo,
    login: &str,
    password: &str,
) -> Result<String, Problem> {
    use crate::login::{Outcome, Rules, Serves};
    let accounts =
        crate::login::Accounts::of(services.directory.clone(), &services.config.server.domain);
    let rules = Rules {
        protocol: crate::login::Protocol::Jmap,
        config: &services.config,
        login_networks: &[],
        proxy_users: &[],
        limiter: &services.logins,
        accounts: &accounts,
        serves: Serves::Store(services.store.as_ref()),
    };
    let creds = crate::login::Credentials::password(login, password);
    match crate::login::login(&rules, info, creds).await {
        Outcome::Ok(l) => Ok(l.account.address),
        Outcome::Failed | Outcome::RateLimited | Outcome::Inactive => {
            Err(unauthorized("wrong user name or password"))
        }
        Outcome::NotAuthorized(_) => Err(forbidden("not authorized")),
        // login() answers a user being moved away as WrongStore too.
        Outcome::WrongStore { .. } if moving(services, login) => Err(moving_problem()),
        Outcome::WrongStore { .. } => Err(forbidden(
            "this account lives on another store; use the webmail front end",
        )),
        Outcome::Unavailable(_) => Err(unavailable("the directory is not available; try again")),
    }
}

/// Whether `user` is being moved away from this store (`store::moving`).
fn moving(services: &Services, user: &str) -> bool {
    let held = services
        .store
        .as_ref()
        .is_some_and(|s| s.moving().deferred(user).is_some());
    if held {
        info!(
            user,
            "jmap: request of a user being moved between stores deferred"
        );
    }
    held
}

fn moving_problem() -> Problem {
    let mut p = unavailable("the account is being moved to another server; try again later");
    p.retry_after = Some(MOVING_RETRY_AFTER);
    p
}

/// A user named by a token or session: must exist, be active, and live
/// on this store; their mailboxes are created if new.
async fn local_user(services: &Services, user: &str) -> Result<String, Problem> {
    let account = match services.directory.lookup(user).await {
        Ok(Some(Recipient::User(a))) => a,
        Ok(_) => return Err(unauthorized("no such user")),
        Err(e) => {
            warn!(error = %e, "jmap: directory unavailable");
            return Err(unavailable("the directory is not available; try again"));
        }
    };
    if !account.active {
        return Err(forbidden("account disabled"));
    }
    // Being moved away, or just moved (directory caches may still name
    // this store): try again later, before "another store" and before
    // anything is created here for the user.
    if moving(services, &account.address) {
        return Err(moving_problem());
    }
    if !crate::deliver::is_own_store(&services.config, account.mail_host.as_deref()) {
        return Err(forbidden("this account lives on another store"));
    }
    let Some(store) = services.store.as_ref() else {
        return Err(unavailable("no store here"));
    };
    if let Err(e) = store
        .ensure_user(&account.address, account.partition.as_deref())
        .await
    {
        warn!(error = %e, "jmap: cannot create the user's mailboxes");
        return Err(unavailable("the store is not available"));
    }
    Ok(account.address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;

    fn conn(peer: &str, tls: bool) -> ConnInfo {
        let mut c = ConnInfo::for_test(Protocol::Http);
        c.peer = peer.parse().unwrap();
        c.local = "127.0.0.1:8080".parse().unwrap();
        c.tls_active = tls;
        c
    }

    fn basic_header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(v)).parse().unwrap(),
        );
        h
    }

    #[test]
    fn basic_only_over_tls_or_from_loopback() {
        let h = basic_header("alice:pw");
        let want = Presented::Basic {
            login: "alice".into(),
            password: "pw".into(),
        };
        assert_eq!(
            presented(&h, &conn("127.0.0.1:5000", false), &[]).unwrap(),
            want
        );
        assert_eq!(
            presented(&h, &conn("192.0.2.7:5000", true), &[]).unwrap(),
            want
        );
        let e = presented(&h, &conn("192.0.2.7:5000", false), &[]).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.detail.contains("TLS"));
    }

    #[test]
    fn bearer_only_from_token_networks() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(
            presented(&h, &conn("127.0.0.1:5000", false), &[]).unwrap(),
            Presented::Bearer("abc".into())
        );
        assert_eq!(
            presented(&h, &conn("192.0.2.7:5000", true), &[])
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        let nets = vec!["192.0.2.0/24".parse().unwrap()];
        assert!(presented(&h, &conn("192.0.2.7:5000", false), &nets).is_ok());
        assert!(presented(&h, &conn("127.0.0.1:5000", false), &nets).is_err());
        // A client behind a load balancer on loopback is not loopback.
        let mut behind = conn("198.51.100.9:5000", false);
        behind.via = Some("127.0.0.1:6000".parse().unwrap());
        assert!(presented(&h, &behind, &[]).is_err());
        let mut mem_behind_lb = conn("192.0.2.7:5000", false);
        mem_behind_lb.via = Some("203.0.113.1:6000".parse().unwrap());
        assert!(presented(&h, &mem_behind_lb, &nets).is_ok());
    }

    #[test]
    fn missing_or_odd_credentials_get_401_with_challenge() {
        let h = basic_header("no-colon");
        let e = presented(&h, &conn("127.0.0.1:1", false), &[]).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.www_authenticate.as_deref(), Some(REALM));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
        assert!(presented(&h, &conn("127.0.0.1:1", false), &[]).is_err());
        assert_eq!(
            presented(&HeaderMap::new(), &conn("127.0.0.1:1", false), &[]).unwrap(),
            Presented::None
        );
    }

    #[tokio::test]
    async fn basic_login_checks_the_directory_password() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let e = authenticate(
            &s,
            &conn("127.0.0.1:1", false),
            &basic_header("nobody:x"),
            &Method::POST,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }
}
