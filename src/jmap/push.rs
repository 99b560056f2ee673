//! Push by event source (RFC 8620 7.3):
//! `GET /jmap/eventsource?types=*&closeafter=no&ping=N`.
//!
//! One small task per stream waits on the store's per-user watch
//! (`Store::watch_user`, bumped after every commit touching the user) and
//! sends a `state` event with the types whose journal state moved; the
//! first event gives the current states (except with `closeafter=state`,
//! whose one event is the first change). `ping` (seconds, 0: none) is
//! clamped to `http.push_ping_min..=push_ping_max`. `closeafter=state`
//! ends the stream after the first change. Streams end when the client
//! goes, at shutdown, and count against `maxConcurrentRequests` per user.
//! Memory per idle stream: the task, a watch receiver and a 4-event
//! channel.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;
use tokio::sync::mpsc;

use super::blob::ChannelBody;
use super::error::Problem;
use super::{auth, ids};
use crate::net::ConnInfo;
use crate::services::Services;
use crate::store::JmapKind;

/// The types a stream reports (`types=*`: every kind; unknown names are
/// ignored, RFC 8620 7.3).
pub fn parse_types(s: &str) -> Vec<JmapKind> {
    if s.trim() == "*" {
        return JmapKind::ALL.to_vec();
    }
    let mut v: Vec<JmapKind> = s
        .split(',')
        .filter_map(|t| JmapKind::from_name(t.trim()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The ping interval in seconds: 0 stays 0 (no pings), others clamped.
pub fn ping_interval(requested: u64, min: u64, max: u64) -> u64 {
    if requested == 0 {
        0
    } else {
        requested.clamp(min.max(1), max.max(min.max(1)))
    }
}

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

async fn states(
    services: &Services,
    user: &str,
    kinds: &[JmapKind],
) -> Option<BTreeMap<&'static str, String>> {
    let mut out = BTreeMap::new();
    for k in kinds {
        let s = services.store().jmap_state(user, *k).await.ok()?;
        out.insert(k.name(), s.to_string());
    }
    Some(out)
}

pub async fn eventsource(
    State(services): State<Services>,
    Extension(info): Extension<ConnInfo>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let user = match auth::authenticate(&services, &info, &headers, &method).await {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    let cfg = &services.config.http;
    let slot = match services.web.jmap.streams.enter_or_refuse(
        &user,
        cfg.max_concurrent_requests,
        "maxConcurrentRequests",
        "too many event streams open for this account",
    ) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let kinds = parse_types(q.get("types").map(String::as_str).unwrap_or("*"));
    let close_after_state = match q.get("closeafter").map(String::as_str) {
        None | Some("no") => false,
        Some("state") => true,
        Some(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "about:blank",
                "closeafter is state or no",
            )
            .into_response()
        }
    };
    let ping = match q.get("ping").map(|p| p.parse::<u64>()) {
        None => 0,
        Some(Ok(p)) => ping_interval(p, cfg.push_ping_min, cfg.push_ping_max),
        Some(Err(_)) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "about:blank",
                "ping is a number of seconds",
            )
            .into_response()
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    // The watch first, then the states the stream starts from (read before
    // the response goes out): a change after either is never missed.
    let mut watch = services.store().watch_user(&user);
    let Some(initial) = states(&services, &user, &kinds).await else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "about:blank",
            "the store is not available",
        )
        .into_response();
    };
    let account = ids::account_id(&user);
    let shutdown = services.shutdown.clone();
    // The user's hold (`msgd user move`) ends the stream; the client's
    // reconnect then gets 503 + Retry-After.
    let mut moved = services.store().moving().watch(&user);
    let held = services.store().moving().deferred(&user).is_some();
    tokio::spawn(async move {
        if held {
            return;
        }
        let _slot = slot;
        let mut last: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut first = true;
        let mut initial = Some(initial);
        let ping_every = Duration::from_secs(if ping == 0 { 86_400 } else { ping });
        let mut next_ping = tokio::time::Instant::now() + ping_every;
        loop {
            let now = match initial.take() {
                Some(i) => i,
                None => match states(&services, &user, &kinds).await {
                    Some(n) => n,
                    None => break,
                },
            };
            let changed: BTreeMap<&str, &String> = now
                .iter()
                .filter(|(k, v)| last.get(*k) != Some(*v))
                .map(|(k, v)| (*k, v))
                .collect();
            // closeafter=state (long polling): no first event, the
            // response ends with the first change (RFC 8620 7.3).
            let silent = first && close_after_state;
            if !changed.is_empty() && !silent {
                let data = json!({"@type": "StateChange", "changed": {account.clone(): changed}});
                if tx.send(event("state", &data)).await.is_err() {
                    break;
                }
                if close_after_state {
                    break;
                }
            }
            first = false;
            last = now;
            loop {
                tokio::select! {
                    r = watch.changed() => {
                        if r.is_err() { return; }
                        break;
                    }
                    _ = tokio::time::sleep_until(next_ping) => {
                        next_ping = tokio::time::Instant::now() + ping_every;
                        if ping != 0 && tx.send(event("ping", &json!({"interval": ping}))).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                    _ = moved.changed() => return,
                }
            }
        }
    });
    let mut resp = Response::new(Body::new(ChannelBody(rx)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8620_7_3_types_and_ping() {
        assert_eq!(parse_types("*").len(), JmapKind::ALL.len());
        assert_eq!(
            parse_types("Email,Mailbox,Nope,Email"),
            vec![JmapKind::Mailbox, JmapKind::Email]
        );
        assert_eq!(ping_interval(0, 30, 300), 0);
        assert_eq!(ping_interval(1, 30, 300), 30);
        assert_eq!(ping_interval(100, 30, 300), 100);
        assert_eq!(ping_interval(100_000, 30, 300), 300);
    }
}
