//! JMAP errors: method-level errors (RFC 8620 3.6.2, answered as
//! `["error", {"type": ...}, callId]`) and request-level problem details
//! (RFC 8620 3.6.1, RFC 7807, `application/problem+json`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Why a method call failed. Methods return it; the dispatcher turns it
/// into an `error` response for that call only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodError {
    UnknownMethod,
    InvalidArguments(String),
    InvalidResultReference(String),
    AccountNotFound,
    AccountNotSupportedByMethod,
    AccountReadOnly,
    Forbidden(String),
    RequestTooLarge,
    CannotCalculateChanges,
    StateMismatch,
    TooManyChanges,
    UnsupportedFilter(String),
    UnsupportedSort(String),
    AnchorNotFound,
    FromAccountNotFound,
    ServerUnavailable,
    ServerFail(String),
    /// Any other type a method defines (RFC 8621 `...`), with a description.
    Other(&'static str, String),
}

impl MethodError {
    pub fn kind(&self) -> &'static str {
        match self {
            MethodError::UnknownMethod => "unknownMethod",
            MethodError::InvalidArguments(_) => "invalidArguments",
            MethodError::InvalidResultReference(_) => "invalidResultReference",
            MethodError::AccountNotFound => "accountNotFound",
            MethodError::AccountNotSupportedByMethod => "accountNotSupportedByMethod",
            MethodError::AccountReadOnly => "accountReadOnly",
            MethodError::Forbidden(_) => "forbidden",
            MethodError::RequestTooLarge => "requestTooLarge",
            MethodError::CannotCalculateChanges => "cannotCalculateChanges",
            MethodError::StateMismatch => "stateMismatch",
            MethodError::TooManyChanges => "tooManyChanges",
            MethodError::UnsupportedFilter(_) => "unsupportedFilter",
            MethodError::UnsupportedSort(_) => "unsupportedSort",
            MethodError::AnchorNotFound => "anchorNotFound",
            MethodError::FromAccountNotFound => "fromAccountNotFound",
            MethodError::ServerUnavailable => "serverUnavailable",
            MethodError::ServerFail(_) => "serverFail",
            MethodError::Other(t, _) => t,
        }
    }

    pub fn invalid(why: impl Into<String>) -> MethodError {
        MethodError::InvalidArguments(why.into())
    }

    /// The error object (`{"type": ..., "description": ...}`).
    pub fn to_json(&self) -> Value {
        let description = match self {
            MethodError::InvalidArguments(d)
            | MethodError::InvalidResultReference(d)
            | MethodError::Forbidden(d)
            | MethodError::UnsupportedFilter(d)
            | MethodError::UnsupportedSort(d)
            | MethodError::Other(_, d) => Some(d.as_str()),
            // Internal details stay in the log.
            MethodError::ServerFail(_) => Some("internal error"),
            _ => None,
        };
        match description {
            Some(d) if !d.is_empty() => json!({"type": self.kind(), "description": d}),
            _ => json!({"type": self.kind()}),
        }
    }
}

impl From<crate::store::StoreError> for MethodError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::DiskFull | crate::store::StoreError::OverQuota => {
                MethodError::Other("overQuota", e.to_string())
            }
            // The account is being moved to another store: try later.
            crate::store::StoreError::Moving => MethodError::ServerUnavailable,
            e => MethodError::ServerFail(e.to_string()),
        }
    }
}

/// An error about one object of a `/set` (RFC 8620 5.3 SetError).
pub fn set_error(kind: &str, description: impl Into<String>) -> Value {
    let d: String = description.into();
    if d.is_empty() {
        json!({"type": kind})
    } else {
        json!({"type": kind, "description": d})
    }
}

/// Request-level error types (RFC 8620 3.6.1).
pub const NOT_JSON: &str = "urn:ietf:params:jmap:error:notJSON";
pub const NOT_REQUEST: &str = "urn:ietf:params:jmap:error:notRequest";
pub const LIMIT: &str = "urn:ietf:params:jmap:error:limit";
pub const UNKNOWN_CAPABILITY: &str = "urn:ietf:params:jmap:error:unknownCapability";

/// An RFC 7807 problem details response.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: String,
    pub detail: String,
    /// For `limit`: which limit (RFC 8620 3.6.1).
    pub limit: Option<&'static str>,
    /// Extra headers (WWW-Authenticate on 401).
    pub www_authenticate: Option<String>,
    /// Retry-After seconds (a 503 the client should retry).
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind: kind.to_string(),
            detail: detail.into(),
            limit: None,
            www_authenticate: None,
            retry_after: None,
        }
    }

    pub fn limit(status: StatusCode, limit: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            limit: Some(limit),
            ..Problem::new(status, LIMIT, detail)
        }
    }

    pub fn body(&self) -> Value {
        let mut v = json!({
            "type": self.kind,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(l) = self.limit {
            v["limit"] = json!(l);
        }
        v
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut r = (self.status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(w) = self
            .www_authenticate
            .and_then(|w| HeaderValue::from_str(&w).ok())
        {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, w);
        }
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8620_3_6_2_method_error_shape() {
        assert_eq!(
            MethodError::UnknownMethod.to_json(),
            json!({"type": "unknownMethod"})
        );
        assert_eq!(
            MethodError::ServerFail("disk on fire at /x".into()).to_json(),
            json!({"type": "serverFail", "description": "internal error"})
        );
    }

    #[test]
    fn rfc8620_3_6_1_problem_details_carry_limit() {
        let p = Problem::limit(StatusCode::BAD_REQUEST, "maxCallsInRequest", "too many");
        assert_eq!(p.body()["type"], LIMIT);
        assert_eq!(p.body()["limit"], "maxCallsInRequest");
        assert_eq!(p.body()["status"], 400);
    }
}
