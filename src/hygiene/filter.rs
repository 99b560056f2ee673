//! The content filter hook: each message goes to rspamd (`/checkv2`) or
//! SpamAssassin's spamd; the verdict adds headers, files to Junk, or
//! refuses.
//!
//! Invariants: one deadline (`timeout_ms`) covers the whole exchange,
//! connection included; every read from the filter is bounded; the
//! fields we add are built from our own vocabulary (action names, numbers,
//! symbol names reduced to `[A-Za-z0-9_.-]`), never copied raw. A filter
//! that fails passes the message unscanned (`fail = "open"`) or answers
//! 451 4.7.1 (`fail = "closed"`).
//!
//! rspamd's actions: `reject` → 550 5.7.1; `soft reject` and `greylist`
//! → 451 4.7.1 (rspamd only says greylist when its greylist module, which
//! keeps the triplets, wants a retry); `add header` and `rewrite subject`
//! → Junk with the fields (the subject is not rewritten); `no action` →
//! accepted with the fields. spamd: not spam → accepted; spam below
//! `reject_score` → Junk; spam at or above it → 550 5.7.1.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::{Client, ContentVerdict, MessageInfo, Refusal};
use crate::config::{Config, FailMode, FilterConfig, FilterKind};

/// The most of rspamd's JSON answer we read (symbols with options).
const MAX_RSPAMD_REPLY: usize = 1024 * 1024;
/// The most of spamd's answer we read (a status line, two headers and a
/// comma-separated list of symbol names).
const MAX_SPAMD_REPLY: usize = 64 * 1024;
/// The most symbol names listed in X-Spam-Symbols, and its length.
const MAX_SYMBOLS: usize = 64;
const MAX_SYMBOLS_LEN: usize = 900;
/// The longest symbol name kept.
const MAX_SYMBOL_NAME: usize = 64;

/// 550 5.7.1: the filter says reject.
pub const REFUSED: &str = "Message refused as spam";
/// 451 4.7.1: the filter failed and `fail = "closed"`.
pub const UNAVAILABLE: &str = "Content filter unavailable, try again later";
/// 451 4.7.1: rspamd's `soft reject`.
pub const DEFERRED: &str = "Message deferred by the content filter, try again later";
/// 451 4.7.1: rspamd's `greylist`.
pub const GREYLISTED: &str = "Greylisted, try again later";

/// The header fields we write; incoming ones are removed (`strip_claims`).
const OUR_FIELDS: [&str; 4] = [
    "X-Spam-Status",
    "X-Spam-Flag",
    "X-Spam-Action",
    "X-Spam-Symbols",
];

/// `[hygiene.filter]`.
#[derive(Default)]
pub struct ContentFilter {
    /// None: the filter is off.
    on: Option<Scanner>,
}

struct Scanner {
    cfg: FilterConfig,
    /// rspamd: the pooled HTTP client and the `/checkv2` address.
    http: Option<(reqwest::Client, String)>,
    timeout: Duration,
}

/// What a filter said, in its own terms reduced to ours.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    pub action: Action,
    pub score: f64,
    pub required: f64,
    /// Symbol (test) names, sanitized, sorted.
    pub symbols: Vec<String>,
}

/// rspamd's actions (spamd's verdict is mapped onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    NoAction,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "no action" => Action::NoAction,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "soft reject" => Action::SoftReject,
            "reject" => Action::Reject,
            _ => return None,
        })
    }

    /// The metric label.
    fn label(self) -> &'static str {
        match self {
            Action::NoAction => "no_action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add_header",
            Action::RewriteSubject => "rewrite_subject",
            Action::SoftReject => "soft_reject",
            Action::Reject => "reject",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::NoAction => "no action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::SoftReject => "soft reject",
            Action::Reject => "reject",
        }
    }
}

impl ContentFilter {
    pub fn from_config(config: &Config) -> anyhow::Result<ContentFilter> {
        let cfg = &config.hygiene.filter;
        if !cfg.enabled {
            return Ok(ContentFilter::default());
        }
        let mut errors = Vec::new();
        cfg.validate(&mut errors);
        if let Some(e) = errors.into_iter().next() {
            anyhow::bail!(e);
        }
        let timeout = Duration::from_millis(match cfg.timeout_ms {
            0 => 10_000,
            ms => ms,
        });
        let http = match cfg.kind {
            FilterKind::Rspamd => {
                let base = cfg.url.trim_end_matches('/');
                // reqwest's rustls has no provider of its own: ring, as everywhere.
                crate::tls::install_provider();
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?;
                Some((client, format!("{base}/checkv2")))
            }
            FilterKind::Spamd => None,
        };
        Ok(ContentFilter {
            on: Some(Scanner {
                cfg: cfg.clone(),
                http,
                timeout,
            }),
        })
    }

    pub async fn check(&self, client: &Client, msg: &MessageInfo, data: &[u8]) -> ContentVerdict {
        let pass = ContentVerdict::Accept {
            headers: String::new(),
        };
        let Some(s) = &self.on else {
            return pass;
        };
        let outbound = client.submission || client.login.is_some();
        let applies = if outbound {
            s.cfg.scan_submission
        } else {
            !client.trusted
        };
        if !applies {
            return pass;
        }
        if data.len() as u64 > s.cfg.max_size {
            debug!(id = %msg.id, size = data.len(), "too big for the content filter: not scanned");
            count("too_big");
            return pass;
        }
        let started = std::time::Instant::now();
        let scan = match s.cfg.kind {
            FilterKind::Rspamd => {
                tokio::time::timeout(s.timeout, s.rspamd(client, msg, data)).await
            }
            FilterKind::Spamd => tokio::time::timeout(s.timeout, s.spamd(data)).await,
        };
        let scan = match scan {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => return s.failed(&msg.id, &e.to_string()),
            Err(_) => return s.failed(&msg.id, "timed out"),
        };
        count(scan.action.label());
        info!(
            id = %msg.id,
            action = scan.action.name(),
            score = scan.score,
            ms = started.elapsed().as_millis() as u64,
            "content filter"
        );
        verdict(&scan)
    }
}

impl Scanner {
    fn failed(&self, id: &str, why: &str) -> ContentVerdict {
        warn!(id = %id, error = %why, fail = ?self.cfg.fail, "content filter failed");
        count("failed");
        match self.cfg.fail {
            FailMode::Open => ContentVerdict::Accept {
                headers: String::new(),
            },
            FailMode::Closed => ContentVerdict::Refuse(Refusal::new(451, "4.7.1", UNAVAILABLE)),
        }
    }

    /// `POST /checkv2` with the envelope as rspamd's request headers.
    async fn rspamd(
        &self,
        client: &Client,
        msg: &MessageInfo,
        data: &[u8],
    ) -> anyhow::Result<Scan> {
        let Some((http, url)) = &self.http else {
            anyhow::bail!("no HTTP client");
        };
        let mut headers = reqwest::header::HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            // Envelope values are client data: a value HTTP cannot carry is
            // left out rather than sent mangled.
            if let Ok(v) = reqwest::header::HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(name, v);
            }
        };
        put("IP", &client.ip.to_string());
        if !client.helo.is_empty() {
            put("Helo", &client.helo);
        }
        if !msg.sender.is_empty() {
            put("From", &msg.sender);
        }
        for r in &msg.recipients {
            put("Rcpt", r);
        }
        if !msg.id.is_empty() {
            put("Queue-Id", &msg.id);
        }
        if let Some(login) = &client.login {
            put("User", login);
        }
        let mut resp = http
            .post(url)
            .headers(headers)
            .body(data.to_vec())
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            anyhow::bail!("rspamd answered HTTP {}", resp.status().as_u16());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_RSPAMD_REPLY {
                anyhow::bail!("rspamd's answer is over {MAX_RSPAMD_REPLY} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        parse_rspamd(&body)
    }

    /// SPAMC/1.5 `SYMBOLS` over one TCP connection.
    async fn spamd(&self, data: &[u8]) -> anyhow::Result<Scan> {
        let mut conn = tokio::net::TcpStream::connect(self.cfg.address.as_str()).await?;
        let mut req = format!("SYMBOLS SPAMC/1.5\r\nContent-length: {}\r\n", data.len());
        let user = sanitize_token(&self.cfg.spamd_user, 64, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')
        });
        if !user.is_empty() {
            req.push_str(&format!("User: {user}\r\n"));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).await?;
        conn.write_all(data).await?;
        conn.flush().await?;
        let _ = conn.shutdown().await;
        let mut reply = Vec::new();
        let n = (&mut conn)
            .take(MAX_SPAMD_REPLY as u64 + 1)
            .read_to_end(&mut reply)
            .await?;
        if n > MAX_SPAMD_REPLY {
            anyhow::bail!("spamd's answer is over {MAX_SPAMD_REPLY} bytes");
        }
        parse_spamd(&reply, self.cfg.reject_score)
    }
}

/// `msgd_content_filter_total{result}`: scans by the filter's action,
/// `failed` (no usable answer in time) and `too_big` (not scanned).
fn count(result: &'static str) {
    metrics::counter!("msgd_content_filter_total", "result" => result).increment(1);
}

/// rspamd's `/checkv2` JSON: `action`, `score`, `required_score`,
/// `symbols` (an object keyed by name).
pub fn parse_rspamd(body: &[u8]) -> anyhow::Result<Scan> {
    #[derive(serde::Deserialize)]
    struct Reply {
        action: String,
        score: f64,
        #[serde(default)]
        required_score: f64,
        #[serde(default)]
        symbols: serde_json::Map<String, serde_json::Value>,
    }
    let r: Reply = serde_json::from_slice(body)
        .map_err(|e| anyhow::anyhow!("rspamd's answer is not its JSON: {e}"))?;
    let action =
        Action::parse(&r.action).ok_or_else(|| anyhow::anyhow!("rspamd's action is unknown"))?;
    if !r.score.is_finite() || !r.required_score.is_finite() {
        anyhow::bail!("rspamd's score is not a number");
    }
    Ok(Scan {
        action,
        score: r.score,
        required: r.required_score,
        symbols: symbols(r.symbols.keys().map(String::as_str)),
    })
}

/// spamd's answer to `SYMBOLS`:
/// `SPAMD/1.1 0 EX_OK`, `Spam: True ; 1000.0 / 5.0`, a blank line, then
/// the symbol names separated by commas.
pub fn parse_spamd(reply: &[u8], reject_score: f64) -> anyhow::Result<Scan> {
    let (head, body) = match find(reply, b"\r\n\r\n") {
        Some(p) => (&reply[..p], &reply[p + 4..]),
        None => (reply, &[][..]),
    };
    let head =
        std::str::from_utf8(head).map_err(|_| anyhow::anyhow!("spamd's answer is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut words = status.split_ascii_whitespace();
    let (proto, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !proto.starts_with("SPAMD/") {
        anyhow::bail!("not a spamd answer");
    }
    if code != "0" {
        anyhow::bail!(
            "spamd answered error {}",
            sanitize_token(code, 8, |c| c.is_ascii_digit())
        );
    }
    let mut spam = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("Spam") {
            continue;
        }
        // "True ; 1000.0 / 5.0"
        let (flag, scores) = value
            .split_once(';')
            .ok_or_else(|| anyhow::anyhow!("spamd's Spam header is malformed"))?;
        let (score, required) = scores
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("spamd's Spam header is malformed"))?;
        let flag = match flag.trim() {
            f if f.eq_ignore_ascii_case("true") || f.eq_ignore_ascii_case("yes") => true,
            f if f.eq_ignore_ascii_case("false") || f.eq_ignore_ascii_case("no") => false,
            _ => anyhow::bail!("spamd's Spam header is malformed"),
        };
        let score: f64 = score.trim().parse()?;
        let required: f64 = required.trim().parse()?;
        if !score.is_finite() || !required.is_finite() {
            anyhow::bail!("spamd's score is not a number");
        }
        spam = Some((flag, score, required));
    }
    let (flag, score, required) =
        spam.ok_or_else(|| anyhow::anyhow!("spamd gave no Spam header"))?;
    let action = match (flag, score >= reject_score) {
        (false, _) => Action::NoAction,
        (true, false) => Action::AddHeader,
        (true, true) => Action::Reject,
    };
    let body = String::from_utf8_lossy(&body[..body.len().min(MAX_SPAMD_REPLY)]);
    Ok(Scan {
        action,
        score,
        required,
        symbols: symbols(body.split(',').map(str::trim)),
    })
}

/// What the SMTP session does with a scan.
pub fn verdict(scan: &Scan) -> ContentVerdict {
    match scan.action {
        Action::Reject => ContentVerdict::Refuse(Refusal::new(550, "5.7.1", REFUSED)),
        Action::SoftReject => ContentVerdict::Refuse(Refusal::new(451, "4.7.1", DEFERRED)),
        Action::Greylist => ContentVerdict::Refuse(Refusal::new(451, "4.7.1", GREYLISTED)),
        Action::AddHeader | Action::RewriteSubject => ContentVerdict::Junk {
            headers: headers(scan, true),
        },
        Action::NoAction => ContentVerdict::Accept {
            headers: headers(scan, false),
        },
    }
}

/// X-Spam-Flag (spam only), X-Spam-Status, X-Spam-Action, X-Spam-Symbols:
/// printable ASCII, folded, each line under 78 characters.
pub fn headers(scan: &Scan, spam: bool) -> String {
    let mut out = String::new();
    if spam {
        out.push_str("X-Spam-Flag: YES\r\n");
    }
    out.push_str(&format!(
        "X-Spam-Status: {}, score={:.2} required={:.2}\r\n",
        if spam { "Yes" } else { "No" },
        scan.score,
        scan.required
    ));
    out.push_str(&format!("X-Spam-Action: {}\r\n", scan.action.name()));
    if !scan.symbols.is_empty() {
        out.push_str(&fold("X-Spam-Symbols:", &scan.symbols));
    }
    out
}

/// `name` then the items separated by ", ", folded before a line would
/// pass 76 characters.
fn fold(name: &str, items: &[String]) -> String {
    let mut out = String::from(name);
    let mut line = name.len();
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 < items.len() { "," } else { "" };
        if line + 1 + item.len() + sep.len() > 76 {
            out.push_str("\r\n\t");
            line = 1;
        } else {
            out.push(' ');
            line += 1;
        }
        out.push_str(item);
        out.push_str(sep);
        line += item.len() + sep.len();
    }
    out.push_str("\r\n");
    out
}

/// Symbol names reduced to `[A-Za-z0-9_.-]`, bounded in length and count,
/// sorted and without repeats.
fn symbols<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = names
        .map(|n| {
            sanitize_token(n, MAX_SYMBOL_NAME, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
            })
        })
        .filter(|n| !n.is_empty())
        .take(4 * MAX_SYMBOLS)
        .collect();
    v.sort();
    v.dedup();
    let mut total = 0;
    v.into_iter()
        .take(MAX_SYMBOLS)
        .take_while(|n| {
            total += n.len() + 2;
            total <= MAX_SYMBOLS_LEN
        })
        .collect()
}

fn sanitize_token(s: &str, max: usize, keep: impl Fn(char) -> bool) -> String {
    s.chars().filter(|&c| keep(c)).take(max).collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The message without incoming X-Spam-Status, X-Spam-Flag, X-Spam-Action
/// and X-Spam-Symbols fields (they would pass for our results); None when
/// it has none. Only the header section is looked at.
pub fn strip_claims(message: &[u8]) -> Option<Vec<u8>> {
    let end = header_end(message);
    let mut fields: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let line_end = message[pos..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |p| pos + p + 1);
        match fields.last_mut() {
            Some(last) if matches!(message[pos], b' ' | b'\t') => last.1 = line_end,
            _ => {
                let line = &message[pos..line_end];
                let ours = line.iter().position(|&b| b == b':').is_some_and(|c| {
                    let name = line[..c].trim_ascii_end();
                    OUR_FIELDS
                        .iter()
                        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
                });
                fields.push((pos, line_end, ours));
            }
        }
        pos = line_end;
    }
    if !fields.iter().any(|f| f.2) {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    for &(a, b, ours) in &fields {
        if !ours {
            out.extend_from_slice(&message[a..b]);
        }
    }
    out.extend_from_slice(&message[end..]);
    Some(out)
}

/// The length of the header section, its last line included (before the
/// empty line); the whole message when it has no body.
fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") || message.starts_with(b"\n") {
        return 0;
    }
    let crlf = find(message, b"\r\n\r\n").map(|p| p + 2);
    let lf = find(message, b"\n\n").map(|p| p + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(message.len()),
    }
}

#[cfg(test)]
mod tests;
