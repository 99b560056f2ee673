//! Blobs (RFC 8620 6): upload, download, and `read` for methods.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub async fn upload() -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}

pub async fn download() -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
