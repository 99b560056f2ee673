//! SearchSnippet/get (RFC 8621 5.1): the subject and a fragment of the
//! body with the terms of the filter's text conditions (`text`, `body`,
//! `subject`) marked by `<mark>`, everything HTML-escaped.

use serde_json::{json, Map, Value};

use super::index::Index;
use super::query::parse_filter;
use super::render::{self, Parsed};
use crate::jmap::ids::{email_id, parse_email_id, parse_mailbox_id};
use crate::jmap::{Ctx, MethodError};

/// Longest preview fragment, in characters (the RFC's 255).
const PREVIEW_CHARS: usize = 255;
/// Body text looked at per email.
const MAX_TEXT: usize = 256 * 1024;

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Case-insensitive (ASCII and simple Unicode lowercase) match ranges of
/// any term in `text`, in byte offsets, non-overlapping, sorted.
fn ranges(text: &str, terms: &[String]) -> Vec<(usize, usize)> {
    let lower: Vec<(usize, char)> = text
        .char_indices()
        .map(|(i, c)| (i, c.to_lowercase().next().unwrap_or(c)))
        .collect();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for t in terms {
        let t: Vec<char> = t
            .chars()
            .map(|c| c.to_lowercase().next().unwrap_or(c))
            .collect();
        if t.is_empty() || t.len() > lower.len() {
            continue;
        }
        let mut i = 0;
        while i + t.len() <= lower.len() {
            if lower[i..i + t.len()]
                .iter()
                .map(|x| x.1)
                .eq(t.iter().copied())
            {
                let start = lower[i].0;
                let end = lower.get(i + t.len()).map_or(text.len(), |x| x.0);
                out.push((start, end));
                i += t.len();
            } else {
                i += 1;
            }
            if out.len() > 1000 {
                break;
            }
        }
    }
    out.sort();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for r in out {
        match merged.last_mut() {
            Some(l) if r.0 <= l.1 => l.1 = l.1.max(r.1),
            _ => merged.push(r),
        }
    }
    merged
}

/// `text` escaped with the matches marked; None when nothing matches.
pub fn highlight(text: &str, terms: &[String]) -> Option<String> {
    let rs = ranges(text, terms);
    if rs.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut pos = 0;
    for (s, e) in rs {
        escape(&text[pos..s], &mut out);
        out.push_str("<mark>");
        escape(&text[s..e], &mut out);
        out.push_str("</mark>");
        pos = e;
    }
    escape(&text[pos..], &mut out);
    Some(out)
}

/// A fragment of `text` around the first match, at most `PREVIEW_CHARS`
/// characters, marked; None when nothing matches.
pub fn fragment(text: &str, terms: &[String]) -> Option<String> {
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let first = ranges(&text, terms).first().copied()?;
    // Start a little before the match, on a character boundary.
    let before: Vec<(usize, char)> = text[..first.0].char_indices().collect();
    let start = before.len().checked_sub(40).map_or(0, |i| before[i].0);
    let piece: String = text[start..].chars().take(PREVIEW_CHARS).collect();
    highlight(&piece, terms)
}

/// The words of a search string (quotes dropped).
fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| w.trim_matches('"').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// SearchSnippet/get.
pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids: Vec<String> = match args.get("emailIds") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| ctx.resolve_id(s).unwrap_or_else(|| s.to_string()))
            })
            .collect::<Option<_>>()
            .ok_or_else(|| MethodError::invalid("emailIds must be ids"))?,
        _ => return Err(MethodError::invalid("emailIds is required")),
    };
    if ids.len() > ctx.services.config.http.max_objects_in_get as usize {
        return Err(MethodError::RequestTooLarge);
    }
    let filter = match args.get("filter") {
        None | Some(Value::Null) => None,
        Some(f) => Some(parse_filter(f, &parse_mailbox_id)?),
    };
    let mut terms = Vec::new();
    if let Some(f) = &filter {
        f.search_terms(&mut terms);
    }
    let subject_terms: Vec<String> = terms
        .iter()
        .filter(|(f, _)| f == "text" || f == "subject")
        .flat_map(|(_, t)| words(t))
        .collect();
    let body_terms: Vec<String> = terms
        .iter()
        .filter(|(f, _)| f == "text" || f == "body")
        .flat_map(|(_, t)| words(t))
        .collect();
    let nums: Vec<u64> = ids.iter().filter_map(|s| parse_email_id(s)).collect();
    let index = Index::load_ids(ctx.store(), &ctx.user, &nums).await?;
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for id in ids {
        let Some(e) = parse_email_id(&id).and_then(|i| index.emails.get(&i)) else {
            not_found.push(Value::String(id));
            continue;
        };
        if subject_terms.is_empty() && body_terms.is_empty() {
            list.push(json!({"emailId": email_id(e.id), "subject": null, "preview": null}));
            continue;
        }
        let Some(data) = e.bytes(ctx.store(), &ctx.user).await? else {
            not_found.push(Value::String(id));
            continue;
        };
        let (st, bt) = (subject_terms.clone(), body_terms.clone());
        let r = tokio::task::spawn_blocking(move || {
            crate::imap::mime::contained("snippet", 0, || {
                let p = Parsed::new(&data);
                let subject = render::header_prop(
                    p.header(),
                    &render::convenience("subject").expect("known"),
                );
                let subject = subject.as_str().and_then(|s| highlight(s, &st));
                let preview = fragment(&p.plain_text(MAX_TEXT), &bt);
                (subject, preview)
            })
        })
        .await
        .map_err(|e| MethodError::ServerFail(e.to_string()))?;
        let (subject, preview) = r.unwrap_or((None, None));
        list.push(json!({"emailId": email_id(e.id), "subject": subject, "preview": preview}));
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "list": list,
        "notFound": if not_found.is_empty() { Value::Null } else { Value::Array(not_found) },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8621_5_1_marks_matches_and_escapes_html() {
        let t = vec!["report".to_string()];
        assert_eq!(
            highlight("Q3 <b>Report</b> & more", &t).unwrap(),
            "Q3 &lt;b&gt;<mark>Report</mark>&lt;/b&gt; &amp; more"
        );
        assert_eq!(highlight("nothing here", &t), None);
        let long = format!("{} the report {}", "word ".repeat(200), "tail ".repeat(200));
        let f = fragment(&long, &t).unwrap();
        assert!(f.contains("<mark>report</mark>"));
        assert!(f.chars().count() < PREVIEW_CHARS + 40);
        // Multi-byte text around a match stays whole.
        assert_eq!(
            highlight("héllo wörld", &["wÖrld".to_string()]).unwrap(),
            "héllo <mark>wörld</mark>"
        );
    }
}
