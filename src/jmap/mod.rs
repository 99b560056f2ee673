//! JMAP (RFC 8620 core, RFC 8621 mail, RFC 9610 contacts) on the store.
//! See docs/jmap.md.

pub mod sanitize;

use axum::routing::get;
use axum::Router;

use crate::services::Services;

/// The JMAP endpoints: `/.well-known/jmap`, `/jmap/session`, `/jmap/api`,
/// `/jmap/upload/{accountId}`, `/jmap/download/{accountId}/{blobId}/{name}`,
/// `/jmap/eventsource`.
pub fn routes() -> Router<Services> {
    Router::new().route("/jmap/session", get(not_yet))
}

async fn not_yet() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "JMAP is being built\n",
    )
}
