//! HTML bodies cleaned for the webmail's reading pane.
//!
//! JMAP's `bodyValues` carry a message's HTML exactly as sent (RFC 8621
//! 4.1.4), which is right for a JMAP client but not something a browser page
//! may insert into itself. The webmail therefore never renders raw HTML: it
//! asks Email/get for the extra property [`PROP_HTML`] (under the
//! [`CAPABILITY`] of the session), the message's first HTML body part run
//! through ammonia's allow-list here.
//!
//! What survives is text markup, tables, lists, links and images:
//! - no `<script>`, `<style>`, `<form>`, `<iframe>`, `<object>`, `<embed>`,
//!   `<svg>`, `<math>`, `<base>`, `<meta>`, `<link>` (dropped; the content of
//!   `<script>` and `<style>` with them);
//! - no event handler (`on*`), no `style` attribute (so no CSS
//!   `expression()` or `url()`), no `class`/`id` that could reach the page's
//!   own CSS;
//! - link and image URLs only with the schemes `http`, `https`, `mailto`
//!   (links) and `cid` (images of the message itself); relative URLs are
//!   removed, since they would point at this server; links get
//!   `rel="noopener noreferrer"` and `target="_blank"`;
//! - remote images (`http`/`https` `src`) are replaced by [`BLOCKED_IMAGE`]
//!   until the reader asks for them ([`RemoteImages::Show`], property
//!   [`PROP_HTML_IMAGES`]); [`PROP_REMOTE_IMAGES`] says how many there are.
//!
//! The page adds two more walls: the mem's Content-Security-Policy
//! (`script-src 'self'`, so inline handlers could not run anyway) and
//! inserting the result with `<template>` (inert until adopted).

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};

/// The session capability announcing the properties below.
pub const CAPABILITY: &str = "urn:msgd:params:jmap:webmail";
/// Email/get property: the first HTML body part, sanitized, remote images
/// replaced by [`BLOCKED_IMAGE`]; `null` when the message has no HTML part.
pub const PROP_HTML: &str = "msgd:sanitizedHtml";
/// Email/get property: as [`PROP_HTML`] with remote images kept.
pub const PROP_HTML_IMAGES: &str = "msgd:sanitizedHtmlWithImages";
/// Email/get property: the number of remote images [`PROP_HTML`] blocked.
pub const PROP_REMOTE_IMAGES: &str = "msgd:remoteImages";
/// The properties this module answers, for Email/get's property check.
pub const PROPERTIES: [&str; 3] = [PROP_HTML, PROP_HTML_IMAGES, PROP_REMOTE_IMAGES];
/// The placeholder shown instead of a remote image (a file of the
/// webmail's static assets, served by the mem).
pub const BLOCKED_IMAGE: &str = "/static/blocked-image.svg";

/// Whether remote (`http`, `https`) images stay in the cleaned HTML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteImages {
    /// Replaced by [`BLOCKED_IMAGE`]: opening a message tells no one.
    Block,
    /// Kept: the reader asked to see them.
    Show,
}

/// A cleaned HTML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clean {
    /// The HTML, safe to insert into the page.
    pub html: String,
    /// How many remote images were replaced by the placeholder.
    pub remote_images: usize,
}

fn is_remote(url: &str) -> bool {
    let lower = url
        .trim_start()
        .get(..8)
        .unwrap_or(url)
        .to_ascii_lowercase();
    lower.starts_with("http:") || lower.starts_with("https:") || lower.starts_with("//")
}

fn keep_placeholder(url: &str) -> Option<Cow<'_, str>> {
    (url == BLOCKED_IMAGE).then_some(Cow::Borrowed(url))
}

/// Cleans `html` (a whole document or a fragment) for the reading pane.
pub fn sanitize(html: &str, images: RemoteImages) -> Clean {
    let blocked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&blocked);
    let mut builder = ammonia::Builder::default();
    builder
        .add_tags(["font"])
        .add_tag_attributes("font", ["color", "face", "size"])
        .add_tag_attributes("td", ["align", "valign", "width", "colspan", "rowspan"])
        .add_tag_attributes("th", ["align", "valign", "width", "colspan", "rowspan"])
        .add_tag_attributes("table", ["width", "border", "cellpadding", "cellspacing"])
        .url_schemes(["http", "https", "mailto", "cid"].into_iter().collect())
        // Relative URLs would point at this server: only the placeholder
        // the filter below puts in (this check runs after it) stays.
        .url_relative(ammonia::UrlRelative::Custom(Box::new(keep_placeholder)))
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .strip_comments(true)
        .attribute_filter(move |element, attribute, value| {
            match (element, attribute) {
                // `cid:` is for the message's own images, not for links.
                ("a", "href") if value.trim_start().to_ascii_lowercase().starts_with("cid:") => {
                    None
                }
                ("img", "src") if images == RemoteImages::Block && is_remote(value) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    Some(Cow::Borrowed(BLOCKED_IMAGE))
                }
                // The placeholder is for images only.
                (_, _) if value == BLOCKED_IMAGE => None,
                _ => Some(Cow::Borrowed(value)),
            }
        });
    let html = builder.clean(html).to_string();
    Clean {
        html,
        remote_images: blocked.load(Ordering::Relaxed),
    }
}

/// The [`PROPERTIES`] among `wanted`, computed from the message's first
/// HTML body part (`None` when it has none): the one call Email/get makes.
pub fn email_properties(html_body: Option<&str>, wanted: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    let wants = |p: &str| wanted.contains(&p);
    if !PROPERTIES.iter().any(|p| wants(p)) {
        return out;
    }
    let blocked = html_body.map(|h| sanitize(h, RemoteImages::Block));
    if wants(PROP_HTML) {
        let v = blocked.as_ref().map(|c| Value::from(c.html.clone()));
        out.insert(PROP_HTML.into(), v.unwrap_or(Value::Null));
    }
    if wants(PROP_REMOTE_IMAGES) {
        let n = blocked.as_ref().map_or(0, |c| c.remote_images);
        out.insert(PROP_REMOTE_IMAGES.into(), Value::from(n));
    }
    if wants(PROP_HTML_IMAGES) {
        let v = html_body.map(|h| Value::from(sanitize(h, RemoteImages::Show).html));
        out.insert(PROP_HTML_IMAGES.into(), v.unwrap_or(Value::Null));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(html: &str) -> String {
        sanitize(html, RemoteImages::Block).html
    }

    #[test]
    fn script_elements_and_their_content_are_removed() {
        let out = clean("<p>hi</p><script>window.pwned=1</script><SCRIPT src=x.js></SCRIPT>");
        assert_eq!(out, "<p>hi</p>");
    }

    #[test]
    fn event_handler_attributes_are_removed() {
        let out = clean(r#"<img src="cid:a" onerror="window.pwned=1"><b onclick="x()">b</b>"#);
        assert!(!out.to_lowercase().contains("onerror"), "{out}");
        assert!(!out.to_lowercase().contains("onclick"), "{out}");
        assert!(out.contains("<b>b</b>"), "{out}");
    }

    #[test]
    fn javascript_and_data_urls_are_removed_from_links() {
        let out = clean(
            r#"<a href="javascript:alert(1)">a</a><a href=" JaVaScRiPt:x">b</a><a href="data:text/html,<script>x</script>">c</a>"#,
        );
        assert!(!out.to_lowercase().contains("javascript"), "{out}");
        assert!(!out.contains("data:"), "{out}");
    }

    #[test]
    fn links_open_outside_the_page_without_referrer() {
        let out = clean(r#"<a href="https://example.org/x">x</a>"#);
        assert!(out.contains(r#"href="https://example.org/x""#), "{out}");
        assert!(out.contains(r#"rel="noopener noreferrer""#), "{out}");
        assert!(out.contains(r#"target="_blank""#), "{out}");
    }

    #[test]
    fn relative_urls_are_removed_since_they_would_reach_this_server() {
        let out = clean(
            r#"<a href="/logout">x</a><img src="/jmap/download/a/b/c"><a href="/static/blocked-image.svg">p</a>"#,
        );
        assert!(!out.contains("href"), "{out}");
        assert!(!out.contains("/logout"), "{out}");
        assert!(!out.contains("/jmap/"), "{out}");
    }

    #[test]
    fn css_is_removed_so_expression_and_url_cannot_run() {
        let out = clean(
            r#"<style>body{background:url(http://evil.test/a)}</style><div style="width: expression(alert(1)); background:url(http://evil.test/b)">x</div>"#,
        );
        assert_eq!(out, "<div>x</div>");
    }

    #[test]
    fn forms_and_embedded_documents_are_removed() {
        let out = clean(
            r#"<form action="https://evil.test/"><input name=p type=password><button formaction="https://evil.test">go</button></form><iframe src="https://evil.test"></iframe><object data="x"></object><embed src="x"><base href="https://evil.test/"><meta http-equiv="refresh" content="0;url=https://evil.test"><link rel=stylesheet href="https://evil.test/a.css">"#,
        );
        for bad in [
            "form", "input", "button", "iframe", "object", "embed", "base", "meta", "link", "evil",
        ] {
            assert!(!out.contains(bad), "{bad} in {out}");
        }
    }

    #[test]
    fn svg_with_scripts_is_removed() {
        let out = clean(
            r#"<svg onload="window.pwned=1"><script>window.pwned=2</script><a xlink:href="javascript:x"><text>t</text></a><animate attributeName="href" values="javascript:alert(1)"/></svg><p>after</p>"#,
        );
        assert!(!out.contains("svg"), "{out}");
        assert!(!out.contains("pwned"), "{out}");
        assert!(!out.contains("javascript"), "{out}");
        assert!(out.ends_with("<p>after</p>"), "{out}");
    }

    #[test]
    fn remote_images_are_replaced_by_the_placeholder_until_asked_for() {
        let html = r#"<img src="https://tracker.test/p.gif" alt="logo"><img src="//tracker.test/q.gif"><img src="HTTP://tracker.test/r.gif"><img src="cid:part1@x">"#;
        let blocked = sanitize(html, RemoteImages::Block);
        assert_eq!(blocked.remote_images, 3);
        assert!(!blocked.html.contains("tracker.test"), "{}", blocked.html);
        assert_eq!(
            blocked.html.matches(BLOCKED_IMAGE).count(),
            3,
            "{}",
            blocked.html
        );
        assert!(
            blocked.html.contains(r#"src="cid:part1@x""#),
            "{}",
            blocked.html
        );
        assert!(blocked.html.contains(r#"alt="logo""#), "{}", blocked.html);
        let shown = sanitize(html, RemoteImages::Show);
        assert_eq!(shown.remote_images, 0);
        assert!(
            shown.html.contains("https://tracker.test/p.gif"),
            "{}",
            shown.html
        );
    }

    #[test]
    fn no_attribute_but_img_src_loads_a_remote_resource() {
        let out = clean(
            r#"<table background="http://t.test/bg"><tr><td background="http://t.test/td">x</td></tr></table><img srcset="http://t.test/s 2x" src="cid:a"><video poster="http://t.test/v"></video><body background="http://t.test/b">"#,
        );
        assert!(!out.contains("t.test"), "{out}");
    }

    #[test]
    fn cid_urls_are_for_images_only() {
        let out = clean(r#"<a href="cid:x">a</a>"#);
        assert!(!out.contains("cid:"), "{out}");
    }

    #[test]
    fn class_and_id_cannot_reach_the_page_css() {
        let out = clean(r#"<div class="modal" id="compose">x</div>"#);
        assert_eq!(out, "<div>x</div>");
    }

    /// The Email/get hook: the first text/html part of a real message,
    /// through `email::get::message_properties` as Email/get calls it.
    #[test]
    fn email_get_renders_the_sanitized_properties_of_the_html_part() {
        use crate::jmap::email::{get::message_properties, render};
        let raw = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<p onclick=x()>rich</p><script>bad()</script>\
<img src=\"https://t.test/p.gif\">\r\n--b--\r\n";
        let parsed = render::Parsed::new(raw);
        let props: Vec<String> = ["subject", PROP_HTML, PROP_REMOTE_IMAGES]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let opts = render::BodyOptions {
            properties: None,
            fetch_text: false,
            fetch_html: false,
            fetch_all: false,
            max_bytes: 0,
        };
        let mut out = Map::new();
        message_properties(
            &parsed,
            &props,
            &opts,
            &String::new,
            &|_| String::new(),
            &mut out,
        );
        let html = out[PROP_HTML].as_str().unwrap();
        assert!(html.contains("<p>rich</p>"), "{html}");
        assert!(
            !html.contains("script") && !html.contains("t.test"),
            "{html}"
        );
        assert_eq!(out[PROP_REMOTE_IMAGES], 1);
        assert!(!out.contains_key(PROP_HTML_IMAGES));

        let text_only = b"From: a@x.test\r\nSubject: t\r\n\r\njust text\r\n";
        let mut out = Map::new();
        message_properties(
            &render::Parsed::new(text_only),
            &props,
            &opts,
            &String::new,
            &|_| String::new(),
            &mut out,
        );
        assert_eq!(out[PROP_HTML], Value::Null);
    }

    #[test]
    fn email_properties_answers_only_what_was_asked() {
        let none = email_properties(Some("<p>x</p>"), &["subject"]);
        assert!(none.is_empty());
        let all = email_properties(
            Some(r#"<p>x</p><img src="https://t.test/a">"#),
            &[PROP_HTML, PROP_REMOTE_IMAGES, PROP_HTML_IMAGES],
        );
        assert_eq!(all[PROP_REMOTE_IMAGES], 1);
        assert!(!all[PROP_HTML].as_str().unwrap().contains("t.test"));
        assert!(all[PROP_HTML_IMAGES].as_str().unwrap().contains("t.test"));
        let text_only = email_properties(None, &[PROP_HTML, PROP_REMOTE_IMAGES]);
        assert_eq!(text_only[PROP_HTML], Value::Null);
        assert_eq!(text_only[PROP_REMOTE_IMAGES], 0);
    }
}
