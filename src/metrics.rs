//! Metrics of the process (issue 14), exported by the admin listener
//! (src/admin.rs) in the Prometheus text format.
//!
//! Names start with `msgd_`; labels stay low-cardinality: the listener's
//! protocol (`smtp`, `imaps`, ...), a result class (`ok`/`no`/`bad` for
//! IMAP, `2xx`/`4xx`/`5xx` for SMTP and LMTP, `ok`/`err` for POP3), a
//! short limit or outcome name, and the process's roles as a global
//! `role` label. Never a user, an address or a message id.
//!
//! The code being measured calls one-line helpers from here at its choke
//! points (accept and close in src/net.rs, each protocol's command
//! dispatch, delivery outcomes, the queue, the login sequence, the TLS
//! handshake). Figures the process already keeps (cache statistics,
//! queue depth, free disk) are read when scraped (src/admin.rs).
//!
//! The exception to "no globals" (services.rs): the `metrics` facade's
//! recorder is process-global by design, installed once at start by
//! [`install`]; the handle that renders it lives in `Services::web`.
//! Without an installed recorder (unit tests, CLI commands) every helper
//! here is a no-op.

use std::time::Instant;

use metrics::{counter, gauge, histogram};
pub use metrics_exporter_prometheus::PrometheusHandle as Handle;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

/// Latency buckets in seconds: from a cached reply to a slow delivery.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The recorder with msgd's buckets and `role` label, not yet installed.
pub fn recorder(roles: &str) -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .expect("static buckets are not empty")
        .add_global_label("role", roles.to_string())
        .build_recorder()
}

/// Installs the process's recorder (once, at start). None when one is
/// installed already (a second server in the same process: its metrics
/// then go to the first one's recorder).
pub fn install(roles: &str) -> Option<Handle> {
    let r = recorder(roles);
    let handle = r.handle();
    metrics::set_global_recorder(r).ok()?;
    describe();
    Some(handle)
}

/// How often histogram samples are folded into their buckets.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into buckets every [`UPKEEP_EVERY`] until the
/// process ends. The recorder keeps every raw sample until then, so a
/// process nobody scrapes would otherwise grow with its traffic.
pub async fn upkeep(handle: Handle) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "msgd_connections_total",
        "Connections handed to a session, by protocol"
    );
    describe_gauge!("msgd_sessions", "Sessions open now, by protocol");
    describe_counter!(
        "msgd_commands_total",
        "Commands answered, by protocol and result class"
    );
    describe_histogram!(
        "msgd_command_duration_seconds",
        Unit::Seconds,
        "Time to answer a command, by protocol (SMTP/LMTP: recipient checks, AUTH and delivery)"
    );
    describe_counter!(
        "msgd_messages_total",
        "Messages by outcome: accepted (per recipient, by protocol), delivered (into a mailbox here, or relayed onwards by the queue), deferred, bounced"
    );
    describe_counter!(
        "msgd_tls_handshakes_total",
        "TLS handshakes as a server, by result"
    );
    describe_counter!(
        "msgd_auth_failures_total",
        "Failed logins (wrong password or unknown user), by protocol"
    );
    describe_counter!(
        "msgd_limits_hit_total",
        "Connections, logins or messages refused by a limit, by limit"
    );
    describe_histogram!(
        "msgd_ldap_request_duration_seconds",
        Unit::Seconds,
        "LDAP operations, by result"
    );
    describe_counter!(
        "msgd_delivery_pool_takes_total",
        "Outgoing LMTP/SMTP connections: reused from the pool or new"
    );
}

/// One session: counted when it starts, in the open gauge until dropped.
pub struct Session {
    protocol: &'static str,
}

/// Counts a connection handed to its session; keep the guard for the
/// session's life.
pub fn session(protocol: &'static str) -> Session {
    counter!("msgd_connections_total", "protocol" => protocol).increment(1);
    gauge!("msgd_sessions", "protocol" => protocol).increment(1.0);
    Session { protocol }
}

impl Drop for Session {
    fn drop(&mut self) {
        gauge!("msgd_sessions", "protocol" => self.protocol).decrement(1.0);
    }
}

/// One command answered with `result` (its class).
pub fn command(protocol: &'static str, result: &'static str) {
    counter!("msgd_commands_total", "protocol" => protocol, "result" => result).increment(1);
}

/// Times a command: recorded when dropped.
pub struct Timer {
    protocol: &'static str,
    start: Instant,
}

pub fn latency(protocol: &'static str) -> Timer {
    Timer {
        protocol,
        start: Instant::now(),
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        histogram!("msgd_command_duration_seconds", "protocol" => self.protocol)
            .record(self.start.elapsed().as_secs_f64());
    }
}

/// Counts the SMTP/LMTP replies in `out` (what a session writes, never
/// message content) by class: the last line of each reply, `DDD `.
pub fn smtp_replies(protocol: &'static str, out: &[u8]) {
    // One counter update per class, not per reply: a pipelined group's
    // replies go out in one write.
    let mut n = [0u64; 3];
    for line in out.split(|b| *b == b'\n') {
        match smtp_class(line) {
            Some("2xx") => n[0] += 1,
            Some("4xx") => n[1] += 1,
            Some(_) => n[2] += 1,
            None => {}
        }
    }
    for (class, count) in ["2xx", "4xx", "5xx"].into_iter().zip(n) {
        if count > 0 {
            counter!("msgd_commands_total", "protocol" => protocol, "result" => class)
                .increment(count);
        }
    }
}

fn smtp_class(line: &[u8]) -> Option<&'static str> {
    match line {
        [c, d1, d2, b' ', ..] if d1.is_ascii_digit() && d2.is_ascii_digit() => match c {
            b'2' | b'3' => Some("2xx"),
            b'4' => Some("4xx"),
            b'5' => Some("5xx"),
            _ => None,
        },
        _ => None,
    }
}

/// An HTTP response (JMAP, webmail) by status class. The latency is to
/// the response head; a streamed body goes on after it.
pub fn http_response(protocol: &'static str, status: u16) {
    let class = match status {
        100..=399 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    command(protocol, class);
}

/// A POP3 reply's class from its status line (continuations and
/// message content are not replies).
pub fn pop3_reply(protocol: &'static str, reply: &str) {
    if reply.starts_with("+OK") {
        command(protocol, "ok");
    } else if reply.starts_with("-ERR") {
        command(protocol, "err");
    }
}

/// Messages by outcome (`accepted`, `delivered`, `deferred`, `bounced`)
/// and where (`smtp`, `lmtp`, `submission`, `store`, `queue`, ...).
pub fn messages(outcome: &'static str, via: &'static str, n: u64) {
    if n > 0 {
        counter!("msgd_messages_total", "outcome" => outcome, "via" => via).increment(n);
    }
}

/// Recipients accepted in one transaction: all of them or none under
/// SMTP (`all_or_nothing`: a partial success is aborted and retried by
/// the client), each one under LMTP.
pub fn accepted(protocol: &'static str, all_or_nothing: bool, ok: usize, of: usize) {
    let n = if all_or_nothing && ok < of { 0 } else { ok };
    messages("accepted", protocol, n as u64);
}

/// A TLS handshake as a server (implicit TLS or STARTTLS).
pub fn tls_handshake(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("msgd_tls_handshakes_total", "result" => result).increment(1);
}

/// A failed login (wrong password or unknown user).
pub fn auth_failure(protocol: &'static str) {
    counter!("msgd_auth_failures_total", "protocol" => protocol).increment(1);
}

/// A limit refused something: `connections`, `connections_per_ip`,
/// `login_limiter`, `budget`, ...
pub fn limit_hit(limit: &'static str) {
    counter!("msgd_limits_hit_total", "limit" => limit).increment(1);
}

/// A connection refused by the accept loop (its log reason), as a limit.
pub fn refused(reason: &str) {
    limit_hit(refusal_limit(reason));
}

fn refusal_limit(reason: &str) -> &'static str {
    if reason.contains("max_connections_per_ip") {
        "connections_per_ip"
    } else if reason.contains("max_connections") {
        "connections"
    } else if reason.contains("PROXY") {
        "proxy_protocol"
    } else if reason.contains("networks") {
        "networks"
    } else {
        "other"
    }
}

/// One LDAP operation took `start.elapsed()`.
pub fn ldap(start: Instant, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    histogram!("msgd_ldap_request_duration_seconds", "result" => result)
        .record(start.elapsed().as_secs_f64());
}

/// An outgoing delivery connection: reused from the pool, or new.
pub fn pool_take(reused: bool) {
    let result = if reused { "reused" } else { "new" };
    counter!("msgd_delivery_pool_takes_total", "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(f: impl FnOnce()) -> String {
        let r = recorder("store");
        let h = r.handle();
        metrics::with_local_recorder(&r, f);
        h.render()
    }

    #[test]
    fn sessions_gauge_follows_the_guard_and_the_counter_only_grows() {
        let r = recorder("store");
        let h = r.handle();
        let open = metrics::with_local_recorder(&r, || {
            let a = session("imap");
            let b = session("imap");
            drop(a);
            b
        });
        let text = h.render();
        drop(open);
        assert!(
            text.contains(r#"msgd_connections_total{role="store",protocol="imap"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"msgd_sessions{role="store",protocol="imap"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn rfc5321_4_2_smtp_replies_counted_once_per_reply_by_class() {
        let out = b"250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 go ahead\r\n451 4.3.0 later\r\n550 5.1.1 no\r\n";
        let text = rendered(|| smtp_replies("smtp", out));
        assert!(
            text.contains(r#"msgd_commands_total{role="store",protocol="smtp",result="2xx"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"msgd_commands_total{role="store",protocol="smtp",result="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"msgd_commands_total{role="store",protocol="smtp",result="5xx"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn latency_is_a_histogram_with_buckets() {
        let text = rendered(|| drop(latency("imap")));
        assert!(
            text.contains("msgd_command_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains(r#"le="0.001""#), "{text}");
        assert!(
            text.contains(r#"msgd_command_duration_seconds_count{role="store",protocol="imap"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn refusal_reasons_map_to_short_limit_names() {
        assert_eq!(
            refusal_limit("per-client limit (limits.max_connections_per_ip)"),
            "connections_per_ip"
        );
        assert_eq!(
            refusal_limit("process connection limit (limits.max_connections)"),
            "connections"
        );
        assert_eq!(refusal_limit("bad PROXY header"), "proxy_protocol");
        assert_eq!(
            refusal_limit("client not in store.lmtp_networks"),
            "networks"
        );
    }

    #[test]
    fn rfc5321_smtp_counts_a_transaction_all_or_nothing_rfc2033_lmtp_per_recipient() {
        let text = rendered(|| {
            accepted("smtp", true, 2, 3);
            accepted("smtp", true, 3, 3);
            accepted("lmtp", false, 2, 3);
        });
        assert!(
            text.contains(r#"msgd_messages_total{role="store",outcome="accepted",via="smtp"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"msgd_messages_total{role="store",outcome="accepted",via="lmtp"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn helpers_are_no_ops_without_a_recorder() {
        let _s = session("pop3");
        command("pop3", "ok");
        messages("accepted", "smtp", 3);
    }
}
