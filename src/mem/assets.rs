//! The webmail page's static files, embedded in the binary by build.rs
//! from `webmail/` at the repository root: `index.html` is served at `/`
//! (to a logged-in user), every file at `/static/<path>`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

mod table {
    include!(concat!(env!("OUT_DIR"), "/webmail_assets.rs"));
}

/// The login and error pages' style, unless `webmail/login.css` gives
/// another.
const LOGIN_CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d1d1f}
.login{max-width:22rem;margin:10vh auto;padding:2rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15)}
.login h1{font-size:1.4rem;margin-top:0}
.login label{display:block;margin:.8rem 0 .3rem}
.login input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
.login button{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem}
.error{color:#b00020}
";

/// The embedded file at `path` (relative to `webmail/`).
pub fn get(path: &str) -> Option<&'static [u8]> {
    table::ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
        .or_else(|| (path == "login.css").then_some(LOGIN_CSS.as_bytes()))
}

/// Content type by extension; unknown files are served as bytes (with
/// nosniff, a browser will not run them as script or style).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The response for an embedded file, or 404.
pub fn response(path: &str) -> Response {
    match get(path) {
        Some(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(path)),
                ),
                // Revalidated on every use: a new binary brings a new page.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_embedded_with_its_type() {
        assert!(get("index.html").is_some_and(|b| !b.is_empty()));
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
        assert!(get("../Cargo.toml").is_none());
    }
}
