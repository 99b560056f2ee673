//! The webmail's login sessions: sealed cookies, expiry, CSRF.
//! (Being built for issue 13; see docs/webmail.md.)

use axum::http::{HeaderMap, Method};

use crate::services::Services;

/// Why a cookie-authenticated request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid session (missing, forged, expired cookie): 401.
    NoSession,
    /// A state-changing request without the session's CSRF token: 403.
    Csrf,
}

/// The user of the webmail session a request carries, for the store's
/// JMAP routes when the mem runs in the same process (all-in-one):
/// `Ok(None)` when the request has no session cookie at all (the caller
/// then tries its other authentication schemes), `Ok(Some(user))` for a
/// valid session whose CSRF token matches (state-changing methods), and
/// `Err` for a cookie that is present but not acceptable.
pub fn user_from_cookie(
    _services: &Services,
    _headers: &HeaderMap,
    _method: &Method,
) -> Result<Option<String>, Refusal> {
    Ok(None)
}
