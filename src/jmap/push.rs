//! Push by event source (RFC 8620 7.3).
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub async fn eventsource() -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
