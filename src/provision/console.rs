//! The administration console: HTML pages under `/admin/` on the console
//! listener, rendered on the server (maud escapes every value), over the
//! same `Provisioner` and session as the HTTP API (`super::api`).
//!
//! Pages: login; users (search, paging), a new user, a user (edit, usage,
//! password reset, delete); groups (list, new, edit, delete); domains
//! (list; a site administrator edits and adds them, a domain
//! administrator only reads theirs).
//!
//! Invariants:
//! - Real forms with labels and buttons: every action works with a
//!   keyboard and without script. The one script (`console.js`, a file:
//!   the CSP forbids inline script) only asks for confirmation before a
//!   deletion and moves focus to an error.
//! - Every POST carries the session's CSRF token in a hidden field and an
//!   `Origin`, when sent, naming this host; the login form has a
//!   pre-session token (cookie `msgd_console_login` + field), as the
//!   webmail's.
//! - After a change the browser is redirected (POST → 303 → GET), with a
//!   fixed notice code in the query string, never text from the request.

use std::sync::Arc;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::api::{self, ApiError, ConsoleState};
use super::{Actor, Domain, DomainChange, Group, GroupChange, Query, User, UserChange, MAX_PAGE};
use crate::directory::EntryStatus;
use crate::mem::session::{self, Session};
use crate::redact::Secret;
use crate::services::Services;

/// The login form's pre-session token cookie.
const LOGIN_COOKIE: &str = "msgd_console_login";
/// Rows of a listing page.
const PAGE: usize = 50;
const MIB: u64 = 1024 * 1024;

pub fn routes() -> Router<Services> {
    Router::new()
        .route("/admin", get(|| async { redirect("/admin/users") }))
        .route("/admin/", get(|| async { redirect("/admin/users") }))
        .route("/admin/static/{file}", get(asset))
        // Browsers ask for it; the console has none.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/admin/login", get(login_form).post(login_submit))
        .route("/admin/logout", post(logout))
        .route("/admin/users", get(users).post(user_create))
        .route("/admin/users/new", get(user_new))
        .route("/admin/users/{address}", get(user_page).post(user_save))
        .route("/admin/users/{address}/password", post(user_password))
        .route("/admin/users/{address}/delete", post(user_delete))
        .route("/admin/groups", get(groups).post(group_create))
        .route("/admin/groups/new", get(group_new))
        .route("/admin/groups/{address}", get(group_page).post(group_save))
        .route("/admin/groups/{address}/delete", post(group_delete))
        .route("/admin/domains", get(domains).post(domain_create))
        .route("/admin/domains/{name}", get(domain_page).post(domain_save))
}

// ------------------------------------------------------------------------
// rendering

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

async fn asset(Path(file): Path<String>) -> Response {
    let (ty, body) = match file.as_str() {
        "console.css" => ("text/css; charset=utf-8", CSS),
        "console.js" => ("text/javascript; charset=utf-8", JS),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

fn html_response(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// A page of the console around `body`, with the navigation for a
/// logged-in administrator.
fn layout(
    title: &str,
    who: Option<(&Actor, &Session)>,
    notice: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — msgd administration" }
                link rel="stylesheet" href="/admin/static/console.css";
                script src="/admin/static/console.js" defer {}
            }
            body {
                @if let Some((actor, s)) = who {
                    header {
                        nav aria-label="Main" {
                            a href="/admin/users" { "Users" }
                            a href="/admin/groups" { "Groups" }
                            a href="/admin/domains" { "Domains" }
                        }
                        span.who {
                            (actor.id()) " ("
                            @match actor {
                                Actor::Site { .. } => "site administrator",
                                Actor::Domain { domains, .. } => { "administrator of " (domains.join(", ")) }
                            }
                            ")"
                        }
                        form method="post" action="/admin/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(n) = notice {
                        p.notice role="status" { (n) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A refusal shown as a page, with a way back.
fn error_page(who: Option<(&Actor, &Session)>, e: &ApiError, back: &str) -> Response {
    let body = html! {
        p.error role="alert" id="error" { (e.message) }
        p { a href=(back) { "Back" } }
    };
    let title = match e.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        _ => "Not done",
    };
    html_response(e.status, layout(title, who, None, body))
}

/// The text of a notice code (`?done=...`).
fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "created" => "Created.",
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "marked" => "The user is marked deleted; its mail is purged later.",
        "password" => "The password was changed.",
        "moving" => "Saved. The move to the new mail host started: the mail is copied, then the mail host changes.",
        _ => return None,
    })
}

fn mib(v: Option<u64>) -> String {
    v.map(|b| {
        if b % MIB == 0 {
            (b / MIB).to_string()
        } else {
            format!("{:.2}", b as f64 / MIB as f64)
        }
    })
    .unwrap_or_default()
}

fn size(b: u64) -> String {
    if b >= MIB {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn status_select(name: &str, current: EntryStatus) -> Markup {
    html! {
        select id=(name) name=(name) {
            @for s in [EntryStatus::Active, EntryStatus::Inactive, EntryStatus::Deleted] {
                option value=(s.as_str()) selected[s == current] { (s.as_str()) }
            }
        }
    }
}

// ------------------------------------------------------------------------
// form values

/// A quota in MiB (decimals allowed); empty: none.
fn parse_mib(field: &str, v: &str) -> Result<Option<u64>, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(n) if (0.0..1e12).contains(&n) => Ok(Some((n * MIB as f64) as u64)),
        _ => Err(invalid(format!("{field}: '{v}' is not a number of MiB"))),
    }
}

fn parse_count(field: &str, v: &str) -> Result<Option<u64>, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| invalid(format!("{field}: '{v}' is not a whole number")))
}

/// Addresses separated by commas, spaces or new lines.
fn list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn opt(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn invalid(m: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", m)
}

/// Old and new lists as (added, removed).
fn diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let add = new.iter().filter(|a| !old.contains(a)).cloned().collect();
    let remove = old.iter().filter(|a| !new.contains(a)).cloned().collect();
    (add, remove)
}

// ------------------------------------------------------------------------
// sessions

/// A logged-in administrator of the console, or the response to send
/// (to the login form, a CSRF refusal, an error).
struct Ctx {
    st: Arc<ConsoleState>,
    actor: Actor,
    session: Session,
}

impl Ctx {
    fn who(&self) -> Option<(&Actor, &Session)> {
        Some((&self.actor, &self.session))
    }

    fn fail(&self, e: ApiError, back: &str) -> Response {
        error_page(self.who(), &e, back)
    }
}

/// The administrator viewing a page (`ctx` without a form token): a
/// request without a valid console session is answered with the login
/// page's redirect before the handler runs.
struct Viewer(Ctx);

impl axum::extract::FromRequestParts<Services> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        services: &Services,
    ) -> Result<Viewer, Response> {
        ctx(services, &parts.headers, &parts.extensions, None)
            .await
            .map(Viewer)
    }
}

/// A form with the console's CSRF token (`csrf` field).
trait CsrfField {
    fn csrf(&self) -> &str;
}

/// A form POST of a logged-in administrator: the session, the CSRF token
/// and the origin checked (`ctx`) before the handler runs, and the form.
/// Anything else is answered here (login redirect, CSRF refusal, a form
/// that does not parse).
struct Posted<F>(Ctx, F);

impl<F> axum::extract::FromRequest<Services> for Posted<F>
where
    F: serde::de::DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        services: &Services,
    ) -> Result<Posted<F>, Response> {
        let (headers, ext) = (req.headers().clone(), req.extensions().clone());
        let Form(f) = Form::<F>::from_request(req, services)
            .await
            .map_err(IntoResponse::into_response)?;
        let c = ctx(services, &headers, &ext, Some(f.csrf())).await?;
        Ok(Posted(c, f))
    }
}

/// The administrator of a page request; `csrf` is the form's token for a
/// POST.
async fn ctx(
    services: &Services,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    csrf: Option<&str>,
) -> Result<Ctx, Response> {
    let st = api::state(services).map_err(|e| error_page(None, &e, "/admin/login"))?;
    let s = match api::cookie_session(services, &st, headers) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(redirect("/admin/login")),
        Err(_) => {
            let mut r = redirect("/admin/login");
            r.headers_mut()
                .insert(header::SET_COOKIE, api::clear_cookie(session::secure(ext)));
            return Err(r);
        }
    };
    if let Some(sent) = csrf {
        if !session::same_token(sent, &s.csrf) || !api::same_origin(headers) {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "The form did not come from this console page (or it expired). Go back, reload and try again.",
            );
            return Err(error_page(None, &e, "/admin/users"));
        }
    }
    let actor = match st.prov.actor_named(&s.user).await {
        Ok(a) => a,
        Err(e) => return Err(error_page(None, &e.into(), "/admin/login")),
    };
    Ok(Ctx {
        st,
        actor,
        session: s,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Notice {
    done: Option<String>,
}

// ------------------------------------------------------------------------
// login

fn login_page(status: StatusCode, error: Option<&str>, login: &str, tls: bool) -> Response {
    let token = session::random_token();
    let body = html! {
        @if let Some(e) = error {
            p.error role="alert" id="error" { (e) }
        }
        form method="post" action="/admin/login" {
            input type="hidden" name="csrf" value=(token);
            label for="login" { "Administrator" }
            input id="login" name="login" type="text" autocomplete="username" autofocus required value=(login);
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Log in" }
        }
    };
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/admin/login; Max-Age=3600; HttpOnly; SameSite=Strict{}",
        if tls { "; Secure" } else { "" }
    );
    let mut r = html_response(
        status,
        layout("Log in to the administration", None, None, body),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn login_form(ext: axum::http::Extensions) -> Response {
    login_page(StatusCode::OK, None, "", session::secure(&ext))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    csrf: String,
    login: String,
    password: Secret,
}

async fn login_submit(
    State(services): State<Services>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(f): Form<LoginForm>,
) -> Response {
    let tls = session::secure(&ext);
    let typed: String = f.login.chars().take(320).collect();
    let token_ok = session::cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|c| !f.csrf.is_empty() && session::same_token(c, &f.csrf));
    if !token_ok || !api::same_origin(&headers) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The login form expired. Please try again."),
            &typed,
            tls,
        );
    }
    let st = match api::state(&services) {
        Ok(st) => st,
        Err(e) => return error_page(None, &e, "/admin/login"),
    };
    let Some(conn) = api::conn(&ext) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match api::password_login(&services, &st, conn, &f.login, &f.password).await {
        Ok(actor) => {
            let (_, cookie) = api::new_session(&services, &st, &actor, tls);
            let mut r = redirect("/admin/users");
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r.headers_mut().append(
                header::SET_COOKIE,
                session::clear_cookie(LOGIN_COOKIE, "/admin/login", tls),
            );
            r
        }
        Err(e) => login_page(e.status, Some(&e.message), &typed, tls),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
}

impl CsrfField for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn logout(
    State(services): State<Services>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(f): Form<CsrfForm>,
) -> Response {
    // No rights needed to log out: the session and its token only.
    let st = match api::state(&services) {
        Ok(st) => st,
        Err(e) => return error_page(None, &e, "/admin/login"),
    };
    if let Ok(Some(s)) = api::cookie_session(&services, &st, &headers) {
        if !session::same_token(&f.csrf, &s.csrf) || !api::same_origin(&headers) {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "The logout did not come from this console page. Go back, reload and try again.",
            );
            return error_page(None, &e, "/admin/users");
        }
        api::end_session(&services, &st, &s);
    }
    let mut r = redirect("/admin/login");
    r.headers_mut()
        .insert(header::SET_COOKIE, api::clear_cookie(session::secure(&ext)));
    r
}

// ------------------------------------------------------------------------
// users

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListForm {
    text: String,
    domain: String,
    status: String,
    offset: usize,
    done: Option<String>,
}

impl ListForm {
    /// A domain administrator of several domains lists one at a time
    /// (`policy::scope_query`): the first of theirs unless one is named.
    fn scoped(mut self, actor: &Actor) -> ListForm {
        if let Actor::Domain { domains, .. } = actor {
            if self.domain.trim().is_empty() {
                self.domain = domains.first().cloned().unwrap_or_default();
            }
        }
        self
    }

    fn query(&self) -> Query {
        Query {
            domain: opt(&self.domain).map(|d| d.to_lowercase()),
            text: opt(&self.text),
            status: EntryStatus::parse(&self.status),
            offset: self.offset,
            limit: PAGE,
        }
    }

    fn link(&self, base: &str, offset: usize) -> String {
        format!(
            "{base}?text={}&domain={}&status={}&offset={offset}",
            enc(&self.text),
            enc(&self.domain),
            enc(&self.status)
        )
    }
}

/// The search form and the paging links of a listing.
fn search_form(base: &str, f: &ListForm, actor: &Actor) -> Markup {
    html! {
        form.search method="get" action=(base) role="search" {
            label for="text" { "Search" }
            input id="text" name="text" type="search" value=(f.text);
            label for="domain" { "Domain" }
            @match actor {
                Actor::Domain { domains, .. } => select id="domain" name="domain" {
                    @for d in domains {
                        option value=(d) selected[f.domain == *d] { (d) }
                    }
                },
                Actor::Site { .. } => input id="domain" name="domain" type="text" value=(f.domain);,
            }
            label for="status" { "Status" }
            select id="status" name="status" {
                option value="" { "any" }
                @for s in ["active", "inactive", "deleted"] {
                    option value=(s) selected[f.status == s] { (s) }
                }
            }
            button type="submit" { "Search" }
        }
    }
}

fn pager(base: &str, f: &ListForm, total: usize) -> Markup {
    let from = f.offset.min(total);
    let to = (f.offset + PAGE).min(total);
    html! {
        nav.pager aria-label="Pages" {
            span { (from + usize::from(to > from)) "–" (to) " of " (total) }
            @if f.offset > 0 {
                a rel="prev" href=(f.link(base, f.offset.saturating_sub(PAGE))) { "Previous page" }
            }
            @if to < total {
                a rel="next" href=(f.link(base, f.offset + PAGE)) { "Next page" }
            }
        }
    }
}

async fn users(Viewer(c): Viewer, UrlQuery(f): UrlQuery<ListForm>) -> Response {
    let f = f.scoped(&c.actor);
    let page = match c.st.prov.user_list(&c.actor, &f.query()).await {
        Ok(p) => p,
        Err(e) => return c.fail(e.into(), "/admin/users"),
    };
    let body = html! {
        p { a.button href="/admin/users/new" { "New user" } }
        (search_form("/admin/users", &f, &c.actor))
        table {
            caption { "Users" }
            thead { tr { th scope="col" { "Address" } th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Quota (MiB)" } th scope="col" { "Mail host" } } }
            tbody {
                @for u in &page.items {
                    tr {
                        td { a href={ "/admin/users/" (enc(&u.address)) } { (u.address) } }
                        td { (u.name.clone().unwrap_or_default()) }
                        td { (u.status.as_str()) }
                        td { (mib(u.quota)) }
                        td { (u.mail_host.clone().unwrap_or_default()) }
                    }
                }
            }
        }
        (pager("/admin/users", &f, page.total))
    };
    html_response(
        StatusCode::OK,
        layout("Users", c.who(), notice(f.done.as_deref()), body),
    )
}

async fn user_new(Viewer(c): Viewer) -> Response {
    let site = matches!(c.actor, Actor::Site { .. });
    let body = html! {
        form method="post" action="/admin/users" {
            input type="hidden" name="csrf" value=(c.session.csrf);
            label for="address" { "Address" }
            input id="address" name="address" type="email" required autofocus;
            label for="name" { "Name" }
            input id="name" name="name" type="text";
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="new-password" required;
            label for="quota" { "Quota (MiB, empty: the domain's default)" }
            input id="quota" name="quota" type="text" inputmode="decimal";
            label for="msg_quota" { "Message quota (empty: the domain's default)" }
            input id="msg_quota" name="msg_quota" type="text" inputmode="numeric";
            label for="aliases" { "Other addresses (comma or space separated)" }
            input id="aliases" name="aliases" type="text";
            label for="forward" { "Forward to (comma or space separated)" }
            input id="forward" name="forward" type="text";
            @if site {
                label for="mail_host" { "Mail host (empty: the domain's default)" }
                input id="mail_host" name="mail_host" type="text";
            }
            button type="submit" { "Create user" }
        }
    };
    html_response(StatusCode::OK, layout("New user", c.who(), None, body))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserForm {
    csrf: String,
    address: String,
    name: String,
    password: Secret,
    quota: String,
    msg_quota: String,
    aliases: String,
    forward: String,
    mail_host: String,
    status: String,
    keep_mailbox: Option<String>,
}

impl CsrfField for UserForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn user_create(Posted(c, f): Posted<UserForm>) -> Response {
    let made = async {
        let user = User {
            address: f.address.trim().to_lowercase(),
            name: opt(&f.name),
            aliases: list(&f.aliases),
            forward: list(&f.forward),
            quota: parse_mib("quota", &f.quota)?,
            msg_quota: parse_count("message quota", &f.msg_quota)?,
            mail_host: opt(&f.mail_host),
            ..Default::default()
        };
        Ok::<_, ApiError>(
            c.st.prov
                .user_add(&c.actor, user, f.password.clone())
                .await?,
        )
    }
    .await;
    match made {
        Ok(u) => redirect(&format!("/admin/users/{}?done=created", enc(&u.address))),
        Err(e) => c.fail(e, "/admin/users/new"),
    }
}

async fn user_page(
    State(services): State<Services>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Path(address): Path<String>,
    UrlQuery(n): UrlQuery<Notice>,
) -> Response {
    let c = match ctx(&services, &headers, &ext, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let u = match c.st.prov.user_get(&c.actor, &address).await {
        Ok(u) => u,
        Err(e) => return c.fail(e.into(), "/admin/users"),
    };
    let usage = api::usage_of(&services, &u).await;
    let site = matches!(c.actor, Actor::Site { .. });
    let base = format!("/admin/users/{}", enc(&u.address));
    let body = html! {
        section aria-labelledby="usage-h" {
            h2 id="usage-h" { "Usage" }
            @match &usage {
                Ok(us) => p id="usage" {
                    (size(us.bytes)) " in " (us.messages) " messages"
                    @if let Some(q) = u.quota { ", quota " (size(q)) }
                    @if let Some(q) = u.msg_quota { ", message quota " (q) }
                },
                Err(e) => p id="usage" { (e.message) },
            }
        }
        section aria-labelledby="edit-h" {
            h2 id="edit-h" { "Settings" }
            form method="post" action=(base) {
                input type="hidden" name="csrf" value=(c.session.csrf);
                label for="name" { "Name" }
                input id="name" name="name" type="text" value=(u.name.clone().unwrap_or_default());
                label for="quota" { "Quota (MiB, empty: unlimited)" }
                input id="quota" name="quota" type="text" inputmode="decimal" value=(mib(u.quota));
                label for="msg_quota" { "Message quota (empty: unlimited)" }
                input id="msg_quota" name="msg_quota" type="text" inputmode="numeric" value=(u.msg_quota.map(|q| q.to_string()).unwrap_or_default());
                label for="status" { "Status" }
                (status_select("status", u.status))
                label for="aliases" { "Other addresses" }
                input id="aliases" name="aliases" type="text" value=(u.aliases.join(", "));
                label for="forward" { "Forward to" }
                input id="forward" name="forward" type="text" value=(u.forward.join(", "));
                label.check for="keep_mailbox" {
                    input id="keep_mailbox" name="keep_mailbox" type="checkbox" checked[u.keep_mailbox];
                    " Keep a copy in the mailbox when forwarding"
                }
                @if site {
                    label for="mail_host" { "Mail host (a change moves the mail)" }
                    input id="mail_host" name="mail_host" type="text" value=(u.mail_host.clone().unwrap_or_default()) aria-describedby="mail_host_note";
                    p id="mail_host_note" { "A new mail host starts " code { "msgd user move" } ": the mail is copied to that store, then the mail host changes (on a console without the user's store, run the move there)." }
                }
                button type="submit" { "Save" }
            }
        }
        section aria-labelledby="pw-h" {
            h2 id="pw-h" { "Reset the password" }
            form method="post" action={ (base) "/password" } {
                input type="hidden" name="csrf" value=(c.session.csrf);
                label for="new_password" { "New password" }
                input id="new_password" name="password" type="password" autocomplete="new-password" required;
                button type="submit" { "Set password" }
            }
        }
        @if u.status != EntryStatus::Deleted {
            section aria-labelledby="del-h" {
                h2 id="del-h" { "Delete" }
                p { "The user is marked deleted at once (no login, mail refused or kept per the site's policy) and its mail is purged later." }
                form method="post" action={ (base) "/delete" } data-confirm={ "Delete " (u.address) "?" } {
                    input type="hidden" name="csrf" value=(c.session.csrf);
                    button.danger type="submit" { "Delete user" }
                }
            }
        }
    };
    html_response(
        StatusCode::OK,
        layout(&u.address, c.who(), notice(n.done.as_deref()), body),
    )
}

async fn user_save(
    State(services): State<Services>,
    Path(address): Path<String>,
    Posted(c, f): Posted<UserForm>,
) -> Response {
    let base = format!("/admin/users/{}", enc(&address));
    let done = async {
        let before = c.st.prov.user_get(&c.actor, &address).await?;
        let (add_aliases, remove_aliases) = diff(&before.aliases, &list(&f.aliases));
        let status = EntryStatus::parse(&f.status)
            .ok_or_else(|| invalid(format!("status: '{}' is not a status", f.status)))?;
        let mail_host = opt(&f.mail_host);
        let mut change = UserChange {
            name: Some(opt(&f.name)).filter(|n| *n != before.name),
            quota: Some(parse_mib("quota", &f.quota)?).filter(|q| *q != before.quota),
            msg_quota: Some(parse_count("message quota", &f.msg_quota)?)
                .filter(|q| *q != before.msg_quota),
            status: Some(status).filter(|s| *s != before.status),
            add_aliases,
            remove_aliases,
            forward: Some(list(&f.forward)).filter(|v| *v != before.forward),
            keep_mailbox: Some(f.keep_mailbox.is_some()).filter(|k| *k != before.keep_mailbox),
            ..Default::default()
        };
        // Only a site administrator sees the field; an empty one from a
        // domain administrator's form is no change.
        if matches!(c.actor, Actor::Site { .. }) && mail_host != before.mail_host {
            change.mail_host = Some(mail_host);
        }
        api::modify_or_move(&services, &c.st, &c.actor, &address, change).await
    }
    .await;
    match done {
        Ok((_, None)) => redirect(&format!("{base}?done=saved")),
        Ok((_, Some(_))) => redirect(&format!("{base}?done=moving")),
        Err(e) => c.fail(e, &base),
    }
}

async fn user_password(Path(address): Path<String>, Posted(c, f): Posted<UserForm>) -> Response {
    let base = format!("/admin/users/{}", enc(&address));
    let change = UserChange {
        password: Some(f.password),
        ..Default::default()
    };
    match c.st.prov.user_modify(&c.actor, &address, change).await {
        Ok(_) => redirect(&format!("{base}?done=password")),
        Err(e) => c.fail(e.into(), &base),
    }
}

async fn user_delete(Path(address): Path<String>, Posted(c, _): Posted<CsrfForm>) -> Response {
    match c.st.prov.user_delete(&c.actor, &address).await {
        Ok(_) => redirect("/admin/users?done=marked"),
        Err(e) => c.fail(e.into(), &format!("/admin/users/{}", enc(&address))),
    }
}

// ------------------------------------------------------------------------
// groups

async fn groups(Viewer(c): Viewer, UrlQuery(f): UrlQuery<ListForm>) -> Response {
    let f = f.scoped(&c.actor);
    let page = match c.st.prov.group_list(&c.actor, &f.query()).await {
        Ok(p) => p,
        Err(e) => return c.fail(e.into(), "/admin/groups"),
    };
    let body = html! {
        p { a.button href="/admin/groups/new" { "New group" } }
        (search_form("/admin/groups", &f, &c.actor))
        table {
            caption { "Groups" }
            thead { tr { th scope="col" { "Address" } th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Members" } } }
            tbody {
                @for g in &page.items {
                    tr {
                        td { a href={ "/admin/groups/" (enc(&g.address)) } { (g.address) } }
                        td { (g.name.clone().unwrap_or_default()) }
                        td { (g.status.as_str()) }
                        td { (g.members.len() + g.member_dns.len()) }
                    }
                }
            }
        }
        (pager("/admin/groups", &f, page.total))
    };
    html_response(
        StatusCode::OK,
        layout("Groups", c.who(), notice(f.done.as_deref()), body),
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GroupForm {
    csrf: String,
    address: String,
    name: String,
    members: String,
    aliases: String,
    errors_to: String,
    allowed_broadcasters: String,
    allowed_domains: String,
    status: String,
}

impl CsrfField for GroupForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn group_fields(g: &Group, csrf: &str, new: bool) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(csrf);
        @if new {
            label for="address" { "Address" }
            input id="address" name="address" type="email" required autofocus;
        }
        label for="name" { "Name" }
        input id="name" name="name" type="text" value=(g.name.clone().unwrap_or_default());
        label for="members" { "Members (one address a line)" }
        textarea id="members" name="members" rows="8" { (g.members.join("\n")) }
        @if !g.member_dns.is_empty() {
            p { "Members by DN (LDAP; not edited here): " (g.member_dns.join("; ")) }
        }
        label for="aliases" { "Other addresses" }
        input id="aliases" name="aliases" type="text" value=(g.aliases.join(", "));
        label for="errors_to" { "Errors to" }
        input id="errors_to" name="errors_to" type="text" value=(g.errors_to.clone().unwrap_or_default());
        label for="allowed_broadcasters" { "Who may post (addresses; empty: anyone)" }
        input id="allowed_broadcasters" name="allowed_broadcasters" type="text" value=(g.allowed_broadcasters.join(", "));
        label for="allowed_domains" { "Domains that may post (empty: any)" }
        input id="allowed_domains" name="allowed_domains" type="text" value=(g.allowed_domains.join(", "));
        label for="status" { "Status" }
        (status_select("status", g.status))
    }
}

async fn group_new(Viewer(c): Viewer) -> Response {
    let body = html! {
        form method="post" action="/admin/groups" {
            (group_fields(&Group::default(), &c.session.csrf, true))
            button type="submit" { "Create group" }
        }
    };
    html_response(StatusCode::OK, layout("New group", c.who(), None, body))
}

async fn group_create(Posted(c, f): Posted<GroupForm>) -> Response {
    let g = Group {
        address: f.address.trim().to_lowercase(),
        name: opt(&f.name),
        members: list(&f.members),
        aliases: list(&f.aliases),
        errors_to: opt(&f.errors_to),
        allowed_broadcasters: list(&f.allowed_broadcasters),
        allowed_domains: list(&f.allowed_domains),
        status: EntryStatus::parse(&f.status).unwrap_or_default(),
        ..Default::default()
    };
    match c.st.prov.group_add(&c.actor, g).await {
        Ok(g) => redirect(&format!("/admin/groups/{}?done=created", enc(&g.address))),
        Err(e) => c.fail(e.into(), "/admin/groups/new"),
    }
}

async fn group_page(
    Viewer(c): Viewer,
    Path(address): Path<String>,
    UrlQuery(n): UrlQuery<Notice>,
) -> Response {
    let g = match c.st.prov.group_get(&c.actor, &address).await {
        Ok(g) => g,
        Err(e) => return c.fail(e.into(), "/admin/groups"),
    };
    let base = format!("/admin/groups/{}", enc(&g.address));
    let body = html! {
        form method="post" action=(base) {
            (group_fields(&g, &c.session.csrf, false))
            button type="submit" { "Save" }
        }
        form method="post" action={ (base) "/delete" } data-confirm={ "Delete " (g.address) "?" } {
            input type="hidden" name="csrf" value=(c.session.csrf);
            button.danger type="submit" { "Delete group" }
        }
    };
    html_response(
        StatusCode::OK,
        layout(&g.address, c.who(), notice(n.done.as_deref()), body),
    )
}

async fn group_save(Path(address): Path<String>, Posted(c, f): Posted<GroupForm>) -> Response {
    let base = format!("/admin/groups/{}", enc(&address));
    let done = async {
        let before = c.st.prov.group_get(&c.actor, &address).await?;
        let (add_members, remove_members) = diff(&before.members, &list(&f.members));
        let (add_aliases, remove_aliases) = diff(&before.aliases, &list(&f.aliases));
        let change = GroupChange {
            name: Some(opt(&f.name)).filter(|n| *n != before.name),
            add_aliases,
            remove_aliases,
            add_members,
            remove_members,
            errors_to: Some(opt(&f.errors_to)).filter(|e| *e != before.errors_to),
            allowed_broadcasters: Some(list(&f.allowed_broadcasters))
                .filter(|v| *v != before.allowed_broadcasters),
            allowed_domains: Some(list(&f.allowed_domains))
                .filter(|v| *v != before.allowed_domains),
            status: EntryStatus::parse(&f.status).filter(|s| *s != before.status),
        };
        Ok::<_, ApiError>(c.st.prov.group_modify(&c.actor, &address, change).await?)
    }
    .await;
    match done {
        Ok(_) => redirect(&format!("{base}?done=saved")),
        Err(e) => c.fail(e, &base),
    }
}

async fn group_delete(Path(address): Path<String>, Posted(c, _): Posted<CsrfForm>) -> Response {
    match c.st.prov.group_delete(&c.actor, &address).await {
        Ok(()) => redirect("/admin/groups?done=deleted"),
        Err(e) => c.fail(e.into(), &format!("/admin/groups/{}", enc(&address))),
    }
}

// ------------------------------------------------------------------------
// domains

async fn domains(Viewer(c): Viewer, UrlQuery(f): UrlQuery<ListForm>) -> Response {
    let mut q = f.query();
    q.limit = MAX_PAGE;
    let page = match c.st.prov.domain_list(&c.actor, &q).await {
        Ok(p) => p,
        Err(e) => return c.fail(e.into(), "/admin/users"),
    };
    let site = matches!(c.actor, Actor::Site { .. });
    let body = html! {
        table {
            caption { "Domains" }
            thead { tr { th scope="col" { "Domain" } th scope="col" { "Status" } th scope="col" { "Default quota (MiB)" } th scope="col" { "Most users" } th scope="col" { "Administrators" } } }
            tbody {
                @for d in &page.items {
                    tr {
                        td { a href={ "/admin/domains/" (enc(&d.name)) } { (d.name) } }
                        td { (d.status.as_str()) }
                        td { (mib(d.default_quota)) }
                        td { (d.max_users.map(|n| n.to_string()).unwrap_or_default()) }
                        td { (d.admins.join(", ")) }
                    }
                }
            }
        }
        @if site {
            section aria-labelledby="newdom-h" {
                h2 id="newdom-h" { "New domain" }
                form method="post" action="/admin/domains" {
                    input type="hidden" name="csrf" value=(c.session.csrf);
                    label for="name" { "Domain name" }
                    input id="name" name="name" type="text" required;
                    button type="submit" { "Add domain" }
                }
            }
        }
    };
    html_response(
        StatusCode::OK,
        layout("Domains", c.who(), notice(f.done.as_deref()), body),
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DomainForm {
    csrf: String,
    name: String,
    status: String,
    default_quota: String,
    default_msg_quota: String,
    default_mail_host: String,
    admins: String,
    max_users: String,
    max_quota: String,
}

impl CsrfField for DomainForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn domain_create(Posted(c, f): Posted<DomainForm>) -> Response {
    let d = Domain {
        name: f.name.trim().to_lowercase(),
        ..Default::default()
    };
    match c.st.prov.domain_add(&c.actor, d).await {
        Ok(d) => redirect(&format!("/admin/domains/{}?done=created", enc(&d.name))),
        Err(e) => c.fail(e.into(), "/admin/domains"),
    }
}

async fn domain_page(
    Viewer(c): Viewer,
    Path(name): Path<String>,
    UrlQuery(n): UrlQuery<Notice>,
) -> Response {
    let d = match c.st.prov.domain_get(&c.actor, &name).await {
        Ok(d) => d,
        Err(e) => return c.fail(e.into(), "/admin/domains"),
    };
    let site = matches!(c.actor, Actor::Site { .. });
    let body = if site {
        html! {
            form method="post" action={ "/admin/domains/" (enc(&d.name)) } {
                input type="hidden" name="csrf" value=(c.session.csrf);
                label for="status" { "Status" }
                (status_select("status", d.status))
                label for="default_quota" { "Default quota (MiB)" }
                input id="default_quota" name="default_quota" type="text" value=(mib(d.default_quota));
                label for="default_msg_quota" { "Default message quota" }
                input id="default_msg_quota" name="default_msg_quota" type="text" value=(d.default_msg_quota.map(|q| q.to_string()).unwrap_or_default());
                label for="default_mail_host" { "Default mail host" }
                input id="default_mail_host" name="default_mail_host" type="text" value=(d.default_mail_host.clone().unwrap_or_default());
                label for="admins" { "Administrators" }
                input id="admins" name="admins" type="text" value=(d.admins.join(", "));
                label for="max_users" { "Most users (empty: no limit)" }
                input id="max_users" name="max_users" type="text" value=(d.max_users.map(|q| q.to_string()).unwrap_or_default());
                label for="max_quota" { "Most quota for all users (MiB; empty: no limit)" }
                input id="max_quota" name="max_quota" type="text" value=(mib(d.max_quota));
                button type="submit" { "Save" }
            }
        }
    } else {
        html! {
            dl {
                dt { "Status" } dd { (d.status.as_str()) }
                dt { "Default quota" } dd { (d.default_quota.map(size).unwrap_or_else(|| "none".into())) }
                dt { "Default message quota" } dd { (d.default_msg_quota.map(|q| q.to_string()).unwrap_or_else(|| "none".into())) }
                dt { "Most users" } dd { (d.max_users.map(|q| q.to_string()).unwrap_or_else(|| "no limit".into())) }
                dt { "Most quota" } dd { (d.max_quota.map(size).unwrap_or_else(|| "no limit".into())) }
                dt { "Administrators" } dd { (d.admins.join(", ")) }
            }
        }
    };
    html_response(
        StatusCode::OK,
        layout(&d.name, c.who(), notice(n.done.as_deref()), body),
    )
}

async fn domain_save(Path(name): Path<String>, Posted(c, f): Posted<DomainForm>) -> Response {
    let base = format!("/admin/domains/{}", enc(&name));
    let done = async {
        let before = c.st.prov.domain_get(&c.actor, &name).await?;
        let (add_admins, remove_admins) = diff(&before.admins, &list(&f.admins));
        let change = DomainChange {
            status: EntryStatus::parse(&f.status).filter(|s| *s != before.status),
            default_quota: Some(parse_mib("default quota", &f.default_quota)?)
                .filter(|q| *q != before.default_quota),
            default_msg_quota: Some(parse_count("default message quota", &f.default_msg_quota)?)
                .filter(|q| *q != before.default_msg_quota),
            default_mail_host: Some(opt(&f.default_mail_host))
                .filter(|h| *h != before.default_mail_host),
            add_admins,
            remove_admins,
            max_users: Some(parse_count("most users", &f.max_users)?)
                .filter(|q| *q != before.max_users),
            max_quota: Some(parse_mib("most quota", &f.max_quota)?)
                .filter(|q| *q != before.max_quota),
        };
        Ok::<_, ApiError>(c.st.prov.domain_modify(&c.actor, &name, change).await?)
    }
    .await;
    match done {
        Ok(_) => redirect(&format!("{base}?done=saved")),
        Err(e) => c.fail(e, &base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_pages_have_no_inline_script() {
        let a = Actor::Site {
            id: "<b>x</b>@y".into(),
        };
        let s = Session::new("a", api::MARK, 1);
        let page = layout("<t>", Some((&a, &s)), None, html! { p { "\"q\"" } }).into_string();
        assert!(!page.contains("<b>x"));
        assert!(page.contains("&lt;t&gt;"));
        // The one script is a file, allowed by `script-src 'self'`.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script src=\"/admin/static/console.js\" defer></script>"));
    }

    #[test]
    fn form_values_parse() {
        assert_eq!(parse_mib("q", " 2 ").unwrap(), Some(2 * MIB));
        assert_eq!(parse_mib("q", "").unwrap(), None);
        assert_eq!(parse_mib("q", "0.5").unwrap(), Some(MIB / 2));
        assert!(parse_mib("q", "-1").is_err());
        assert!(parse_mib("q", "NaN").is_err());
        assert!(parse_count("q", "1.5").is_err());
        assert_eq!(list("a@x, B@x\nc@x"), vec!["a@x", "b@x", "c@x"]);
        assert_eq!(
            diff(&["a".into(), "b".into()], &["b".into(), "c".into()]),
            (vec!["c".to_string()], vec!["a".to_string()])
        );
        assert_eq!(enc("a b/@x"), "a%20b%2F@x");
        assert_eq!(mib(Some(3 * MIB)), "3");
    }
}
