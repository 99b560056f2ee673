//! Inbound message authentication (issue 16): SPF (RFC 7208), DKIM
//! (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) with mail-auth, the
//! results in one Authentication-Results field (RFC 8601), and what DMARC
//! asks for: accept, quarantine (Junk) or reject (`550 5.7.1`).
//!
//! Where it runs: the SMTP listener of mta-in and all-in-one, for mail
//! from strangers only. Submission, an authenticated session, LMTP (the
//! store behind an mta-in: the field travels with the message and the
//! store does not verify again) and `[hygiene] trusted_networks` skip it.
//!
//! DNS: mail-auth's `MessageAuthenticator` wraps a hickory `TokioResolver`
//! of the same hickory version as msgd's; it is handed a clone of the
//! process's resolver (`Services::resolver`, built from `[dns]
//! nameservers`), so verification asks the same servers (in the tests: the
//! loopback dnsmasq on its own port) and shares its cache.
//!
//! Invariants: every step runs under one deadline (`[hygiene] timeout`);
//! a step that misses it is `temperror`, and a temperror never rejects
//! nor quarantines. Any Authentication-Results field that claims our
//! authserv-id (`server.hostname`) is removed before ours is added
//! (RFC 8601 5), so a downstream reader can trust the one it finds.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};

use crate::config::{DmarcPolicy, HygieneConfig};

/// The `Outcome::Permanent` text of a DMARC rejection; the session
/// answers it with `reply::DMARC_REJECTED`.
pub const DMARC_REJECTED: &str = "550 5.7.1 rejected by the DMARC policy of the From domain";

/// What the DMARC evaluation asks the server to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    /// Deliver into each recipient's `\Junk` mailbox.
    Quarantine,
    /// Refuse at the end of DATA (`550 5.7.1`).
    Reject,
}

/// The result of verifying one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The whole `Authentication-Results: ...\r\n` field to prepend.
    pub header: String,
    pub action: Action,
    /// The RFC 5322.From domain DMARC evaluated (for the log and reply).
    pub from_domain: String,
}

/// What the verifier knows of the SMTP transaction.
pub struct Transaction<'a> {
    pub client_ip: IpAddr,
    /// The EHLO/HELO name ("" if none was given).
    pub helo: &'a str,
    /// The reverse path ("" for the null sender).
    pub mail_from: &'a str,
    /// Our authserv-id: `server.hostname`.
    pub hostname: &'a str,
}

/// Whether a message from this session is verified at all.
pub fn applies(cfg: &HygieneConfig, client_ip: IpAddr, authenticated: bool) -> bool {
    cfg.enabled && !authenticated && !crate::netaddr::in_any(&cfg.trusted_networks, client_ip)
}

/// Verifies `message` (the header section and body as received, CRLF
/// line ends) with the resolver `dns`, under `cfg.timeout`.
pub async fn verify(
    dns: &hickory_resolver::TokioResolver,
    cfg: &HygieneConfig,
    tx: &Transaction<'_>,
    message: &[u8],
) -> Verdict {
    let auth = MessageAuthenticator(dns.clone());
    let secs = if cfg.timeout == 0 { 10 } else { cfg.timeout };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let helo = if tx.helo.is_empty() {
        tx.client_ip.to_string()
    } else {
        tx.helo.to_string()
    };
    let mail_from_domain = tx
        .mail_from
        .rsplit_once('@')
        .map_or(helo.as_str(), |(_, d)| d)
        .to_string();

    // SPF: the HELO identity (RFC 7208 2.3), then MAIL FROM (2.4); for
    // the null sender MAIL FROM is postmaster@HELO.
    let spf_helo = timed(
        deadline,
        auth.verify_spf(SpfParameters::verify_ehlo(tx.client_ip, &helo, tx.hostname)),
        || SpfOutput::new(helo.clone()).with_result(SpfResult::TempError),
    )
    .await;
    let spf_from = if tx.mail_from.is_empty() {
        spf_helo.clone()
    } else {
        timed(
            deadline,
            auth.verify_spf(SpfParameters::verify_mail_from(
                tx.client_ip,
                &helo,
                tx.hostname,
                tx.mail_from,
            )),
            || SpfOutput::new(mail_from_domain.clone()).with_result(SpfResult::TempError),
        )
        .await
    };

    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        // No header section mail-auth can read: SPF only.
        let header = AuthenticationResults::new(tx.hostname)
            .with_spf_ehlo_result(&spf_helo, tx.client_ip, &helo)
            .with_spf_mailfrom_result(&spf_from, tx.client_ip, tx.mail_from, &helo);
        return Verdict {
            header: header_line(&header),
            action: Action::Accept,
            from_domain: String::new(),
        };
    };

    let dkim: Vec<DkimOutput<'_>> = timed(deadline, auth.verify_dkim(&parsed), || {
        vec![DkimOutput::temp_err(timeout_error())]
    })
    .await;
    let arc: ArcOutput<'_> = timed(deadline, auth.verify_arc(&parsed), || {
        ArcOutput::default().with_result(mail_auth::DkimResult::TempError(timeout_error()))
    })
    .await;
    let dmarc: DmarcOutput = timed(
        deadline,
        auth.verify_dmarc(DmarcParameters::new(
            &parsed,
            &dkim,
            &mail_from_domain,
            &spf_from,
        )),
        || {
            DmarcOutput::default()
                .with_domain(parsed.from())
                .with_spf_result(DmarcResult::TempError(timeout_error()))
                .with_dkim_result(DmarcResult::TempError(timeout_error()))
        },
    )
    .await;

    let header = AuthenticationResults::new(tx.hostname)
        .with_dkim_results(&dkim, parsed.from())
        .with_spf_ehlo_result(&spf_helo, tx.client_ip, &helo)
        .with_spf_mailfrom_result(&spf_from, tx.client_ip, tx.mail_from, &helo)
        .with_arc_result(&arc, tx.client_ip)
        .with_dmarc_result(&dmarc);
    let from_domain = dmarc.domain().to_ascii_lowercase();
    Verdict {
        header: header_line(&header),
        action: action(cfg, &dmarc),
        from_domain,
    }
}

/// The disposition of a DMARC result: only a definite `fail` acts, by
/// the published policy or the operator's override for the domain.
fn action(cfg: &HygieneConfig, dmarc: &DmarcOutput) -> Action {
    if !matches!(dmarc.result(), DmarcResult::Fail(_)) {
        return Action::Accept;
    }
    let domain = dmarc.domain().to_ascii_lowercase();
    let policy = cfg
        .domain
        .get(&domain)
        .and_then(|d| d.dmarc_policy)
        .unwrap_or(match dmarc.policy() {
            Policy::Reject => DmarcPolicy::Reject,
            Policy::Quarantine => DmarcPolicy::Quarantine,
            Policy::None | Policy::Unspecified => DmarcPolicy::None,
        });
    match policy {
        DmarcPolicy::Reject if cfg.dmarc_reject => Action::Reject,
        DmarcPolicy::Reject | DmarcPolicy::Quarantine if cfg.dmarc_quarantine => Action::Quarantine,
        _ => Action::Accept,
    }
}

/// Runs `step` until `deadline`; past it, `late()`.
async fn timed<T>(
    deadline: tokio::time::Instant,
    step: impl std::future::Future<Output = T>,
    late: impl FnOnce() -> T,
) -> T {
    match tokio::time::timeout_at(deadline, step).await {
        Ok(v) => v,
        Err(_) => late(),
    }
}

fn timeout_error() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
        "verification deadline".into(),
    ))
}

fn header_line(ar: &AuthenticationResults<'_>) -> String {
    format!("Authentication-Results: {ar}\r\n")
}

/// The field an mta-in adds to a message DMARC quarantined, so that the
/// store behind it (LMTP, two-tier) files it into Junk without verifying
/// again. Removed from everything a stranger sends (`strip_ours`); the
/// store honours it only on LMTP, whose clients are msgd's own MTAs.
pub const QUARANTINE_FIELD: &str = "X-Msgd-Quarantine";

/// Whether the header section carries `QUARANTINE_FIELD`.
pub fn marked_quarantine(message: &[u8]) -> bool {
    fields(message)
        .iter()
        .any(|&(a, b)| is_field(&message[a..b], QUARANTINE_FIELD))
}

/// (start, end) of each field of the header section, continuation lines
/// included.
fn fields(message: &[u8]) -> Vec<(usize, usize)> {
    let end = crate::smtp::trace::header_section_len(message).unwrap_or(message.len());
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let line_end = message[pos..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |p| pos + p + 1);
        let continuation = matches!(message[pos], b' ' | b'\t');
        match fields.last_mut() {
            Some(last) if continuation => last.1 = line_end,
            _ => fields.push((pos, line_end)),
        }
        pos = line_end;
    }
    fields
}

fn is_field(field: &[u8], name: &str) -> bool {
    field.iter().position(|&b| b == b':').is_some_and(|c| {
        field[..c]
            .trim_ascii_end()
            .eq_ignore_ascii_case(name.as_bytes())
    })
}

/// The message without the Authentication-Results fields that claim
/// `authserv_id` (RFC 8601 5: a forged or stale result from "us") and
/// without `QUARANTINE_FIELD`; None when there is none to remove. Only
/// the header section is looked at.
pub fn strip_ours(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    strip_where(message, |f| {
        claims(f, authserv_id) || is_field(f, QUARANTINE_FIELD)
    })
}

/// The message without `QUARANTINE_FIELD` (None: it had none): for mail
/// from strangers that is not verified (`[hygiene]` off), so the store
/// behind never takes a stranger's mark for the mta-in's.
pub fn strip_quarantine_mark(message: &[u8]) -> Option<Vec<u8>> {
    strip_where(message, |f| is_field(f, QUARANTINE_FIELD))
}

fn strip_where(message: &[u8], drop_field: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let end = crate::smtp::trace::header_section_len(message).unwrap_or(message.len());
    let fields = fields(message);
    let drop: Vec<bool> = fields
        .iter()
        .map(|&(a, b)| drop_field(&message[a..b]))
        .collect();
    if !drop.contains(&true) {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    for (&(start, stop), &d) in fields.iter().zip(&drop) {
        if !d {
            out.extend_from_slice(&message[start..stop]);
        }
    }
    out.extend_from_slice(&message[end..]);
    Some(out)
}

/// Whether one unfolded field is an Authentication-Results whose
/// authserv-id is `id` (case-insensitive; comments before it skipped).
fn claims(field: &[u8], id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    if !field[..colon]
        .trim_ascii_end()
        .eq_ignore_ascii_case(b"authentication-results")
    {
        return false;
    }
    let value = skip_cfws(&field[colon + 1..]);
    let token_end = value
        .iter()
        .position(|&b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
        .unwrap_or(value.len());
    let token = &value[..token_end];
    let token = token.strip_prefix(b"\"").unwrap_or(token);
    let token = token.strip_suffix(b"\"").unwrap_or(token);
    token.eq_ignore_ascii_case(id.trim_end_matches('.').as_bytes())
        || token.eq_ignore_ascii_case(id.as_bytes())
}

/// Skips folding white space and (possibly nested, bounded) comments.
fn skip_cfws(mut s: &[u8]) -> &[u8] {
    loop {
        let t = s.trim_ascii_start();
        if t.first() != Some(&b'(') {
            return t;
        }
        let mut depth = 0u32;
        let mut i = 0;
        while i < t.len() {
            match t[i] {
                b'\\' => i += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            if depth > 64 {
                return &[];
            }
            i += 1;
        }
        s = t.get(i + 1..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8601_5_our_authserv_id_is_removed_others_kept() {
        let m = b"Authentication-Results: mx.example.net; spf=pass\r\n\
Subject: hi\r\n\
Authentication-Results: (forged)\r\n MX.Example.Net;\r\n\tdkim=pass\r\n\
Authentication-Results: other.example; dkim=fail\r\n\
\r\n\
Authentication-Results: mx.example.net; body stays\r\n";
        let out = strip_ours(m, "mx.example.net").expect("removed");
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "Subject: hi\r\nAuthentication-Results: other.example; dkim=fail\r\n\r\n\
Authentication-Results: mx.example.net; body stays\r\n"
        );
        assert!(strip_ours(b"Subject: x\r\n\r\nbody\r\n", "mx.example.net").is_none());
    }

    #[test]
    fn quarantine_mark_is_found_and_a_strangers_is_removed() {
        let m = b"X-Msgd-Quarantine: dmarc\r\nSubject: x\r\n\r\nX-Msgd-Quarantine: body\r\n";
        assert!(marked_quarantine(m));
        let out = strip_ours(m, "mx.example.net").expect("removed");
        assert_eq!(out, b"Subject: x\r\n\r\nX-Msgd-Quarantine: body\r\n");
        assert!(!marked_quarantine(&out));
    }

    #[test]
    fn rfc8601_2_2_authserv_id_is_a_whole_token() {
        let f = b"Authentication-Results: mx.example.net.evil; spf=pass\r\n";
        assert!(!claims(f, "mx.example.net"));
        assert!(claims(
            b"Authentication-Results:mx.example.net;none\r\n",
            "mx.example.net"
        ));
        assert!(!claims(
            b"X-Authentication-Results: mx.example.net\r\n",
            "mx.example.net"
        ));
        // An unterminated comment does not panic.
        assert!(!claims(
            b"Authentication-Results: ((((\r\n",
            "mx.example.net"
        ));
    }

    #[test]
    fn rfc7489_6_3_only_a_definite_fail_acts_and_overrides_win() {
        let mut cfg = HygieneConfig::default();
        let none = DmarcOutput::default().with_domain("example.org");
        assert_eq!(action(&cfg, &none), Action::Accept);
        let temp = DmarcOutput::default()
            .with_domain("example.org")
            .with_spf_result(DmarcResult::TempError(timeout_error()));
        assert_eq!(action(&cfg, &temp), Action::Accept);
        cfg.domain.insert(
            "example.org".into(),
            crate::config::HygieneDomain {
                dmarc_policy: Some(DmarcPolicy::None),
            },
        );
        assert_eq!(action(&cfg, &temp), Action::Accept);
    }

    #[test]
    fn applies_only_to_strangers() {
        let mut cfg = HygieneConfig {
            enabled: true,
            ..HygieneConfig::default()
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(applies(&cfg, ip, false));
        assert!(!applies(&cfg, ip, true));
        cfg.trusted_networks = vec!["192.0.2.0/24".parse().unwrap()];
        assert!(!applies(&cfg, ip, false));
        cfg.enabled = false;
        assert!(!applies(&cfg, "198.51.100.1".parse().unwrap(), false));
    }
}
