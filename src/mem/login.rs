//! The webmail's pages around the session: the login form, login, logout,
//! `/session-info` (the CSRF token for the page's script), the page itself.
//!
//! Login runs the one login sequence (`crate::login`, with the process's
//! failed-login limits) and refuses a password sent in plaintext from
//! anywhere but loopback. The form is protected against login CSRF by a
//! pre-session token: `GET /login` sets it in a `SameSite=Strict` cookie
//! (`msgd_login`, path /login) and in a hidden field, `POST /login` needs
//! both and equal, and an `Origin` header, when sent, naming this host.
//! The pages are server-rendered HTML with no script at all.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use tracing::info;

use super::proxy::StoreSession;
use super::session::{self, Refusal, Session};
use crate::login::{Accounts, Credentials, Outcome, Protocol, Rules, Serves};
use crate::net::ConnInfo;
use crate::services::Services;

const LOGIN_COOKIE: &str = "msgd_login";
const STYLE: &str = "/static/login.css";

/// HTML-escapes text for an element or a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t}</title><link rel=\"stylesheet\" href=\"{STYLE}\"></head>\
<body><main class=\"login\"><h1>{t}</h1>{body}</main></body></html>\n",
        t = escape(title)
    )
}

/// An error page (store down, login refused for a reason the user cannot
/// fix by typing again).
pub fn error_page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<p class=\"error\">{}</p><p><a href=\"/\">Back to the webmail</a></p>",
        escape(text)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html_page(title, &body),
    )
        .into_response()
}

fn conn(req_ext: &axum::http::Extensions) -> Option<&ConnInfo> {
    req_ext.get::<ConnInfo>()
}

/// The login form with a fresh pre-session token (and an error line).
fn form_response(status: StatusCode, error: Option<&str>, user: &str, tls: bool) -> Response {
    let token = session::random_token();
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
<label for=\"user\">User name</label>\
<input id=\"user\" name=\"user\" type=\"text\" autocomplete=\"username\" autofocus required value=\"{user}\">\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Log in</button></form>",
        user = escape(user)
    );
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/login; Max-Age=3600; HttpOnly; SameSite=Strict{}",
        if tls { "; Secure" } else { "" }
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::SET_COOKIE, cookie),
        ],
        html_page("Log in to webmail", &body),
    )
        .into_response()
}

/// To the login form, dropping the cookie of a session that has ended.
fn ended_redirect(tls: bool) -> Response {
    let mut r = redirect("/login");
    r.headers_mut().append(
        header::SET_COOKIE,
        session::clear_cookie(session::COOKIE, "/", tls),
    );
    r
}

fn redirect(to: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, to), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response()
}

/// `GET /`: the webmail page to a logged-in user, else the login form.
pub async fn page(State(services): State<Services>, req: Request) -> Response {
    match session::from_headers(&services, req.headers(), req.method()) {
        Ok(Some(s)) => {
            // A session a logout on another mem ended goes to the login
            // form; a store that does not answer gets the page, whose API
            // calls then show the 503 (the page holds no secret).
            if super::proxy::session_state(&services, &s).await == StoreSession::Ended {
                return ended_redirect(session::secure(req.extensions()));
            }
            let mut r = super::assets::response("index.html");
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        // An expired, forged or ended session's cookie goes too.
        Err(Refusal::NoSession) => ended_redirect(session::secure(req.extensions())),
        _ => redirect("/login"),
    }
}

/// `GET /static/{path}`: an embedded file of the page (no session needed:
/// the login form uses its style sheet).
pub async fn asset(Path(path): Path<String>) -> Response {
    super::assets::response(&path)
}

/// `GET /login`.
pub async fn form(State(services): State<Services>, req: Request) -> Response {
    if let Ok(Some(_)) = session::from_headers(&services, req.headers(), req.method()) {
        return redirect("/");
    }
    form_response(StatusCode::OK, None, "", session::secure(req.extensions()))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// The Origin header, when sent, names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
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

/// `POST /login`.
pub async fn submit(
    State(services): State<Services>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(f): Form<LoginForm>,
) -> Response {
    let tls = session::secure(&ext);
    let Some(conn) = conn(&ext) else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "No connection.");
    };
    if !conn.tls_active && !conn.is_loopback() {
        info!(from = %conn.peer, "webmail login refused: password over plaintext HTTP");
        return error_page(
            StatusCode::FORBIDDEN,
            "Use HTTPS",
            "Passwords are only accepted over HTTPS. Open this page with https://.",
        );
    }
    let token_ok = session::cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|c| !f.csrf.is_empty() && session::same_token(c, &f.csrf));
    if !token_ok || !same_origin(&headers) {
        return form_response(
            StatusCode::FORBIDDEN,
            Some("The login form expired. Please try again."),
            "",
            tls,
        );
    }
    if f.user.is_empty() || f.user.len() > 320 || f.password.len() > 1024 {
        return form_response(
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
            "",
            tls,
        );
    }
    let config = &services.config;
    let accounts = Accounts::of(services.directory.clone(), &config.server.domain);
    let rules = Rules {
        protocol: Protocol::Webmail,
        config,
        login_networks: &[],
        proxy_users: &[],
        limiter: &services.logins,
        accounts: &accounts,
        serves: match &services.store {
            Some(store) => Serves::Store(Some(store)),
            None => Serves::Nothing,
        },
    };
    let typed: String = f.user.chars().take(320).collect();
    let outcome =
        crate::login::login(&rules, conn, Credentials::password(&f.user, &f.password)).await;
    let account =
        match outcome {
            Outcome::Ok(l) => l.account,
            Outcome::Failed | Outcome::Inactive | Outcome::NotAuthorized(_) => {
                return form_response(
                    StatusCode::UNAUTHORIZED,
                    Some("Wrong user name or password."),
                    &typed,
                    tls,
                )
            }
            Outcome::RateLimited => {
                return form_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some("Too many failed logins. Please wait a while and try again."),
                    &typed,
                    tls,
                )
            }
            Outcome::WrongStore { .. } => return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Mailbox elsewhere",
                "Your mailbox is on another server. Log in through your site's webmail address.",
            ),
            Outcome::Unavailable(_) => return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Webmail unavailable",
                "The mail service is temporarily unavailable. Please try again in a few minutes.",
            ),
        };
    let mail_host = match (&account.mail_host, &services.store) {
        (Some(h), _) if !h.is_empty() => h.clone(),
        (_, Some(_)) => String::new(),
        (_, None) if !config.mem.default_store.is_empty() => config.mem.default_store.clone(),
        (_, None) => {
            tracing::warn!(user = %account.address, "webmail login for a user without mailHost (mem.default_store is empty)");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Webmail unavailable",
                "No mailbox is configured for this account.",
            );
        }
    };
    info!(user = %account.address, mail_host = %mail_host, from = %conn.peer, "webmail login");
    let s = Session::new(&account.address, &mail_host, session::now());
    let Some(cookie) = session::set_cookie(&services, &s, tls) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Webmail unavailable",
            "The session could not be created.",
        );
    };
    let mut r = redirect("/");
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, cookie);
    h.append(
        header::SET_COOKIE,
        session::clear_cookie(LOGIN_COOKIE, "/login", tls),
    );
    r
}

#[derive(Deserialize, Default)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: the session's CSRF token in `X-CSRF-Token` or a form
/// field `csrf`. Clears the cookie and revokes the session here.
pub async fn logout(
    State(services): State<Services>,
    mut headers: HeaderMap,
    ext: axum::http::Extensions,
    form: Result<Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let tls = session::secure(&ext);
    if let Ok(Form(f)) = form {
        if !headers.contains_key(session::CSRF_HEADER) && !f.csrf.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&f.csrf) {
                headers.insert(session::CSRF_HEADER, v);
            }
        }
    }
    match session::from_headers(&services, &headers, &axum::http::Method::POST) {
        Err(Refusal::Csrf) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "Not logged out",
                "The request did not come from the webmail page.",
            )
        }
        Ok(Some(s)) => {
            if let Ok(state) = super::state(&services) {
                state.sealer.revoke(&s, services.config.mem.session_max);
            }
            // Every other mem refuses the cookie once the store has it.
            let everywhere = super::proxy::end_session(&services, &s).await;
            info!(user = %s.user, everywhere, "webmail logout");
        }
        Ok(None) | Err(Refusal::NoSession) => {}
    }
    let mut r = redirect("/login");
    r.headers_mut().append(
        header::SET_COOKIE,
        session::clear_cookie(session::COOKIE, "/", tls),
    );
    r
}

/// `GET /session-info`: for the page's script, which cannot read the
/// HttpOnly cookie: the user, the CSRF token and the JMAP URLs.
pub async fn session_info(State(services): State<Services>, req: Request) -> Response {
    let found = match session::from_headers(&services, req.headers(), req.method()) {
        Ok(Some(s)) => Some(s),
        _ => None,
    };
    // The CSRF token goes out only for a session the store confirms no
    // logout ended.
    if let Some(s) = &found {
        match super::proxy::session_state(&services, s).await {
            StoreSession::Live => {}
            StoreSession::Ended => {
                let mut r = super::proxy::problem(
                    StatusCode::UNAUTHORIZED,
                    "about:blank",
                    "The session has ended",
                );
                r.headers_mut().append(
                    header::SET_COOKIE,
                    session::clear_cookie(session::COOKIE, "/", session::secure(req.extensions())),
                );
                return r;
            }
            StoreSession::Unknown => {
                let mut r = super::proxy::problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "about:blank",
                    "The mail store is not answering; try again later.",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                return r;
            }
        }
    }
    match found {
        Some(s) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({
                "user": s.user,
                "csrfToken": s.csrf,
                "sessionUrl": "/jmap/session",
                "apiUrl": "/jmap/api",
                "eventSourceUrl": "/jmap/eventsource",
                "loginTime": s.login,
                "idleTimeout": services.config.mem.session_idle,
                "expires": s.login.saturating_add(services.config.mem.session_max),
            })),
        )
            .into_response(),
        None => super::proxy::problem(StatusCode::UNAUTHORIZED, "about:blank", "Not logged in"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn origin_must_name_the_host_when_sent() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("mail.example.com"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://mail.example.com"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn pages_carry_no_inline_script() {
        let body = html_page("T", "<p>x</p>");
        assert!(!body.contains("<script"));
        assert!(body.contains(STYLE));
    }
}
