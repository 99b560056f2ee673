//! The mem role: the webmail front end. See docs/webmail.md.

pub mod session;

use axum::routing::get;
use axum::Router;

use crate::services::Services;

/// The webmail page, login/logout and the forwarding of a logged-in
/// user's JMAP calls to the store named by their mailHost.
pub fn routes() -> Router<Services> {
    Router::new().route("/", get(not_yet))
}

async fn not_yet() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "webmail is being built\n",
    )
}
