//! The admin HTTP listener (issue 14): one per process whatever its
//! roles, on `[admin] bind` (loopback by default), off the public ports.
//!
//! It answers two things and nothing else:
//! - `GET /metrics`: the process's metrics in the Prometheus text format
//!   (`crate::metrics`), plus figures read when scraped: mboxlist cache,
//!   free disk per partition, queue depth and oldest age, directory and
//!   credential cache hits and misses, the message-byte budget in use;
//! - `GET /health`: 200 with `{"status": "ready", ...}` when every
//!   listener is bound, the store is open (where the process runs the
//!   store role) and no shutdown is under way; 503 with the same JSON
//!   naming what is not ready otherwise. Load balancers and the mmp ask it.
//!
//! It is bound before the store opens (opening a large mboxlist after a
//! crash takes a while: /health says "opening" meanwhile) and keeps
//! answering during the drain after SIGTERM (503), until the process
//! exits.
//!
//! Limits (docs/security.md holds for HTTP too): at most
//! [`MAX_CONNECTIONS`] connections, headers within [`HEADER_DEADLINE`] and
//! at most 16 KiB of them, the whole connection within
//! [`CONNECTION_DEADLINE`] (writes included), no request body read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{counter, gauge};
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::services::Services;

pub const MAX_CONNECTIONS: usize = 16;
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// What /health reports, filled in as the process starts.
#[derive(Default)]
pub struct Admin {
    /// The process runs the store role: /health waits for it.
    has_store: bool,
    store_open: AtomicBool,
    listeners_bound: AtomicBool,
    /// Set once the process's services exist (the shutdown signal, the
    /// metrics handle, what scrapes read).
    services: OnceLock<Services>,
}

impl Admin {
    pub fn new(has_store: bool) -> Arc<Admin> {
        Arc::new(Admin {
            has_store,
            ..Default::default()
        })
    }

    pub fn store_opened(&self) {
        self.store_open.store(true, Ordering::SeqCst);
    }

    pub fn attach(&self, services: Services) {
        let _ = self.services.set(services);
    }

    pub fn listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::SeqCst);
    }

    /// Ready or not, and the state of each component.
    pub fn health(&self) -> (bool, serde_json::Value) {
        let shutting_down = self
            .services
            .get()
            .is_some_and(|s| s.shutdown.is_cancelled());
        let store = self
            .has_store
            .then(|| self.store_open.load(Ordering::SeqCst));
        verdict(
            self.listeners_bound.load(Ordering::SeqCst),
            store,
            shutting_down,
        )
    }
}

/// The health rule: listeners bound, store open (if any), not shutting down.
fn verdict(listeners: bool, store: Option<bool>, shutting_down: bool) -> (bool, serde_json::Value) {
    let ready = listeners && store != Some(false) && !shutting_down;
    let mut components = serde_json::Map::new();
    components.insert(
        "listeners".into(),
        json!(if listeners { "bound" } else { "starting" }),
    );
    if let Some(open) = store {
        components.insert("store".into(), json!(if open { "open" } else { "opening" }));
    }
    components.insert(
        "shutdown".into(),
        json!(if shutting_down { "draining" } else { "no" }),
    );
    let status = if ready { "ready" } else { "not ready" };
    (ready, json!({"status": status, "components": components}))
}

/// Binds every `[admin] bind` address (none when disabled).
pub fn bind(config: &Config) -> anyhow::Result<Vec<TcpListener>> {
    if !config.admin.enabled {
        return Ok(Vec::new());
    }
    config
        .admin
        .bind
        .iter()
        .map(|addr| {
            let l = crate::net::bind(*addr)
                .with_context(|| format!("admin: cannot listen on {addr}"))?;
            info!(%addr, "admin listener (/metrics, /health)");
            Ok(l)
        })
        .collect()
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(admin)
}

async fn health(State(admin): State<Arc<Admin>>) -> Response {
    let (ready, body) = admin.health();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let Some(services) = admin.services.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let Some(handle) = services.web.metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "no metrics recorder in this process\n",
        )
            .into_response();
    };
    let s = services.clone();
    // statvfs and the file sizes may block on a slow disk.
    let text = tokio::task::spawn_blocking(move || {
        sample(&s);
        handle.run_upkeep();
        handle.render()
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Figures the process keeps anyway, read into the recorder at scrape time.
fn sample(s: &Services) {
    if let Some(store) = &s.store {
        let st = store.stats();
        counter!("msgd_mboxlist_cache_hits_total").absolute(st.cache_hits);
        counter!("msgd_mboxlist_cache_misses_total").absolute(st.cache_misses);
        gauge!("msgd_mboxlist_cache_bytes").set(st.cache_bytes as f64);
        gauge!("msgd_mboxlist_cache_hit_ratio").set(st.hit_rate() / 100.0);
        let db = crate::ops::stats::mboxlist_path(&s.config);
        if let Ok(m) = std::fs::metadata(&db) {
            gauge!("msgd_mboxlist_file_bytes").set(m.len() as f64);
        }
        for name in s.config.store.partition.keys() {
            let free = s
                .config
                .partition_path(name)
                .and_then(|p| crate::fsutil::free_space(&p).ok());
            if let Some(free) = free {
                gauge!("msgd_partition_free_bytes", "partition" => name.clone()).set(free as f64);
            }
        }
    }
    if let Some(q) = &s.queue {
        gauge!("msgd_queue_messages").set(q.len() as f64);
        let age = q
            .oldest_received()
            .map(|r| (crate::queue::unix_now() - r).max(0))
            .unwrap_or(0);
        gauge!("msgd_queue_oldest_age_seconds").set(age as f64);
    }
    if let Some((hits, misses)) = s.directory.cache_stats() {
        counter!("msgd_directory_cache_hits_total").absolute(hits);
        counter!("msgd_directory_cache_misses_total").absolute(misses);
    }
    let (hits, misses) = s.directory.auth().cache.stats();
    counter!("msgd_auth_cache_hits_total").absolute(hits);
    counter!("msgd_auth_cache_misses_total").absolute(misses);
    gauge!("msgd_budget_bytes_in_use")
        .set(s.budget.limit().saturating_sub(s.budget.available()) as f64);
}

/// Serves the admin listeners until the process exits (also during the
/// drain after SIGTERM, when /health answers 503).
pub fn spawn(listeners: Vec<TcpListener>, admin: Arc<Admin>) {
    if listeners.is_empty() {
        return;
    }
    let app = router(admin);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    for l in listeners {
        tokio::spawn(accept_loop(l, app.clone(), slots.clone()));
    }
}

async fn accept_loop(listener: TcpListener, app: Router, slots: Arc<tokio::sync::Semaphore>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed at once, nothing read.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "admin listener: too many connections");
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let resp = app
                            .oneshot(req.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|e: std::convert::Infallible| match e {});
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .max_buf_size(16 * 1024);
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "admin connection ended"),
                Err(_) => debug!(%peer, "admin connection: deadline passed"),
                Ok(Ok(())) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_ready_only_with_listeners_bound_store_open_and_no_shutdown() {
        assert!(verdict(true, Some(true), false).0);
        assert!(
            verdict(true, None, false).0,
            "no store role: nothing to wait for"
        );
        let (ready, body) = verdict(true, Some(false), false);
        assert!(!ready, "store still opening");
        assert_eq!(body["components"]["store"], "opening");
        assert_eq!(body["status"], "not ready");
        assert!(
            !verdict(false, Some(true), false).0,
            "listeners not bound yet"
        );
        let (ready, body) = verdict(true, Some(true), true);
        assert!(!ready, "draining");
        assert_eq!(body["components"]["shutdown"], "draining");
        assert!(verdict(true, None, false).1["components"]
            .get("store")
            .is_none());
    }

    #[tokio::test]
    async fn admin_health_follows_start_up_and_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let admin = Admin::new(true);
        assert!(!admin.health().0);
        admin.store_opened();
        admin.attach(s.clone());
        assert!(!admin.health().0, "listeners not bound yet");
        admin.listeners_bound();
        assert!(admin.health().0);
        s.shutdown.cancel();
        assert!(!admin.health().0);
    }

    #[test]
    fn admin_listens_on_loopback_9925_configured_and_19925_in_the_quickstart() {
        let quick = crate::config::load(None, &[]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            quick.config.admin.bind,
            vec!["127.0.0.1:19925".parse().unwrap()]
        );
        assert!(quick.config.admin.enabled);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msgd.toml");
        std::fs::write(&file, "[server]\ndata_dir = \"d\"\n").unwrap();
        let configured = crate::config::load(Some(&file), &[crate::roles::Role::Store])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            configured.config.admin.bind,
            vec!["127.0.0.1:9925".parse().unwrap()]
        );
        let mut c = configured.config;
        c.admin.bind.clear();
        assert!(crate::config::validate(&c)
            .iter()
            .any(|e| e.starts_with("admin.bind")));
        c.admin.enabled = false;
        assert!(bind(&c).unwrap().is_empty(), "disabled: nothing bound");
    }

    async fn get(app: &Router, method: &str, path: &str) -> (StatusCode, String) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn only_get_metrics_and_health_are_served() {
        let admin = Admin::new(false);
        admin.listeners_bound();
        let app = router(admin);
        assert_eq!(get(&app, "GET", "/health").await.0, StatusCode::OK);
        assert_eq!(
            get(&app, "POST", "/health").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get(&app, "GET", "/").await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get(&app, "GET", "/metrics/../x").await.0,
            StatusCode::NOT_FOUND
        );
        // Before the services exist there is nothing to scrape.
        assert_eq!(
            get(&app, "GET", "/metrics").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
