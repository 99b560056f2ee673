//! JMAP (RFC 8620 core, RFC 8621 mail, RFC 9610 contacts) on the store.
//! See docs/jmap.md.
//!
//! Endpoints (`routes`): `/.well-known/jmap` (redirect), `/jmap/session`,
//! `POST /jmap/api`, `POST /jmap/upload/{accountId}`,
//! `GET /jmap/download/{accountId}/{blobId}/{name}`, `GET /jmap/eventsource`.
//!
//! Every request is authenticated first (`auth`), then counted against
//! the user's `maxConcurrentRequests`; only then is the body read, at most
//! `maxSizeRequest` bytes within `http.request_timeout`.
//!
//! Writing a method (helpers: add it to `methods::dispatch` and, for a new
//! data type, `methods::capability`):
//!
//! ```ignore
//! pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError>
//! ```
//!
//! - `args` are the call's arguments with result references already
//!   resolved; `accountId`, when present, has been checked to be the
//!   user's (`ctx.account_id`), so a method needs not check it again.
//! - `ctx.user` is the store's user name (the directory's canonical
//!   address); every id a client sends must be checked against it (the
//!   store's JMAP lookups take the user and answer nothing for another
//!   user's ids: report those as `notFound`).
//! - `ctx.resolve_id("#k")` maps a creation id of this request to the id
//!   created; a `/set` records its creations with `ctx.created(k, id)`.
//! - A method that answers with more than one response (Email/copy's
//!   implicit Email/set) pushes the extra ones on `ctx.extra`.
//! - States: `ctx.store().jmap_state(user, kind)`, `methods::changes`
//!   for a standard `/changes` over the journal (`store::JmapKind`).
//! - Blobs: `blob::read(ctx, blob_id)` gives a blob's bytes.

pub mod auth;
pub mod blob;
pub mod contacts;
pub mod core;
pub mod email;
pub mod error;
pub mod identity;
pub mod ids;
pub mod mailbox;
pub mod methods;
pub mod push;
pub mod request;
pub mod sanitize;
pub mod session;
pub mod submission;
pub mod thread;
pub mod vacation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

pub use error::{MethodError, Problem};

use crate::config::Config;
use crate::net::ConnInfo;
use crate::services::Services;
use crate::store::Store;

/// JMAP's process-wide state, in `crate::http::Web::jmap`.
#[derive(Default)]
pub struct Shared {
    token_key: OnceLock<Option<crate::http::token::TokenKey>>,
    /// Requests in progress per user (`maxConcurrentRequests`).
    requests: Counters,
    /// Uploads in progress per user (`maxConcurrentUpload`).
    uploads: Counters,
    /// Event-source streams open per user (bounded like requests).
    pub(crate) streams: Counters,
    /// Serializes the read-modify-write cycles of the settings records
    /// (identities, vacation response, submission's).
    pub(crate) settings: Arc<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// The bearer-token key (`http.token_key_file`), loaded once; None
    /// when it cannot be read or created (tokens are then refused).
    pub fn token_key(&self, config: &Config) -> Option<&crate::http::token::TokenKey> {
        self.token_key
            .get_or_init(|| {
                let path = config.data_path(&config.http.token_key_file, "http-token.key");
                match crate::http::keys::load_or_create(&path) {
                    Ok(k) => Some(crate::http::token::TokenKey::new(&k)),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "jmap: cannot load the token key");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Per-user counters with a guard that gives the slot back.
#[derive(Default, Clone)]
pub(crate) struct Counters(Arc<Mutex<HashMap<String, u32>>>);

pub(crate) struct Slot {
    counters: Counters,
    user: String,
}

impl Counters {
    /// Takes one of `max` slots of `user`; None when all are taken.
    pub(crate) fn enter(&self, user: &str, max: u32) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(user.to_string()).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Slot {
            counters: self.clone(),
            user: user.to_string(),
        })
    }

    /// `enter`, or the RFC 8620 limit problem (429) naming `limit` when
    /// every slot is taken.
    pub(crate) fn enter_or_refuse(
        &self,
        user: &str,
        max: u32,
        limit: &'static str,
        text: &'static str,
    ) -> Result<Slot, Problem> {
        self.enter(user, max)
            .ok_or_else(|| Problem::limit(StatusCode::TOO_MANY_REQUESTS, limit, text))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.counters.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// What a method call runs with.
pub struct Ctx {
    pub services: Services,
    /// The authenticated user (the store's user name).
    pub user: String,
    /// `ids::account_id(user)`.
    pub account_id: String,
    /// The capabilities the request named.
    pub using: Vec<String>,
    /// Creation id -> id created, for this request (RFC 8620 5.3).
    pub created_ids: HashMap<String, String>,
    /// Responses a method adds after its own: (name, arguments).
    pub extra: Vec<(String, Value)>,
}

impl Ctx {
    pub fn new(services: Services, user: String, using: Vec<String>) -> Ctx {
        Ctx {
            account_id: ids::account_id(&user),
            services,
            user,
            using,
            created_ids: HashMap::new(),
            extra: Vec::new(),
        }
    }

    pub fn store(&self) -> &Store {
        self.services.store()
    }

    /// `#creationId` -> the id created in this request; other ids as they
    /// are; None for an unknown creation id.
    pub fn resolve_id(&self, id: &str) -> Option<String> {
        request::resolve_id(id, &self.created_ids)
    }

    pub fn created(&mut self, creation_id: &str, id: &str) {
        self.created_ids
            .insert(creation_id.to_string(), id.to_string());
    }
}

/// The JMAP endpoints.
pub fn routes() -> Router<Services> {
    Router::new()
        .route("/.well-known/jmap", get(well_known))
        .route("/jmap/session", get(session_resource))
        .route("/jmap/api", post(api))
        .route("/jmap/upload/{account}", post(blob::upload))
        .route(
            "/jmap/download/{account}/{blob}/{name}",
            get(blob::download),
        )
        .route("/jmap/eventsource", get(push::eventsource))
        .merge(auth::session_routes())
}

async fn well_known() -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, "/jmap/session")],
    )
        .into_response()
}

/// JSON with `Cache-Control: no-store`.
pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn session_resource(
    State(services): State<Services>,
    Extension(info): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let user = match auth::authenticate(&services, &info, &headers, &method).await {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    let base = session::base_url(&services.config.http, &info, &headers);
    json_response(
        StatusCode::OK,
        &session::session(&services.config.http, &user, &base),
    )
}

/// Reads a request body of at most `max` bytes within the request
/// timeout; the problem to answer otherwise.
pub(crate) async fn read_body(
    services: &Services,
    headers: &HeaderMap,
    body: Body,
    max: u64,
    limit: &'static str,
) -> Result<axum::body::Bytes, Problem> {
    let too_large = || {
        Problem::limit(
            StatusCode::PAYLOAD_TOO_LARGE,
            limit,
            format!("the body is larger than {max} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large());
        }
    }
    let timeout = Duration::from_secs(services.config.http.request_timeout.max(1));
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max as usize)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) if crate::http::deadline::is_body_timeout(&e) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "about:blank",
            "the request body did not arrive in time",
        )),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "about:blank",
            "the request body did not arrive in time",
        )),
    }
}

async fn api(
    State(services): State<Services>,
    Extension(info): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = match auth::authenticate(&services, &info, &headers, &method).await {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    let cfg = &services.config.http;
    let _slot = match services.web.jmap.requests.enter_or_refuse(
        &user,
        cfg.max_concurrent_requests,
        "maxConcurrentRequests",
        "too many requests in progress for this account",
    ) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let bytes = match read_body(
        &services,
        &headers,
        body,
        cfg.max_size_request,
        "maxSizeRequest",
    )
    .await
    {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                error::NOT_JSON,
                "the request body is not JSON",
            )
            .into_response()
        }
    };
    drop(bytes);
    let req = match request::parse(
        value,
        session::CAPABILITIES,
        cfg.max_calls_in_request as usize,
    ) {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let answer = run(services.clone(), user, req).await;
    json_response(StatusCode::OK, &answer)
}

/// Runs the calls of a request in order (RFC 8620 3.6): one failing call
/// answers an error for itself and the next ones still run.
pub async fn run(services: Services, user: String, req: request::Request) -> Value {
    let echo_created = req.created_ids.is_some();
    let mut ctx = Ctx::new(services, user, req.using);
    if let Some(c) = req.created_ids {
        ctx.created_ids = c;
    }
    let mut responses: Vec<(String, Value, String)> = Vec::new();
    for call in req.calls {
        let result = async {
            let args = request::resolve_references(call.args, &responses)?;
            let cap = methods::capability(&call.name).ok_or(MethodError::UnknownMethod)?;
            if !ctx.using.iter().any(|u| u == cap) {
                return Err(MethodError::UnknownMethod);
            }
            if let Some(a) = args.get("accountId") {
                if a.as_str() != Some(ctx.account_id.as_str()) {
                    return Err(MethodError::AccountNotFound);
                }
            }
            methods::dispatch(&mut ctx, &call.name, args).await
        }
        .await;
        match result {
            Ok(v) => {
                responses.push((call.name.clone(), v, call.id.clone()));
                for (name, v) in std::mem::take(&mut ctx.extra) {
                    responses.push((name, v, call.id.clone()));
                }
            }
            Err(e) => {
                if let MethodError::ServerFail(d) = &e {
                    warn!(method = %call.name, error = %d, "jmap method failed");
                } else {
                    debug!(method = %call.name, error = e.kind(), "jmap method error");
                }
                ctx.extra.clear();
                responses.push(("error".into(), e.to_json(), call.id.clone()));
            }
        }
    }
    let list: Vec<Value> = responses
        .into_iter()
        .map(|(n, v, id)| json!([n, v, id]))
        .collect();
    let mut out = Map::new();
    out.insert("methodResponses".into(), Value::Array(list));
    if echo_created {
        out.insert("createdIds".into(), json!(ctx.created_ids));
    }
    out.insert("sessionState".into(), json!(session::SESSION_STATE));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> request::Request {
        request::parse(v, session::CAPABILITIES, 16).unwrap()
    }

    #[tokio::test]
    async fn rfc8620_3_6_errors_per_call_and_references_between_calls() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let out = run(
            s,
            "u@localhost".into(),
            req(json!({
                "using": [session::CORE],
                "methodCalls": [
                    ["Core/echo", {"x": [1, 2]}, "a"],
                    ["Mailbox/get", {}, "b"],
                    ["Nope/get", {}, "c"],
                    ["Core/echo", {"#y": {"resultOf": "a", "name": "Core/echo", "path": "/x/1"}}, "d"],
                    ["Core/echo", {"#y": {"resultOf": "zz", "name": "Core/echo", "path": "/x"}}, "e"],
                ],
                "createdIds": {},
            })),
        )
        .await;
        let r = &out["methodResponses"];
        assert_eq!(r[0], json!(["Core/echo", {"x": [1, 2]}, "a"]));
        // Mail not in `using`: unknownMethod.
        assert_eq!(r[1], json!(["error", {"type": "unknownMethod"}, "b"]));
        assert_eq!(r[2], json!(["error", {"type": "unknownMethod"}, "c"]));
        assert_eq!(r[3], json!(["Core/echo", {"y": 2}, "d"]));
        assert_eq!(r[4][1]["type"], "invalidResultReference");
        assert_eq!(out["createdIds"], json!({}));
        assert!(out["sessionState"].is_string());
    }

    #[tokio::test]
    async fn rfc8620_3_6_2_account_not_found_for_another_account() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let other = ids::account_id("someone@else");
        let out = run(
            s,
            "u@localhost".into(),
            req(json!({
                "using": [session::CORE, session::MAIL],
                "methodCalls": [["Mailbox/get", {"accountId": other}, "a"]],
            })),
        )
        .await;
        assert_eq!(out["methodResponses"][0][1]["type"], "accountNotFound");
        assert!(out.get("createdIds").is_none());
    }

    #[test]
    fn concurrency_slots_are_given_back() {
        let c = Counters::default();
        let a = c.enter("u", 2).unwrap();
        let _b = c.enter("u", 2).unwrap();
        assert!(c.enter("u", 2).is_none());
        assert!(c.enter("v", 2).is_some());
        drop(a);
        assert!(c.enter("u", 2).is_some());
    }
}
