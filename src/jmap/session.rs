//! The session resource (RFC 8620 2): `GET /jmap/session`, and
//! `/.well-known/jmap` redirecting to it.
//!
//! URLs are built from `http.base_url`, else from the request: the Host
//! header (checked to be a plain host[:port]) and the scheme of the
//! connection (https when TLS is active). `X-Forwarded-Proto` and
//! `X-Forwarded-Host` are honoured only from `http.token_networks` (the
//! mems, which forward the user's requests).

use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

use crate::config::HttpConfig;
use crate::net::ConnInfo;

pub const CORE: &str = "urn:ietf:params:jmap:core";
pub const MAIL: &str = "urn:ietf:params:jmap:mail";
pub const SUBMISSION: &str = "urn:ietf:params:jmap:submission";
pub const VACATION: &str = "urn:ietf:params:jmap:vacationresponse";
pub const CONTACTS: &str = "urn:ietf:params:jmap:contacts";

/// The capabilities a request may name in `using`.
pub const CAPABILITIES: &[&str] = &[
    CORE,
    MAIL,
    SUBMISSION,
    VACATION,
    CONTACTS,
    super::sanitize::CAPABILITY,
];

/// The session's state string: changes when the session object would.
pub const SESSION_STATE: &str = "s1";

fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// `scheme://host[:port]` of this server as the client reaches it.
pub fn base_url(cfg: &HttpConfig, info: &ConnInfo, headers: &HeaderMap) -> String {
    if !cfg.base_url.is_empty() {
        return cfg.base_url.trim_end_matches('/').to_string();
    }
    let trusted = super::auth::from_trusted(info, &cfg.token_networks);
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
    };
    let mut scheme = if info.tls_active { "https" } else { "http" }.to_string();
    let mut host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| plain_host(h))
        .map(str::to_string)
        .unwrap_or_else(|| info.local.to_string());
    if trusted {
        if let Some(p) = header_str("x-forwarded-proto") {
            if p == "https" || p == "http" {
                scheme = p;
            }
        }
        if let Some(h) = header_str("x-forwarded-host").filter(|h| plain_host(h)) {
            host = h;
        }
    }
    format!("{scheme}://{host}")
}

/// The session object for `user`.
pub fn session(cfg: &HttpConfig, user: &str, base: &str) -> Value {
    let account = super::ids::account_id(user);
    let core = json!({
        "maxSizeUpload": cfg.max_size_upload,
        "maxConcurrentUpload": cfg.max_concurrent_upload,
        "maxSizeRequest": cfg.max_size_request,
        "maxConcurrentRequests": cfg.max_concurrent_requests,
        "maxCallsInRequest": cfg.max_calls_in_request,
        "maxObjectsInGet": cfg.max_objects_in_get,
        "maxObjectsInSet": cfg.max_objects_in_set,
        "collationAlgorithms": ["i;ascii-casemap", "i;unicode-casemap"],
    });
    let mail = json!({
        "maxMailboxesPerEmail": null,
        "maxMailboxDepth": 32,
        "maxSizeMailboxName": 490,
        "maxSizeAttachmentsPerEmail": cfg.max_size_upload,
        "emailQuerySortOptions": ["receivedAt", "sentAt", "size", "from", "to", "subject"],
        "mayCreateTopLevelMailbox": true,
    });
    let submission = json!({"maxDelayedSend": 0, "submissionExtensions": {}});
    json!({
        "capabilities": {
            CORE: core,
            MAIL: {},
            SUBMISSION: {},
            VACATION: {},
            CONTACTS: {},
            // Email/get's msgd:sanitizedHtml & co. (src/jmap/sanitize.rs).
            super::sanitize::CAPABILITY: {},
        },
        "accounts": {
            account.clone(): {
                "name": user,
                "isPersonal": true,
                "isReadOnly": false,
                "accountCapabilities": {
                    MAIL: mail,
                    SUBMISSION: submission,
                    VACATION: {},
                    CONTACTS: {},
                },
            }
        },
        "primaryAccounts": {
            MAIL: account,
            SUBMISSION: account,
            VACATION: account,
            CONTACTS: account,
        },
        "username": user,
        "apiUrl": format!("{base}/jmap/api"),
        "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}"),
        "uploadUrl": format!("{base}/jmap/upload/{{accountId}}"),
        "eventSourceUrl": format!("{base}/jmap/eventsource?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
        "state": SESSION_STATE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;

    #[test]
    fn rfc8620_2_session_urls_from_host_and_scheme() {
        let cfg = HttpConfig::default();
        let mut info = ConnInfo::for_test(Protocol::Https);
        info.peer = "192.0.2.1:4000".parse().unwrap();
        info.tls_active = true;
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "mail.example.com:8443".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        assert_eq!(base_url(&cfg, &info, &h), "https://mail.example.com:8443");
        // A mem (loopback here) may say what the client used.
        info.peer = "127.0.0.1:4000".parse().unwrap();
        info.tls_active = false;
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(base_url(&cfg, &info, &h), "https://evil.example");
        h.insert(header::HOST, "bad/host".parse().unwrap());
        h.remove("x-forwarded-host");
        assert!(!base_url(&cfg, &info, &h).contains("bad/host"));
        let cfg = HttpConfig {
            base_url: "https://m.example/".into(),
            ..HttpConfig::default()
        };
        assert_eq!(base_url(&cfg, &info, &h), "https://m.example");
    }

    #[test]
    fn rfc8620_2_session_advertises_limits_and_accounts() {
        let s = session(&HttpConfig::default(), "a@x", "https://h");
        assert_eq!(s["capabilities"][CORE]["maxCallsInRequest"], 16);
        assert_eq!(s["capabilities"][CORE]["maxSizeUpload"], 50_000_000);
        let acc = super::super::ids::account_id("a@x");
        assert_eq!(s["primaryAccounts"][MAIL], acc);
        assert_eq!(s["accounts"][&acc]["isPersonal"], true);
        assert_eq!(s["apiUrl"], "https://h/jmap/api");
    }
}
