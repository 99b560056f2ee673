//! SMTP (RFC 5321, inbound MX) and LMTP (RFC 2033, delivery into the
//! store) servers.
//!
//! Layers:
//! - `codec`: command lines, DATA bodies (dot-unstuffing, end only at
//!   CRLF.CRLF — the SMTP smuggling defence), BDAT chunks; bodies past
//!   `limits.spool_threshold` go to an anonymous file (`spool`).
//! - `session`: the synchronous core; commands are parsed by smtp-proto,
//!   replies (`reply`) and trace fields (`trace`) are ours.
//! - this module: the async driver doing I/O, timeouts, shutdown, STARTTLS,
//!   and the effects: recipient policy (`resolve`) and delivery
//!   (`crate::deliver`, one contract for every target).
//!
//! Invariants: replies are written before the driver waits for input; no
//! message is acknowledged before every copy is durable; the session never
//! interprets input while an effect is outstanding.
//!
//! Limits a stranger meets here (docs: etc/msgd.toml):
//! - time: a deadline for each whole command line (`smtp.command_timeout`,
//!   `smtp.preauth_timeout` before EHLO and, on submission, before AUTH)
//!   and for each whole DATA/BDAT transfer (`smtp.data_timeout`), not per
//!   read; every write has `command_timeout`. Then `421 4.4.2`.
//! - memory: at most `limits.spool_threshold` bytes of a body in RAM while
//!   it arrives, taken from the process-wide `Services::budget`
//!   (`limits.max_bytes_in_flight`, `452 4.3.1` when spent); delivery
//!   takes the whole message's size from the same budget while it holds
//!   the message in memory (the store and the queue take whole buffers).
//! - errors: `limits.max_bad_commands` bad commands, and on SMTP (not
//!   LMTP) `smtp.hard_error_limit` rejected recipients, then `421 4.7.0`.
//!
//! Submission (RFC 6409, the mta-out role on 587/465) is the SMTP core
//! with `Params::submission`: AUTH PLAIN/LOGIN against the directory
//! (`auth`), DSN parameters, sender ownership, Message-ID/Date completion,
//! and a `Delivery` that puts every recipient into the durable queue.

pub mod auth;
pub mod auth_results;
pub mod codec;
pub mod reply;
pub mod resolve;
pub mod session;
pub mod spool;
pub mod trace;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_schema;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::config::{Protocol, TlsMode};
use crate::deliver::{Delivery, Envelope, Outcome};
use crate::hygiene::{ContentVerdict, Decision};
use crate::net::{Conn, ConnInfo};
use crate::services::Services;
use resolve::Policy;
use session::{Event, Flavor, Params, Session, Verdict};

/// Serves one SMTP or LMTP connection until it ends.
pub async fn serve(conn: Conn, info: ConnInfo, services: Services) {
    let flavor = match info.protocol {
        Protocol::Smtp | Protocol::Submission | Protocol::Submissions => Flavor::Smtp,
        Protocol::Lmtp => Flavor::Lmtp,
        other => {
            warn!(
                protocol = other.name(),
                "smtp::serve called for a protocol it does not serve"
            );
            return;
        }
    };
    let submission = matches!(info.protocol, Protocol::Submission | Protocol::Submissions);
    let mut session = Session::new(session_params(&info, &services, flavor));
    let (policy, delivery) = if submission {
        (
            Policy::submission(&services),
            Delivery::for_submission(&services),
        )
    } else {
        (
            Policy::for_services(flavor, &services),
            Delivery::from_services(&services),
        )
    };
    let end = run(conn, &info, &services, &mut session, &policy, &delivery).await;
    info!(
        messages = session.messages,
        login = session.login().unwrap_or("-"),
        end,
        "session closed"
    );
}

fn session_params(info: &ConnInfo, services: &Services, flavor: Flavor) -> Params {
    let cfg = &services.config;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Params {
        flavor,
        hostname: cfg.server.hostname.clone(),
        postmaster_domain: cfg.server.domain.clone(),
        max_message_size: cfg.smtp.max_message_size,
        max_recipients: cfg.smtp.max_recipients.max(1),
        max_line: cfg.limits.max_line.max(512),
        max_bad_commands: cfg.limits.max_bad_commands,
        peer: info.peer.ip(),
        tls_active: info.tls_active,
        starttls: info.tls_mode == TlsMode::StartTls,
        id_prefix: format!("{secs:x}.{}.", info.session_id),
        submission: matches!(info.protocol, Protocol::Submission | Protocol::Submissions).then(
            || session::SubmissionParams {
                trusted: crate::netaddr::in_any(&cfg.submission.trusted_networks, info.peer.ip()),
                plaintext_auth: info.is_loopback() || cfg.submission.allow_plaintext_auth,
                check_from_header: cfg.submission.check_from_header,
                received_shows_client: cfg.submission.received_shows_client,
                max_auth_failures: cfg.limits.max_auth_failures.max(1),
            },
        ),
        // LMTP clients are our own MTAs (the store's LMTP listener takes
        // only configured networks): a message to many unknown users must
        // not cut their session, so the limit is SMTP's only.
        hard_error_limit: match flavor {
            Flavor::Smtp => cfg.smtp.hard_error_limit,
            Flavor::Lmtp => 0,
        },
        spool: Some(spool::SpoolConfig {
            threshold: usize::try_from(cfg.limits.spool_threshold).unwrap_or(usize::MAX),
            dir: cfg.data_path("", "spool"),
        }),
        budget: Some(services.budget.clone()),
    }
}

/// What a read gave.
enum Input {
    Bytes(usize),
    Eof,
    Error(std::io::Error),
    Timeout,
    Shutdown,
}

/// When the client must have finished what it is sending now: a whole
/// command line, or a whole DATA/BDAT transfer. Restarted only when the
/// session makes progress (a complete line or body), so a client
/// trickling a byte every few seconds still runs out of time.
struct Deadline {
    at: tokio::time::Instant,
    /// `Session::progress` and `receiving_body` when `at` was set.
    progress: u64,
    body: bool,
    preauth: bool,
}

impl Deadline {
    fn new() -> Deadline {
        Deadline {
            at: tokio::time::Instant::now(),
            progress: u64::MAX,
            body: false,
            preauth: false,
        }
    }

    /// The deadline for the input the session is waiting for now.
    fn update(&mut self, session: &Session, timeouts: &Timeouts) -> tokio::time::Instant {
        let body = session.receiving_body();
        let preauth = !session.past_preauth();
        if session.progress != self.progress || body != self.body || preauth != self.preauth {
            self.progress = session.progress;
            self.body = body;
            self.preauth = preauth;
            let d = if body {
                timeouts.data
            } else if preauth {
                timeouts.preauth.min(timeouts.command)
            } else {
                timeouts.command
            };
            self.at = tokio::time::Instant::now() + d;
        }
        self.at
    }
}

struct Timeouts {
    command: Duration,
    data: Duration,
    preauth: Duration,
}

/// The event loop; returns why the session ended (for the log).
async fn run(
    mut conn: Conn,
    info: &ConnInfo,
    services: &Services,
    session: &mut Session,
    policy: &Policy,
    delivery: &Delivery,
) -> &'static str {
    let cfg = &services.config;
    let command_timeout = Duration::from_secs(cfg.smtp.command_timeout.max(1));
    let timeouts = Timeouts {
        command: command_timeout,
        data: Duration::from_secs(cfg.smtp.data_timeout.max(1)),
        preauth: Duration::from_secs(cfg.smtp.preauth_timeout.max(1)),
    };
    let mut deadline = Deadline::new();
    let mut buf = vec![0u8; 16 * 1024];
    // Mail checks (crate::hygiene) on SMTP and submission, never LMTP.
    let screened = session.flavor() == Flavor::Smtp;
    match screened {
        true => match services
            .hygiene
            .connect(&client(info, services, session))
            .await
        {
            Decision::Pass => session.greet(),
            Decision::Refuse(r) => {
                info!(code = r.code, reason = %r.text, "connection refused");
                session.refuse_connection(&refusal(r));
            }
        },
        false => session.greet(),
    }
    loop {
        match session.next_event() {
            Event::NeedInput => {
                if flush(&mut conn, session, command_timeout, info)
                    .await
                    .is_err()
                {
                    return "write failed";
                }
                let in_tx = session.in_transaction();
                if services.shutdown.is_cancelled() && !in_tx {
                    session.shutdown();
                    continue;
                }
                let at = deadline.update(session, &timeouts);
                let input = tokio::select! {
                    r = tokio::time::timeout_at(at, conn.read(&mut buf)) => match r {
                        Err(_) => Input::Timeout,
                        Ok(Ok(0)) => Input::Eof,
                        Ok(Ok(n)) => Input::Bytes(n),
                        Ok(Err(e)) => Input::Error(e),
                    },
                    _ = services.shutdown.cancelled(), if !in_tx => Input::Shutdown,
                };
                match input {
                    Input::Bytes(n) => session.feed(&buf[..n]),
                    Input::Eof => return "client closed",
                    Input::Error(e) => {
                        debug!(error = %e, "read failed");
                        return "read failed";
                    }
                    Input::Timeout => {
                        info!("client timed out");
                        session.timeout();
                    }
                    Input::Shutdown => session.shutdown(),
                }
            }
            Event::CheckSender(sender) => {
                let refused = match screened {
                    true => match services
                        .hygiene
                        .mail_from(&client(info, services, session), &sender)
                        .await
                    {
                        Decision::Pass => None,
                        Decision::Refuse(r) => {
                            info!(code = r.code, reason = %r.text, "sender refused");
                            Some(refusal(r))
                        }
                    },
                    false => None,
                };
                session.sender_checked(refused);
            }
            Event::Resolve(address) => {
                let _metrics = crate::metrics::latency(info.protocol.name());
                let screen = match screened {
                    true => {
                        let sender = session.sender().unwrap_or_default().to_string();
                        services
                            .hygiene
                            .rcpt(&client(info, services, session), &sender, &address)
                            .await
                    }
                    false => Decision::Pass,
                };
                let verdict = if let Decision::Refuse(r) = screen {
                    info!(rcpt = %trace::sanitize(&address, 320), code = r.code, reason = %r.text, "recipient refused by a check");
                    Verdict::Refused(refusal(r))
                } else if delivery.available() {
                    resolve::resolve_from(&services.directory, policy, session.sender(), &address)
                        .await
                } else {
                    Verdict::Unavailable
                };
                debug!(rcpt = %address, ?verdict, "recipient");
                session.resolved(verdict);
            }
            Event::Deliver(msg) => {
                // Replies so far (to MAIL, RCPT and BDAT chunks pipelined
                // with the message) go out with the delivery's: the client
                // has sent the whole message and waits for all of them, so
                // holding them costs it nothing and saves a write and a
                // wake-up per message.
                let flavor = session.flavor();
                let _metrics = crate::metrics::latency(info.protocol.name());
                // Inbound verification (issue 16): strangers on the SMTP
                // listener only, never submission or LMTP.
                let check = (info.protocol == Protocol::Smtp
                    && flavor == Flavor::Smtp
                    && auth_results::applies(&cfg.hygiene, info.peer.ip(), msg.auth.is_some()))
                .then(|| Check {
                    client_ip: info.peer.ip(),
                    helo: session.helo_name().to_string(),
                });
                let screen = screened.then(|| client(info, services, session));
                let (msg, outcomes) =
                    deliver(services, delivery, flavor, *msg, check, screen).await;
                let ok = outcomes.iter().filter(|o| o.accepted()).count();
                crate::metrics::accepted(
                    info.protocol.name(),
                    flavor == Flavor::Smtp,
                    ok,
                    outcomes.len(),
                );
                info!(
                    id = %msg.id,
                    from = %msg.sender,
                    rcpts = msg.targets.len(),
                    delivered = ok,
                    size = msg.size(),
                    "message received"
                );
                session.delivered(&outcomes);
            }
            Event::Authenticate { login, password } => {
                if flush(&mut conn, session, command_timeout, info)
                    .await
                    .is_err()
                {
                    return "write failed";
                }
                let _metrics = crate::metrics::latency(info.protocol.name());
                let verdict = authenticate(services, info, session, &login, &password).await;
                session.auth_done(verdict);
            }
            Event::StartTls => {
                if flush(&mut conn, session, command_timeout, info)
                    .await
                    .is_err()
                {
                    return "write failed";
                }
                match services.tls.accept(conn).await {
                    Ok(tls) => {
                        conn = tls;
                        session.tls_started();
                        debug!("STARTTLS done");
                    }
                    Err(e) => {
                        info!(error = %e, "STARTTLS handshake failed");
                        return "TLS handshake failed";
                    }
                }
            }
            Event::Close => {
                let _ = flush(&mut conn, session, command_timeout, info).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.shutdown()).await;
                return "closed";
            }
        }
    }
}

/// The facts the mail checks use about this session.
fn client(info: &ConnInfo, services: &Services, session: &Session) -> crate::hygiene::Client {
    let cfg = &services.config;
    let ip = info.peer.ip();
    let submission = matches!(info.protocol, Protocol::Submission | Protocol::Submissions);
    crate::hygiene::Client {
        ip,
        helo: session.helo_name().to_string(),
        login: session.login().map(str::to_string),
        submission,
        trusted: crate::netaddr::in_any(&cfg.hygiene.trusted_networks, ip)
            || (submission && crate::netaddr::in_any(&cfg.submission.trusted_networks, ip)),
    }
}

/// A check's refusal as an SMTP reply.
fn refusal(r: crate::hygiene::Refusal) -> reply::Reply {
    reply::Reply::owned(r.code, r.esc, r.text)
}

/// Delivers one message: takes its size from the process-wide budget
/// (waiting a while for other deliveries to finish), reads a spooled body
/// back into memory, runs the delivery transaction. One outcome per
/// target. SMTP answers once for all copies: unless every copy was
/// accepted the transaction is aborted (the client retries them all, so
/// the copies that succeeded are taken back rather than doubled). LMTP
/// answers per recipient: what was accepted is committed.
async fn deliver(
    services: &Services,
    delivery: &Delivery,
    flavor: Flavor,
    mut msg: session::Message,
    check: Option<Check>,
    screen: Option<crate::hygiene::Client>,
) -> (session::Message, Vec<Outcome>) {
    let n = msg.targets.len();
    let wait = Duration::from_secs(services.config.smtp.data_timeout.clamp(1, 60));
    let Some(_lease) = services.budget.take(msg.size(), wait).await else {
        warn!(id = %msg.id, size = msg.size(), "memory budget spent (limits.max_bytes_in_flight); message deferred");
        crate::metrics::limit_hit("budget");
        return (msg, vec![Outcome::NoResources; n]);
    };
    if let Some((head, body)) = msg.take_parts() {
        // A body in memory is one copy: no blocking thread for it.
        let loaded = if body.is_spooled() {
            tokio::task::spawn_blocking(move || body.into_bytes(&head))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
        } else {
            body.into_bytes(&head)
        };
        match loaded {
            Ok(data) => msg.data = std::sync::Arc::new(data),
            Err(e) => {
                tracing::error!(id = %msg.id, error = %e, "cannot read the spooled message back");
                return (
                    msg,
                    vec![Outcome::Temporary("451 4.3.0 local error in processing".into()); n],
                );
            }
        }
    }
    // Two-tier: the mta-in's quarantine mark, honoured from our own MTAs
    // only (LMTP); the store does not verify again.
    let mut junk = flavor == Flavor::Lmtp && auth_results::marked_quarantine(&msg.data);
    if flavor == Flavor::Smtp && check.is_none() {
        if let Some(clean) = auth_results::strip_quarantine_mark(&msg.data) {
            msg.data = std::sync::Arc::new(clean);
        }
    }
    if let Some(check) = check {
        match authenticate_message(services, &mut msg, &check).await {
            auth_results::Action::Accept => {}
            auth_results::Action::Quarantine => junk = true,
            auth_results::Action::Reject => {
                return (
                    msg,
                    vec![Outcome::Permanent(auth_results::DMARC_REJECTED.into()); n],
                );
            }
        }
    }
    if let Some(client) = &screen {
        let about = crate::hygiene::MessageInfo {
            id: msg.id.clone(),
            sender: msg.sender.clone(),
            recipients: msg.targets.iter().map(|t| t.address.clone()).collect(),
        };
        let (headers, to_junk) = match services.hygiene.content(client, &about, &msg.data).await {
            ContentVerdict::Accept { headers } => (headers, false),
            ContentVerdict::Junk { headers } => (headers, true),
            ContentVerdict::Refuse(r) => {
                info!(id = %msg.id, code = r.code, reason = %r.text, "message refused by the content filter");
                let line = format!("{} {} {}", r.code, r.esc, r.text);
                let outcome = match r.code {
                    500.. => Outcome::Permanent(line),
                    _ => Outcome::Temporary(line),
                };
                return (msg, vec![outcome; n]);
            }
        };
        junk |= to_junk;
        if !headers.is_empty() {
            // The filter's fields replace any the client sent.
            let stripped = crate::hygiene::filter::strip_claims(&msg.data);
            let data: &[u8] = stripped.as_deref().unwrap_or(&msg.data);
            let mut out = Vec::with_capacity(headers.len() + data.len() + 32);
            if to_junk {
                // Two-tier: the store behind files it to Junk on this mark.
                out.extend_from_slice(
                    format!("{}: spam\r\n", auth_results::QUARANTINE_FIELD).as_bytes(),
                );
            }
            out.extend_from_slice(headers.as_bytes());
            out.extend_from_slice(data);
            msg.data = std::sync::Arc::new(out);
        }
    }
    let mut tx = delivery.start(
        &msg.id,
        Envelope {
            sender: msg.sender.clone(),
            envid: msg.envid.clone(),
            ret_full: msg.ret_full,
            junk,
            ..Envelope::default()
        },
    );
    for t in &msg.targets {
        tx.add_rcpt(t.clone());
    }
    let data = std::mem::take(&mut msg.data);
    let outcomes = tx.body(data).await;
    if flavor == Flavor::Lmtp || outcomes.iter().all(Outcome::accepted) {
        tx.commit().await;
    } else {
        tx.abort().await;
    }
    (msg, outcomes)
}

/// What inbound verification needs from the session.
struct Check {
    client_ip: std::net::IpAddr,
    helo: String,
}

/// SPF, DKIM, ARC and DMARC on a loaded message (`auth_results`):
/// removes Authentication-Results fields claiming our authserv-id, puts
/// ours on top, and returns what DMARC asks for.
async fn authenticate_message(
    services: &Services,
    msg: &mut session::Message,
    check: &Check,
) -> auth_results::Action {
    let hostname = services.config.server.hostname.as_str();
    let tx = auth_results::Transaction {
        client_ip: check.client_ip,
        helo: &check.helo,
        mail_from: &msg.sender,
        hostname,
    };
    let stripped = auth_results::strip_ours(&msg.data, hostname);
    let data: &[u8] = stripped.as_deref().unwrap_or(&msg.data);
    let verdict = auth_results::verify(
        services.resolver.hickory(),
        &services.config.hygiene,
        &tx,
        data,
    )
    .await;
    info!(
        id = %msg.id,
        from_domain = %verdict.from_domain,
        action = ?verdict.action,
        results = %verdict.header.trim_end().replace("\r\n\t", " "),
        "message authentication"
    );
    let mut out = Vec::with_capacity(verdict.header.len() + data.len() + 32);
    if verdict.action == auth_results::Action::Quarantine {
        out.extend_from_slice(format!("{}: dmarc\r\n", auth_results::QUARANTINE_FIELD).as_bytes());
    }
    out.extend_from_slice(verdict.header.as_bytes());
    out.extend_from_slice(data);
    msg.data = std::sync::Arc::new(out);
    verdict.action
}

/// Checks credentials against the directory, with the limiter and the
/// growing delay after a failure. The password is never logged.
async fn authenticate(
    services: &Services,
    info: &ConnInfo,
    _session: &Session,
    login: &str,
    password: &str,
) -> session::AuthVerdict {
    use crate::login::{Outcome, Unavailable};
    use session::AuthVerdict;
    let accounts =
        crate::login::Accounts::of(services.directory.clone(), &services.config.server.domain);
    let rules = crate::login::Rules {
        protocol: crate::login::Protocol::Smtp,
        config: &services.config,
        login_networks: &[],
        proxy_users: &[],
        limiter: &services.logins,
        accounts: &accounts,
        serves: crate::login::Serves::Nothing,
    };
    let creds = crate::login::Credentials::password(login, password);
    match crate::login::login(&rules, info, creds).await {
        Outcome::Ok(l) => {
            let account = l.account;
            let mut addresses = vec![account.address.to_lowercase()];
            addresses.extend(account.aliases.iter().map(|a| a.to_lowercase()));
            info!(login = %account.address, "authenticated");
            AuthVerdict::Ok {
                login: account.address,
                addresses,
            }
        }
        Outcome::RateLimited => AuthVerdict::Blocked,
        Outcome::Failed | Outcome::Inactive | Outcome::NotAuthorized(_) => AuthVerdict::Failed,
        Outcome::Unavailable(Unavailable::Directory) => AuthVerdict::Temporary,
        Outcome::WrongStore { .. } | Outcome::Unavailable(_) => AuthVerdict::Temporary,
    }
}

/// Writes the pending replies.
async fn flush(
    conn: &mut Conn,
    session: &mut Session,
    timeout: Duration,
    info: &ConnInfo,
) -> std::io::Result<()> {
    let out = session.take_output();
    crate::metrics::smtp_replies(info.protocol.name(), &out);
    if out.is_empty() {
        return Ok(());
    }
    let write = async {
        conn.write_all(&out).await?;
        conn.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}
