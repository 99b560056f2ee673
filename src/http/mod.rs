//! HTTP on msgd's own listeners: the JMAP API of the store (`crate::jmap`)
//! and the webmail front end (`crate::mem`).
//!
//! Connections arrive through `crate::net` like every protocol's (PROXY
//! headers from configured load balancers, TLS, connection limits, write
//! deadlines); this module runs hyper's HTTP/1.1 server on them with an
//! axum router built once per process. Each request carries the
//! connection's `ConnInfo` as an extension (peer address, TLS active), so
//! handlers decide on trust (plaintext Basic only on loopback, bearer tokens
//! only from `http.token_networks`) from what the listener saw.
//!
//! Which routes a process serves:
//! - store (and all-in-one): `crate::jmap::routes()` — the JMAP session
//!   resource, API, upload, download and event source for its own users;
//! - mem (and all-in-one): `crate::mem::routes()` — the webmail page, login
//!   and the forwarding of a logged-in user's JMAP calls to their store.

pub mod deadline;
pub mod keys;
pub mod token;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;
use tracing::debug;

use crate::net::{Conn, ConnInfo};
use crate::services::Services;

/// The HTTP state of a process, in `Services::web`: which routes it
/// serves and what they share. New shared HTTP state (keys, the mem's
/// store connections, event-source registries) goes here, so that
/// `Services` is built the same way everywhere.
#[derive(Default)]
pub struct Web {
    /// The mem role runs in this process (mem or all-in-one): serve the
    /// webmail page and login.
    pub mem: bool,
    /// The router, built at the first HTTP connection.
    pub app: std::sync::OnceLock<Router>,
    /// The mem's keys and store client, built at the first request
    /// (`crate::mem::state`).
    pub mem_state: std::sync::OnceLock<std::sync::Arc<crate::mem::State>>,
    /// JMAP's shared state (token key, per-user request counters).
    pub jmap: crate::jmap::Shared,
    /// Renders the process's metrics (`crate::metrics`; the admin listener's /metrics).
    pub metrics: Option<crate::metrics::Handle>,
    /// The console listener's router (`crate::provision::api::app`), built
    /// at its first connection.
    pub console_app: std::sync::OnceLock<Router>,
    /// The console's provisioner and cookie key, built at the first
    /// request (`crate::provision::api::state`).
    pub console: std::sync::OnceLock<std::sync::Arc<crate::provision::api::ConsoleState>>,
}

/// The router of this process: JMAP when the store role runs here, the
/// webmail front end when the mem role does (all-in-one: both).
pub fn app(services: &Services) -> Router {
    let mut app = Router::new();
    if services.store.is_some() {
        // The bearer-token key file is created now if missing, so it can
        // be copied to the mems.
        let _ = services.web.jmap.token_key(&services.config);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(crate::jmap::blob::sweeper(services.clone()));
        }
        app = app.merge(crate::jmap::routes());
        // The store-to-store transport of `msgd user move`.
        app = app.merge(crate::ops::replica::routes());
        // A mem's question for a user's usage (the console).
        app = app.merge(crate::provision::api::store_routes());
    }
    if services.web.mem {
        // /jmap/... is forwarded only where no store serves it itself.
        app = app.merge(crate::mem::routes(services.store.is_none()));
        // Security headers and session renewal over every route.
        app = app.layer(axum::middleware::from_fn_with_state(
            services.clone(),
            crate::mem::session::refresh,
        ));
    }
    app.with_state(services.clone())
}

/// Serves one HTTP connection until the client closes it, it stays idle
/// past `http.idle_timeout`, or the process shuts down (the request in
/// progress is finished first).
pub async fn serve(conn: Conn, info: ConnInfo, services: Services) {
    let app = if info.protocol == crate::config::Protocol::Console {
        // The administration console has its own listener and routes.
        let web = &services.web;
        web.console_app
            .get_or_init(|| crate::provision::api::app(&services))
            .clone()
    } else {
        services.web.app.get_or_init(|| app(&services)).clone()
    };
    let cfg = &services.config.http;
    let peer = info.clone();
    // Headers: hyper's header_read_timeout; bodies: DeadlineBody.
    let body_base = Duration::from_secs(cfg.request_timeout.max(1));
    let body_rate = services.config.limits.min_data_rate;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        let app = app.clone();
        let protocol = peer.protocol.name();
        async move {
            let _metrics = crate::metrics::latency(protocol);
            let req = req.map(|b| {
                axum::body::Body::new(deadline::DeadlineBody::new(b, body_base, body_rate))
            });
            let resp = app
                .oneshot(req)
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            crate::metrics::http_response(protocol, resp.status().as_u16());
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.request_timeout.max(1)))
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(conn), svc);
    tokio::pin!(connection);
    let idle = Duration::from_secs(cfg.idle_timeout.max(1));
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                debug!(session = info.session_id, error = %e, "http connection ended");
            }
        }
        _ = services.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(idle, connection).await;
        }
    }
}
