//! The mem role: the webmail front end. See docs/webmail.md.
//!
//! Routes (`routes`): `GET /` the webmail page (logged in) or a redirect
//! to `/login`; `GET /static/...` the page's embedded files (`assets`);
//! `GET|POST /login`, `POST /logout`, `GET /session-info` (`login`); and,
//! when no store runs in this process, `/jmap/...` forwarded to the
//! user's store (`proxy`). In all-in-one the store's own JMAP routes serve
//! `/jmap/...` and accept the session cookie through
//! `session::user_from_cookie`.
//!
//! Invariants:
//! - The mem keeps no per-user state: the session is in its sealed cookie
//!   (`session`), so mems are interchangeable behind a load balancer.
//! - Every response carries the CSP and the other security headers, and
//!   every page is server-rendered without inline script
//!   (`session::refresh`, applied by `crate::http::app` over all routes).
//! - A user's calls go only to the store their session names, with a
//!   bearer token for that user alone (`crate::http::token`).

pub mod assets;
pub mod login;
pub mod proxy;
pub mod session;

use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;

use crate::services::Services;

/// Largest login or logout form body read.
const MAX_FORM: usize = 16 * 1024;

/// What the mem's routes share, built at the first request
/// (`Web::mem_state`): the cookie key, the token key, the store client.
pub struct State {
    pub sealer: session::Sealer,
    pub tokens: crate::http::token::TokenKey,
    pub stores: proxy::Stores,
}

/// The mem's shared state, loading the key files the first time.
pub fn state(services: &Services) -> anyhow::Result<Arc<State>> {
    if let Some(s) = services.web.mem_state.get() {
        return Ok(s.clone());
    }
    let built = build(services).map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "webmail unavailable");
        e
    })?;
    Ok(services.web.mem_state.get_or_init(|| built).clone())
}

fn build(services: &Services) -> anyhow::Result<Arc<State>> {
    let c = &services.config;
    let session_key = crate::http::keys::load_or_create(
        &c.data_path(&c.mem.session_key_file, "mem-session.key"),
    )?;
    let token_key =
        crate::http::keys::load_or_create(&c.data_path(&c.http.token_key_file, "http-token.key"))?;
    let stores = proxy::Stores::new(services).context("the mem's client for the stores")?;
    Ok(Arc::new(State {
        sealer: session::Sealer::new(&session_key),
        tokens: crate::http::token::TokenKey::new(&token_key),
        stores,
    }))
}

/// The webmail page, login/logout and (mem role alone: `forward_jmap`)
/// the forwarding of a logged-in user's JMAP calls to the store named by
/// their mailHost.
pub fn routes(forward_jmap: bool) -> Router<Services> {
    // Login and logout forms are small: bound what is read of them.
    let forms = Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .layer(DefaultBodyLimit::max(MAX_FORM));
    let mut r = Router::new()
        .route("/", get(login::page))
        .route("/static/{*path}", get(login::asset))
        .route("/session-info", get(login::session_info))
        .merge(forms);
    if forward_jmap {
        r = r
            .route("/.well-known/jmap", get(proxy::well_known))
            .route("/jmap/{*rest}", any(proxy::forward));
    }
    r
}
