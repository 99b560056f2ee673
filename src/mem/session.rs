//! The webmail's login sessions: sealed cookies, expiry, CSRF.
//!
//! A session lives only in its cookie (`msgd_session`): the mem keeps no
//! table, so any mem holding the same `mem.session_key_file` accepts a
//! session another made. The cookie is `v1.` + base64url(nonce ‖
//! AES-256-GCM(JSON of [`Session`])), sealed under that key with a fixed
//! associated-data label; a changed byte, another key or another label
//! fails to open. It carries the user, their mailHost, the login and
//! last-activity times, a session id and the CSRF token.
//!
//! Invariants:
//! - Expiry is checked at every use: `mem.session_idle` after the last
//!   activity, `mem.session_max` after the login, whatever the cookie's
//!   own Max-Age said; each accepted request renews the last-activity time
//!   (`refresh`, a middleware over every route of the process).
//! - State-changing methods (anything but GET, HEAD, OPTIONS) need the
//!   session's CSRF token in `X-CSRF-Token` (compared in constant time);
//!   the cookie is `SameSite=Strict` and `HttpOnly` besides, `Secure` when
//!   the request came over TLS.
//! - Logout clears the cookie, puts its session id on this process's
//!   revocation list (in memory, until the session's absolute expiry) and
//!   has the user's store record it (`proxy::end_session`); the store
//!   refuses tokens naming an ended session, and the page and
//!   `/session-info` ask it (`proxy::session_state`), so a copy of the
//!   cookie is refused by every mem, also after restarts. Only when the
//!   store cannot be reached at logout does a copy stay usable elsewhere
//!   until its idle or absolute expiry (docs/webmail.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead;
use serde::{Deserialize, Serialize};

use crate::net::ConnInfo;
use crate::services::Services;

/// The session cookie's name.
pub const COOKIE: &str = "msgd_session";
/// The header carrying the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Longest cookie value opened (a sealed session is ~250 bytes).
const MAX_COOKIE: usize = 4096;
/// Associated data: a sealed value is only a session cookie of this format.
const AAD: &[u8] = b"msgd mem session v1";
const PREFIX: &str = "v1.";
/// Most revoked sessions remembered (expired ones go first).
const MAX_REVOKED: usize = 100_000;

/// Why a cookie-authenticated request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid session (missing, forged, expired cookie): 401.
    NoSession,
    /// A state-changing request without the session's CSRF token: 403.
    Csrf,
}

/// What a session cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The account's canonical address.
    #[serde(rename = "u")]
    pub user: String,
    /// The store serving the user (their mailHost, or `mem.default_store`);
    /// empty in all-in-one for a user without one (this process's store).
    #[serde(rename = "h")]
    pub mail_host: String,
    /// Unix seconds of the login.
    #[serde(rename = "l")]
    pub login: u64,
    /// Unix seconds of the last request.
    #[serde(rename = "a")]
    pub last: u64,
    /// Random id, for revocation at logout.
    #[serde(rename = "i")]
    pub id: String,
    /// Random token every state-changing request must echo.
    #[serde(rename = "c")]
    pub csrf: String,
}

impl Session {
    /// A new session for `user` at `now`.
    pub fn new(user: &str, mail_host: &str, now: u64) -> Session {
        Session {
            user: user.to_string(),
            mail_host: mail_host.to_string(),
            login: now,
            last: now,
            id: random_token(),
            csrf: random_token(),
        }
    }

    /// Still valid at `now` under these limits?
    pub fn live(&self, now: u64, idle: u64, max: u64) -> bool {
        now <= self.last.saturating_add(idle)
            && now <= self.login.saturating_add(max)
            // A cookie from the future was not made by a mem in sync.
            && self.login <= now.saturating_add(300)
    }
}

/// 16 random bytes, base64url.
pub fn random_token() -> String {
    let b: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(b)
}

/// Seals and opens session cookies; remembers this process's logouts.
pub struct Sealer {
    key: aead::LessSafeKey,
    revoked: Mutex<HashMap<String, u64>>,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key).expect("32-byte key");
        Sealer {
            key: aead::LessSafeKey::new(unbound),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    pub fn seal(&self, s: &Session) -> String {
        let nonce_bytes: [u8; 12] = rand::random();
        let mut data = serde_json::to_vec(s).expect("session serializes");
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce_bytes),
                aead::Aad::from(AAD),
                &mut data,
            )
            .expect("seal");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The session in a cookie value; None when it is not one this key
    /// sealed (forged, modified, truncated, another key).
    pub fn open(&self, value: &str) -> Option<Session> {
        if value.len() > MAX_COOKIE {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value.strip_prefix(PREFIX)?).ok()?;
        if raw.len() < 12 + aead::AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, sealed) = raw.split_at(12);
        let mut sealed = sealed.to_vec();
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(AAD), &mut sealed)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }

    /// Ends `s` on this process (logout).
    pub fn revoke(&self, s: &Session, max: u64) {
        let until = s.login.saturating_add(max);
        let now = now();
        let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() >= MAX_REVOKED {
            r.retain(|_, until| *until >= now);
        }
        if r.len() < MAX_REVOKED {
            r.insert(s.id.clone(), until);
        }
    }

    pub fn is_revoked(&self, s: &Session) -> bool {
        let r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        r.contains_key(&s.id)
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Equal strings, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The session a request carries: `Ok(None)` without a session cookie,
/// `Err(NoSession)` for one that is invalid, expired or revoked,
/// `Err(Csrf)` for a state-changing method without its CSRF token.
pub fn from_headers(
    services: &Services,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Option<Session>, Refusal> {
    let Some(value) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let Ok(state) = super::state(services) else {
        return Err(Refusal::NoSession);
    };
    let m = &services.config.mem;
    let s = state
        .sealer
        .open(value)
        .filter(|s| s.live(now(), m.session_idle, m.session_max))
        .filter(|s| !state.sealer.is_revoked(s))
        .ok_or(Refusal::NoSession)?;
    if changes_state(method) {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_token(sent, &s.csrf) {
            return Err(Refusal::Csrf);
        }
    }
    Ok(Some(s))
}

/// The user of the webmail session a request carries, for the store's
/// JMAP routes when the mem runs in the same process (all-in-one):
/// `Ok(None)` when the request has no session cookie at all (the caller
/// then tries its other authentication schemes), `Ok(Some(user))` for a
/// valid session whose CSRF token matches (state-changing methods), and
/// `Err` for a cookie that is present but not acceptable.
pub fn user_from_cookie(
    services: &Services,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Option<String>, Refusal> {
    Ok(from_headers(services, headers, method)?.map(|s| s.user))
}

/// The `Set-Cookie` value carrying `s`.
pub fn set_cookie(services: &Services, s: &Session, secure: bool) -> Option<HeaderValue> {
    let state = super::state(services).ok()?;
    let max_age = services.config.mem.session_max;
    let v = format!(
        "{COOKIE}={}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        state.sealer.seal(s),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).ok()
}

/// The `Set-Cookie` value removing cookie `name` at `path`.
pub fn clear_cookie(name: &str, path: &str, secure: bool) -> HeaderValue {
    let v = format!(
        "{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).expect("cookie header")
}

/// The request came over TLS (the cookie gets `Secure`).
pub fn secure(headers_ext: &axum::http::Extensions) -> bool {
    headers_ext.get::<ConnInfo>().is_some_and(|c| c.tls_active)
}

/// The headers every response of a webmail process carries.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: https:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'";

/// Middleware over every route of a process running the mem role: the
/// security headers on every response, and the session cookie renewed
/// (new last-activity time) on every request that carried a live one,
/// unless the handler set a cookie itself (login, logout).
pub async fn refresh(State(services): State<Services>, req: Request, next: Next) -> Response {
    let live = cookie(req.headers(), COOKIE).and_then(|_| {
        from_headers(&services, req.headers(), &Method::GET)
            .ok()
            .flatten()
    });
    let tls = secure(req.extensions());
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        // Not no-referrer: under it browsers send `Origin: null` with the
        // login form's POST, which the same-origin check must refuse.
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ] {
        if !h.contains_key(name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    // A refused request (CSRF) is no activity of the user's.
    let refused = matches!(resp.status().as_u16(), 401 | 403);
    let h = resp.headers_mut();
    if let Some(mut s) = live.filter(|_| !refused) {
        if !h.contains_key(header::SET_COOKIE) {
            s.last = now().max(s.last);
            if let Some(v) = set_cookie(&services, &s, tls) {
                h.insert(header::SET_COOKIE, v);
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&[9u8; 32])
    }

    #[test]
    fn sealed_sessions_open_with_the_same_key_only() {
        let s = Session::new("alice@example.com", "store1", 1000);
        let c = sealer().seal(&s);
        // another mem with the same key
        assert_eq!(sealer().open(&c), Some(s.clone()));
        assert_eq!(Sealer::new(&[8u8; 32]).open(&c), None);
        assert!(c.len() < 400, "{}", c.len());
    }

    #[test]
    fn forged_or_modified_cookies_do_not_open() {
        let k = sealer();
        let c = k.seal(&Session::new("alice@example.com", "store1", 1000));
        let raw = URL_SAFE_NO_PAD.decode(&c[3..]).unwrap();
        for i in 0..raw.len() {
            let mut m = raw.clone();
            m[i] ^= 1;
            let forged = format!("v1.{}", URL_SAFE_NO_PAD.encode(&m));
            assert_eq!(k.open(&forged), None, "byte {i}");
        }
        assert_eq!(k.open(&c[..c.len() - 2]), None);
        assert_eq!(k.open(""), None);
        assert_eq!(k.open("v1."), None);
        assert_eq!(k.open(&c.replacen("v1.", "v2.", 1)), None);
        assert_eq!(k.open(&"v1.A".repeat(2000)), None);
        // plain JSON is no session
        let json = serde_json::to_vec(&Session::new("bob", "h", 1)).unwrap();
        assert_eq!(
            k.open(&format!("v1.{}", URL_SAFE_NO_PAD.encode(json))),
            None
        );
    }

    #[test]
    fn sessions_expire_when_idle_and_at_the_absolute_limit() {
        let mut s = Session::new("a", "h", 1000);
        assert!(s.live(1000 + 60, 60, 3600));
        assert!(!s.live(1000 + 61, 60, 3600));
        s.last = 1000 + 3500;
        assert!(s.live(1000 + 3550, 60, 3600));
        assert!(!s.live(1000 + 3601, 60, 3600));
        // minted in the future
        assert!(!Session::new("a", "h", 10_000).live(1000, 60, 3600));
    }

    #[test]
    fn revoked_sessions_are_remembered() {
        let k = sealer();
        let s = Session::new("a", "h", now());
        assert!(!k.is_revoked(&s));
        k.revoke(&s, 3600);
        assert!(k.is_revoked(&s));
        assert!(!k.is_revoked(&Session::new("a", "h", now())));
    }

    #[test]
    fn cookies_are_found_among_others_and_tokens_compared() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; msgd_session=v1.x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("v1.x"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "msgd"), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn state_changing_methods_need_the_csrf_token() {
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::test_services(dir.path(), |_| {});
        let state = crate::mem::state(&services).unwrap();
        let s = Session::new("alice@localhost", "", now());
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={}", state.sealer.seal(&s))).unwrap(),
        );
        assert_eq!(
            user_from_cookie(&services, &h, &Method::GET),
            Ok(Some("alice@localhost".into()))
        );
        assert_eq!(
            user_from_cookie(&services, &h, &Method::POST),
            Err(Refusal::Csrf)
        );
        h.insert(CSRF_HEADER, HeaderValue::from_static("wrong"));
        assert_eq!(
            user_from_cookie(&services, &h, &Method::POST),
            Err(Refusal::Csrf)
        );
        h.insert(CSRF_HEADER, HeaderValue::from_str(&s.csrf).unwrap());
        assert_eq!(
            user_from_cookie(&services, &h, &Method::POST),
            Ok(Some("alice@localhost".into()))
        );
        state.sealer.revoke(&s, 3600);
        assert_eq!(
            user_from_cookie(&services, &h, &Method::GET),
            Err(Refusal::NoSession)
        );
        assert_eq!(
            user_from_cookie(&services, &HeaderMap::new(), &Method::POST),
            Ok(None)
        );
    }
}
