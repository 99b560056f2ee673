use super::*;
use crate::config::Config;
use std::net::{IpAddr, Ipv4Addr};
use tokio::net::TcpListener;

const GTUBE_REPLY: &str = r#"{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},"message-id":"undef","time_real":0.16}"#;
const CLEAN_REPLY: &str = r#"{"is_skipped":false,"score":-0.1,"required_score":15.0,"action":"no action","symbols":{"MIME_GOOD":{"name":"MIME_GOOD","score":-0.1},"ARC_NA":{"name":"ARC_NA","score":0.0}},"messages":{}}"#;

fn stranger() -> Client {
    Client {
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        helo: "mx.example.org".into(),
        login: None,
        submission: false,
        trusted: false,
    }
}

fn info() -> MessageInfo {
    MessageInfo {
        id: "q1".into(),
        sender: "a@example.org".into(),
        recipients: vec!["b@example.com".into(), "c@example.com".into()],
    }
}

fn filter(kind: FilterKind, addr: &str, fail: FailMode, timeout_ms: u64) -> ContentFilter {
    let mut c = Config::default();
    let f = &mut c.hygiene.filter;
    f.enabled = true;
    f.kind = kind;
    f.url = format!("http://{addr}");
    f.address = addr.to_string();
    f.fail = fail;
    f.timeout_ms = timeout_ms;
    ContentFilter::from_config(&c).unwrap()
}

fn scan(action: Action, symbols: &[&str]) -> Scan {
    Scan {
        action,
        score: 7.3,
        required: 15.0,
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn rspamd_reject_action_refuses_550() {
    let s = parse_rspamd(GTUBE_REPLY.as_bytes()).unwrap();
    assert_eq!(s.action, Action::Reject);
    assert_eq!(s.symbols, vec!["GTUBE"]);
    assert_eq!(
        verdict(&s),
        ContentVerdict::Refuse(Refusal::new(550, "5.7.1", REFUSED))
    );
}

#[test]
fn rspamd_no_action_accepts_with_status_no() {
    let s = parse_rspamd(CLEAN_REPLY.as_bytes()).unwrap();
    let ContentVerdict::Accept { headers } = verdict(&s) else {
        panic!("not accepted");
    };
    assert_eq!(
        headers,
        "X-Spam-Status: No, score=-0.10 required=15.00\r\n\
         X-Spam-Action: no action\r\n\
         X-Spam-Symbols: ARC_NA, MIME_GOOD\r\n"
    );
}

#[test]
fn rspamd_actions_map_to_verdicts() {
    let refuse = |a| match verdict(&scan(a, &[])) {
        ContentVerdict::Refuse(r) => (r.code, r.esc),
        other => panic!("{other:?}"),
    };
    assert_eq!(refuse(Action::SoftReject), (451, "4.7.1"));
    assert_eq!(refuse(Action::Greylist), (451, "4.7.1"));
    for a in [Action::AddHeader, Action::RewriteSubject] {
        let ContentVerdict::Junk { headers } = verdict(&scan(a, &["X"])) else {
            panic!("not junk");
        };
        assert!(headers.starts_with("X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=7.30"));
    }
}

#[test]
fn rspamd_garbage_is_an_error() {
    assert!(parse_rspamd(b"<html>").is_err());
    assert!(parse_rspamd(br#"{"action":"delete everything","score":1.0}"#).is_err());
    assert!(parse_rspamd(br#"{"action":"reject"}"#).is_err());
}

#[test]
fn symbols_are_sanitized_bounded_and_folded() {
    let body = format!(
        r#"{{"action":"add header","score":6,"required_score":15,"symbols":{{"EVIL\r\nX-Spam-Status: No":{{}},"{}":{{}}{}}}}}"#,
        "A".repeat(500),
        (0..300)
            .map(|i| format!(r#","SYM_{i:03}":{{}}"#))
            .collect::<String>()
    );
    let s = parse_rspamd(body.as_bytes()).unwrap();
    assert!(s.symbols.len() <= MAX_SYMBOLS);
    assert!(s.symbols.iter().all(|n| n.len() <= MAX_SYMBOL_NAME));
    assert!(s.symbols.contains(&"EVILX-Spam-StatusNo".to_string()));
    let h = headers(&s, true);
    for line in h.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(line.len() <= 78, "{line}");
        assert!(line
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b)));
    }
    // Continuations start with a tab: one X-Spam-Status only.
    assert_eq!(h.matches("\nX-Spam-Status:").count(), 1);
    let symbols_field = &h[h.find("X-Spam-Symbols:").unwrap()..];
    assert!(symbols_field.len() < MAX_SYMBOLS_LEN + 200);
}

#[test]
fn spamd_reply_parses() {
    let spam = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 26\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,MISSING_DATE,NO_RECEIVED";
    let s = parse_spamd(spam, 15.0).unwrap();
    assert_eq!(s.action, Action::Reject);
    assert_eq!(s.symbols, vec!["GTUBE", "MISSING_DATE", "NO_RECEIVED"]);
    let s = parse_spamd(
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 7.5 / 5.0\r\n\r\nX",
        15.0,
    )
    .unwrap();
    assert_eq!(s.action, Action::AddHeader);
    let s = parse_spamd(
        b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.4 / 5.0\r\n\r\n",
        15.0,
    )
    .unwrap();
    assert_eq!(s.action, Action::NoAction);
    assert!(parse_spamd(b"SPAMD/1.0 76 Bad header line", 15.0).is_err());
    assert!(parse_spamd(b"HTTP/1.1 200 OK\r\n\r\n", 15.0).is_err());
    assert!(parse_spamd(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5.0\r\n\r\n", 15.0).is_err());
    assert!(parse_spamd(b"SPAMD/1.1 0 EX_OK\r\n\r\n", 15.0).is_err());
}

#[test]
fn incoming_spam_claims_are_removed() {
    let m = b"X-Spam-Status: No, score=-100\r\nSubject: hi\r\nx-spam-flag: NO\r\n\tfolded\r\nX-Spam-Level: ***\r\n\r\nX-Spam-Status: body stays\r\n";
    let out = strip_claims(m).unwrap();
    assert_eq!(
        out,
        b"Subject: hi\r\nX-Spam-Level: ***\r\n\r\nX-Spam-Status: body stays\r\n".to_vec()
    );
    assert_eq!(strip_claims(b"Subject: hi\r\n\r\nbody"), None);
}

#[tokio::test]
async fn off_trusted_submission_and_oversize_are_not_scanned() {
    let off = ContentFilter::default();
    let accept = ContentVerdict::Accept {
        headers: String::new(),
    };
    assert_eq!(off.check(&stranger(), &info(), b"x").await, accept);
    // Nothing listens on port 9: any scan would fail closed.
    let f = filter(FilterKind::Rspamd, "127.0.0.1:9", FailMode::Closed, 500);
    let mut trusted = stranger();
    trusted.trusted = true;
    assert_eq!(f.check(&trusted, &info(), b"x").await, accept);
    let mut sub = stranger();
    sub.submission = true;
    sub.login = Some("u@example.com".into());
    assert_eq!(f.check(&sub, &info(), b"x").await, accept);
    let mut c = Config::default();
    c.hygiene.filter.enabled = true;
    c.hygiene.filter.url = "http://127.0.0.1:9".into();
    c.hygiene.filter.fail = FailMode::Closed;
    c.hygiene.filter.max_size = 10;
    let small = ContentFilter::from_config(&c).unwrap();
    assert_eq!(small.check(&stranger(), &info(), &[b'x'; 11]).await, accept);
    assert!(matches!(
        small.check(&stranger(), &info(), b"x").await,
        ContentVerdict::Refuse(Refusal { code: 451, .. })
    ));
}

/// A one-shot HTTP server answering `body`; returns its address and the
/// request it read.
async fn fake_http(body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            req.extend_from_slice(&buf[..n]);
            if let Some(p) = find(&req, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&req[..p]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if req.len() >= p + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (addr, h)
}

#[tokio::test]
async fn rspamd_client_sends_the_envelope() {
    let (addr, req) = fake_http(GTUBE_REPLY).await;
    let f = filter(FilterKind::Rspamd, &addr, FailMode::Open, 5000);
    let mut c = stranger();
    c.login = None;
    let v = f.check(&c, &info(), b"Subject: x\r\n\r\nbody\r\n").await;
    assert_eq!(
        v,
        ContentVerdict::Refuse(Refusal::new(550, "5.7.1", REFUSED))
    );
    let req = req.await.unwrap();
    let lower = req.to_ascii_lowercase();
    assert!(req.starts_with("POST /checkv2 HTTP/1.1\r\n"), "{req}");
    assert!(lower.contains("\r\nip: 192.0.2.1\r\n"));
    assert!(lower.contains("\r\nhelo: mx.example.org\r\n"));
    assert!(lower.contains("\r\nfrom: a@example.org\r\n"));
    assert!(lower.contains("\r\nrcpt: b@example.com\r\n"));
    assert!(lower.contains("\r\nrcpt: c@example.com\r\n"));
    assert!(lower.contains("\r\nqueue-id: q1\r\n"));
    assert!(req.ends_with("\r\n\r\nSubject: x\r\n\r\nbody\r\n"));
}

#[tokio::test]
async fn a_silent_filter_fails_open_or_closed() {
    // Accepts connections (the backlog) but never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    for kind in [FilterKind::Rspamd, FilterKind::Spamd] {
        let open = filter(kind, &addr, FailMode::Open, 300);
        let t = std::time::Instant::now();
        assert_eq!(
            open.check(&stranger(), &info(), b"x").await,
            ContentVerdict::Accept {
                headers: String::new()
            }
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        let closed = filter(kind, &addr, FailMode::Closed, 300);
        assert_eq!(
            closed.check(&stranger(), &info(), b"x").await,
            ContentVerdict::Refuse(Refusal::new(451, "4.7.1", UNAVAILABLE))
        );
    }
    drop(l);
}

#[tokio::test]
async fn spamd_client_speaks_spamc() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        s.write_all(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 7.0 / 5.0\r\n\r\nBAYES_99,URIBL")
            .await
            .unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    let f = filter(FilterKind::Spamd, &addr, FailMode::Closed, 5000);
    let v = f
        .check(&stranger(), &info(), b"Subject: x\r\n\r\nhi\r\n")
        .await;
    let ContentVerdict::Junk { headers } = v else {
        panic!("{v:?}");
    };
    assert!(headers.contains("X-Spam-Status: Yes, score=7.00 required=5.00\r\n"));
    assert!(headers.contains("X-Spam-Symbols: BAYES_99, URIBL\r\n"));
    assert_eq!(
        server.await.unwrap(),
        "SYMBOLS SPAMC/1.5\r\nContent-length: 18\r\n\r\nSubject: x\r\n\r\nhi\r\n"
    );
}

#[test]
fn check_config_names_a_bad_url_or_address() {
    let mut f = crate::config::FilterConfig {
        enabled: true,
        ..Default::default()
    };
    let errors = |f: &crate::config::FilterConfig| {
        let mut e = Vec::new();
        f.validate(&mut e);
        e
    };
    assert!(errors(&f).is_empty());
    f.url = "ftp://127.0.0.1:11333".into();
    assert_eq!(
        errors(&f),
        vec!["hygiene.filter.url: not an http:// or https:// address"]
    );
    f.kind = FilterKind::Spamd;
    assert!(errors(&f).is_empty());
    f.address = "127.0.0.1".into();
    assert_eq!(
        errors(&f),
        vec!["hygiene.filter.address: expected host:port"]
    );
    f.address = "127.0.0.1:0".into();
    assert_eq!(errors(&f).len(), 1);
    f.enabled = false;
    assert!(errors(&f).is_empty());
}
