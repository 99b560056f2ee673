//! SMTP and LMTP client: used by the queue to deliver to stores (LMTP),
//! to a smarthost or an mta-in, and to MX hosts (SMTP with STARTTLS,
//! AUTH PLAIN for the smarthost, and the DSN parameters of RFC 3461 when
//! the server announces DSN).
//!
//! One transaction per `send`; a client may be kept for the next message
//! (the caller pools it). Replies are classified per RFC 5321: 2xx ok,
//! 4xx temporary, 5xx permanent; a dropped connection or timeout is
//! temporary. LMTP returns one reply per accepted recipient after DATA
//! (RFC 2033 4.2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Envelope, Notify, Outcome};
use crate::net::Conn;

/// A complete (possibly multi-line) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// All text lines joined with spaces.
    pub text: String,
}

impl Reply {
    pub fn outcome(&self) -> Outcome {
        match self.code {
            200..=299 => Outcome::Delivered,
            400..=499 => Outcome::Temporary(self.to_string()),
            _ => Outcome::Permanent(self.to_string()),
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Smtp,
    Lmtp,
}

/// How a client checks the server's certificate.
#[derive(Clone)]
pub enum TlsVerify {
    /// Opportunistic encryption: any certificate (RFC 7435).
    None,
    /// Against these trust anchors, for the server name.
    Roots(Arc<rustls::RootCertStore>),
}

/// The envelope parameters of MAIL FROM.
#[derive(Debug, Clone, Default)]
pub struct MailParams {
    pub sender: String,
    /// RFC 3461 ENVID.
    pub envid: Option<String>,
    /// RFC 3461 RET: Some(true) FULL, Some(false) HDRS.
    pub ret_full: Option<bool>,
}

/// One RCPT TO with its DSN parameters.
#[derive(Debug, Clone, Default)]
pub struct RcptParams {
    pub address: String,
    pub notify: Option<Notify>,
    /// `rfc822;addr`.
    pub orcpt: Option<String>,
    /// Duplicate delivery suppression: sent as `XMSGD-DELIVERY-ID=` when
    /// the server (an msgd store over LMTP) announces the extension.
    pub delivery_id: Option<String>,
}

impl RcptParams {
    pub fn plain(address: &str) -> RcptParams {
        RcptParams {
            address: address.to_string(),
            ..RcptParams::default()
        }
    }
}

/// The LHLO keyword of an msgd store that takes a delivery id per RCPT
/// (`RCPT TO:<a> XMSGD-DELIVERY-ID=<xtext>`), and the parameter's name.
pub const DELIVERY_ID_EXT: &str = "XMSGD-DELIVERY-ID";

/// The MAIL FROM parameters of a queued message.
pub fn mail_params(env: &Envelope) -> MailParams {
    MailParams {
        sender: env.sender.clone(),
        envid: env.envid.clone(),
        ret_full: env.ret_full.then_some(true),
    }
}

/// A 2xx from another SMTP server is relaying, not final delivery.
pub fn relayed(o: Outcome, dsn_passed: bool) -> Outcome {
    match o {
        Outcome::Delivered => Outcome::Relayed { dsn_passed },
        o => o,
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// An address as it goes between angle brackets: a local part that is not
/// a dot-atom is quoted again (smtp-proto strips the quotes).
pub fn quote_address(address: &str) -> String {
    let address: String = address.chars().filter(|c| !c.is_control()).collect();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address;
    };
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
    if dot_atom {
        return address;
    }
    let mut q = String::with_capacity(local.len() + domain.len() + 4);
    q.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push_str("\"@");
    q.push_str(domain);
    q
}

/// RFC 3461 4: xtext encoding of ENVID and ORCPT values.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// What `send_inner` came to.
enum Sent {
    /// The transaction ran (to a result or a failure).
    Done(Result<Vec<Outcome>, Outcome>),
    /// The leading RSET of a reused connection failed: nothing was sent.
    Stale,
}

pub struct Client {
    stream: BufReader<Conn>,
    timeout: Duration,
    dialect: Dialect,
    /// EHLO/LHLO keywords, uppercase.
    pub extensions: Vec<String>,
    /// Server name from the greeting, for log lines.
    pub peer: String,
    /// TLS is active on this connection.
    pub tls: bool,
    helo: String,
    /// The connection failed (io error, timeout, malformed reply) or the
    /// server said 421 (closing): never reused from a pool.
    broken: bool,
}

/// One outcome per recipient; one the server never answered is
/// temporary.
fn answered(out: Vec<Option<Outcome>>) -> Vec<Outcome> {
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| temp("no reply for this recipient")))
        .collect()
}

fn temp(what: &str) -> Outcome {
    Outcome::Temporary(format!("451 4.4.1 {what}"))
}

/// A temporary failure whose cause is ours (an io or TLS error, an
/// internal address): the outcome, which may end up in a DSN to a
/// stranger, carries only `what`; the cause goes to the log.
fn temp_logged(what: &str, peer: &dyn std::fmt::Display, cause: &dyn std::fmt::Display) -> Outcome {
    tracing::info!(%peer, error = %cause, "{what}");
    temp(what)
}

impl Client {
    /// Connects to `addr` (an `ip:port`; names are resolved by the
    /// caller through `crate::dns`) and reads the greeting, then says
    /// LHLO/EHLO.
    pub async fn connect(
        addr: &str,
        dialect: Dialect,
        helo: &str,
        timeout: Duration,
    ) -> Result<Client, Outcome> {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| temp_logged("cannot connect", &addr, &e))?;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| temp_logged("connection timed out", &addr, &"timeout"))?
            .map_err(|e| temp_logged("cannot connect", &addr, &e))?;
        Self::start(Box::new(tcp), &addr.to_string(), dialect, helo, timeout).await
    }

    /// Connects to one address; `implicit_tls`: TLS from the first byte
    /// (port 465 style) with this verification and server name.
    pub async fn connect_addr(
        addr: SocketAddr,
        server_name: &str,
        implicit_tls: Option<&TlsVerify>,
        dialect: Dialect,
        helo: &str,
        timeout: Duration,
    ) -> Result<Client, Outcome> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| temp_logged("connection timed out", &addr, &"timeout"))?
            .map_err(|e| temp_logged("cannot connect", &addr, &e))?;
        let _ = tcp.set_nodelay(true);
        let conn: Conn = match implicit_tls {
            Some(v) => tls_connect(Box::new(tcp), server_name, v, timeout).await?,
            None => Box::new(tcp),
        };
        let mut c = Self::start(conn, &addr.to_string(), dialect, helo, timeout).await?;
        c.tls = implicit_tls.is_some();
        Ok(c)
    }

    async fn start(
        conn: Conn,
        peer: &str,
        dialect: Dialect,
        helo: &str,
        timeout: Duration,
    ) -> Result<Client, Outcome> {
        let mut c = Client {
            stream: BufReader::new(conn),
            timeout,
            dialect,
            extensions: Vec::new(),
            peer: peer.to_string(),
            tls: false,
            helo: helo.to_string(),
            broken: false,
        };
        let greet = c.read_reply().await?;
        if greet.code != 220 {
            return Err(greet.outcome_or_temp());
        }
        c.hello(helo).await?;
        Ok(c)
    }

    /// STARTTLS (RFC 3207), then EHLO again. Consumes the client: after a
    /// failed handshake the connection is unusable.
    pub async fn starttls(
        mut self,
        server_name: &str,
        verify: &TlsVerify,
    ) -> Result<Client, Outcome> {
        let r = self.command("STARTTLS").await?;
        if r.code != 220 {
            return Err(r.outcome_or_temp());
        }
        if !self.stream.buffer().is_empty() {
            // Bytes after the 220 before the handshake: an injection attempt.
            return Err(temp("unexpected data after STARTTLS"));
        }
        let conn = self.stream.into_inner();
        let tls = tls_connect(conn, server_name, verify, self.timeout).await?;
        let mut c = Client {
            stream: BufReader::new(tls),
            timeout: self.timeout,
            dialect: self.dialect,
            extensions: Vec::new(),
            peer: self.peer,
            tls: true,
            helo: self.helo,
            broken: false,
        };
        let helo = c.helo.clone();
        c.hello(&helo).await?;
        Ok(c)
    }

    /// AUTH PLAIN (RFC 4954, RFC 4616) with an initial response. The
    /// password is never logged; a 5xx is a permanent failure.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), Outcome> {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let r = self.command(&format!("AUTH PLAIN {token}")).await?;
        if r.code != 235 {
            return Err(r.outcome_or_temp());
        }
        Ok(())
    }

    /// Is the session still usable for another transaction (RSET answered)?
    pub async fn reset(&mut self) -> bool {
        !self.broken && matches!(self.command("RSET").await, Ok(r) if r.code == 250)
    }

    /// May this connection go back to a pool: no io error, timeout or
    /// malformed reply happened and the server never said 421.
    pub fn reusable(&self) -> bool {
        !self.broken
    }

    async fn hello(&mut self, helo: &str) -> Result<(), Outcome> {
        let verb = match self.dialect {
            Dialect::Smtp => "EHLO",
            Dialect::Lmtp => "LHLO",
        };
        let r = self.command(&format!("{verb} {helo}")).await?;
        if r.code != 250 {
            return Err(r.outcome_or_temp());
        }
        Ok(())
    }

    /// True when the server advertised this EHLO keyword.
    pub fn has(&self, ext: &str) -> bool {
        self.extensions.iter().any(|e| e == ext)
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), Outcome> {
        let r = self.write_inner(data).await;
        self.broken |= r.is_err();
        r
    }

    async fn write_inner(&mut self, data: &[u8]) -> Result<(), Outcome> {
        let w = self.stream.get_mut();
        tokio::time::timeout(self.timeout, async {
            w.write_all(data).await?;
            w.flush().await
        })
        .await
        .map_err(|_| temp("timeout writing to the server"))?
        .map_err(|e| temp_logged("connection lost while writing", &self.peer, &e))
    }

    async fn command(&mut self, line: &str) -> Result<Reply, Outcome> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Reads one reply; records EHLO keywords when it is the hello reply.
    /// An error or a 421 (RFC 5321 3.8: the server closes) marks the
    /// connection broken.
    async fn read_reply(&mut self) -> Result<Reply, Outcome> {
        let r = self.read_reply_inner().await;
        match &r {
            Ok(reply) if reply.code == 421 => self.broken = true,
            Ok(_) => {}
            Err(_) => self.broken = true,
        }
        r
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, Outcome> {
        let mut text = Vec::new();
        let mut lines = 0;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(self.timeout, self.stream.read_line(&mut line))
                .await
                .map_err(|_| temp("timeout waiting for the server"))?
                .map_err(|e| temp_logged("connection lost while reading", &self.peer, &e))?;
            if n == 0 {
                return Err(temp("connection closed by the server"));
            }
            lines += 1;
            if lines > 200 || line.len() > 4096 {
                return Err(temp("malformed reply from the server"));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| temp("malformed reply from the server"))?;
            let sep = line.as_bytes().get(3).copied();
            let rest = line.get(4..).unwrap_or("");
            text.push(rest.to_string());
            if sep != Some(b'-') {
                if code == 250 && text.len() > 1 {
                    self.extensions = text[1..]
                        .iter()
                        .map(|t| t.split_whitespace().next().unwrap_or("").to_uppercase())
                        .collect();
                }
                return Ok(Reply {
                    code,
                    text: text.join(" "),
                });
            }
        }
    }

    /// Sends one message to several recipients, without DSN parameters.
    pub async fn send(
        &mut self,
        sender: &str,
        rcpts: &[&str],
        data: &[u8],
    ) -> Result<Vec<Outcome>, Outcome> {
        let mail = MailParams {
            sender: sender.to_string(),
            ..MailParams::default()
        };
        let rcpts: Vec<RcptParams> = rcpts.iter().map(|r| RcptParams::plain(r)).collect();
        self.send_with(&mail, &rcpts, data).await
    }

    /// Sends one message to several recipients. Returns one outcome per
    /// recipient, in order. `Err` means the whole transaction failed (the
    /// same outcome for every recipient). DSN parameters go along when the
    /// server announced DSN.
    pub async fn send_with(
        &mut self,
        params: &MailParams,
        rcpt_params: &[RcptParams],
        data: &[u8],
    ) -> Result<Vec<Outcome>, Outcome> {
        match self.send_inner(params, rcpt_params, data, false).await {
            Sent::Done(r) => r,
            Sent::Stale => Err(temp("connection lost")),
        }
    }

    /// `send_with` on a connection taken from a pool: the RSET that
    /// checks it goes in the same write as MAIL, RCPT and DATA (RFC 2920
    /// 3.1 allows RSET anywhere in a group), so the check costs no round
    /// trip of its own. `None`: the RSET was not answered 250 (the peer
    /// closed while idle, or said 421); nothing was delivered (no message
    /// text was sent) and the connection is broken: open a fresh one.
    /// Without PIPELINING the RSET is a round trip of its own, as before.
    pub async fn send_reused(
        &mut self,
        params: &MailParams,
        rcpt_params: &[RcptParams],
        data: &[u8],
    ) -> Option<Result<Vec<Outcome>, Outcome>> {
        if self.broken {
            return None;
        }
        if !self.has("PIPELINING") && !self.reset().await {
            return None;
        }
        let rset = self.has("PIPELINING");
        match self.send_inner(params, rcpt_params, data, rset).await {
            Sent::Done(r) => Some(r),
            Sent::Stale => None,
        }
    }

    /// The transaction; with `rset` (pipelining only) an RSET leads the
    /// command group and its reply is read first.
    async fn send_inner(
        &mut self,
        params: &MailParams,
        rcpt_params: &[RcptParams],
        data: &[u8],
        rset: bool,
    ) -> Sent {
        let r = self.send_transaction(params, rcpt_params, data, rset).await;
        match r {
            Err(None) => Sent::Stale,
            Err(Some(o)) => Sent::Done(Err(o)),
            Ok(v) => Sent::Done(Ok(v)),
        }
    }

    /// `Err(None)`: the leading RSET failed (the connection is marked
    /// broken; nothing of the message was sent).
    async fn send_transaction(
        &mut self,
        params: &MailParams,
        rcpt_params: &[RcptParams],
        data: &[u8],
        rset: bool,
    ) -> Result<Vec<Outcome>, Option<Outcome>> {
        let sender = params.sender.as_str();
        let rcpts: Vec<&str> = rcpt_params.iter().map(|r| r.address.as_str()).collect();
        let rcpts = &rcpts[..];
        let mut mail = format!("MAIL FROM:<{}>", quote_address(sender));
        if self.has("SIZE") {
            mail.push_str(&format!(" SIZE={}", data.len()));
        }
        if self.has("8BITMIME") && !data.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        if self.has("SMTPUTF8") && (!sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii())) {
            mail.push_str(" SMTPUTF8");
        }
        let dsn = self.has("DSN");
        if dsn {
            match params.ret_full {
                Some(true) => mail.push_str(" RET=FULL"),
                Some(false) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(e) = &params.envid {
                mail.push_str(&format!(" ENVID={}", xtext(e)));
            }
        }
        let ids = self.has(DELIVERY_ID_EXT);
        let rcpt_line = |r: &RcptParams| {
            let mut l = format!("RCPT TO:<{}>", quote_address(&r.address));
            if let (true, Some(id)) = (ids, &r.delivery_id) {
                l.push_str(&format!(" {DELIVERY_ID_EXT}={}", xtext(id)));
            }
            if dsn {
                if let Some(n) = r.notify {
                    let mut v = Vec::new();
                    if n.success {
                        v.push("SUCCESS");
                    }
                    if n.failure {
                        v.push("FAILURE");
                    }
                    if n.delay {
                        v.push("DELAY");
                    }
                    if v.is_empty() {
                        v.push("NEVER");
                    }
                    l.push_str(&format!(" NOTIFY={}", v.join(",")));
                }
                if let Some(o) = &r.orcpt {
                    let (kind, addr) = o.split_once(';').unwrap_or(("rfc822", o));
                    l.push_str(&format!(" ORCPT={kind};{}", xtext(addr)));
                }
            }
            l
        };
        let pipelining = self.has("PIPELINING");
        // The pipelined command group: RSET (a pooled connection), MAIL,
        // every RCPT.
        let group = || {
            let mut batch = String::new();
            if rset {
                batch.push_str("RSET\r\n");
            }
            batch.push_str(&mail);
            batch.push_str("\r\n");
            for r in rcpt_params {
                batch.push_str(&rcpt_line(r));
                batch.push_str("\r\n");
            }
            batch
        };
        if pipelining && self.dialect == Dialect::Lmtp && self.has("CHUNKING") {
            return self.send_chunked(group(), rcpts.len(), data, rset).await;
        }
        let mut replies = Vec::with_capacity(rcpts.len() + 2);
        if pipelining {
            let mut batch = group();
            batch.push_str("DATA\r\n");
            if let Err(o) = self.write(batch.as_bytes()).await {
                return Err((!rset).then_some(o));
            }
            // Whatever the peer makes of MAIL, RCPT and DATA after a
            // failed RSET, no message follows: dropping the connection
            // delivers nothing.
            if rset && !self.rset_answered().await {
                return Err(None);
            }
            for _ in 0..rcpts.len() + 2 {
                replies.push(self.read_reply().await?);
            }
        } else {
            let r = self.command(&mail).await?;
            replies.push(r.clone());
            if r.code == 250 {
                for rc in rcpt_params {
                    replies.push(self.command(&rcpt_line(rc)).await?);
                }
                let accepted = replies[1..].iter().any(|r| r.code / 100 == 2);
                if accepted {
                    replies.push(self.command("DATA").await?);
                }
            }
        }
        let mail_reply = &replies[0];
        if mail_reply.code != 250 {
            let _ = self.command("RSET").await;
            return Err(Some(mail_reply.outcome_or_temp()));
        }
        let rcpt_replies = &replies[1..1 + rcpts.len()];
        let mut out: Vec<Option<Outcome>> = rcpt_replies
            .iter()
            .map(|r| (r.code / 100 != 2).then(|| r.outcome()))
            .collect();
        let accepted: Vec<usize> = (0..rcpts.len()).filter(|i| out[*i].is_none()).collect();
        let data_reply = replies.get(1 + rcpts.len());
        match data_reply {
            Some(r) if r.code == 354 => {}
            Some(r) => {
                // DATA refused (or no recipient accepted).
                for i in &accepted {
                    out[*i] = Some(if r.code / 100 == 5 && !accepted.is_empty() {
                        r.outcome()
                    } else {
                        r.outcome_or_temp()
                    });
                }
                let _ = self.command("RSET").await;
                return Ok(answered(out));
            }
            None => {
                return Ok(answered(out));
            }
        }
        if accepted.is_empty() {
            // Pipelined DATA went through with no recipient: send nothing.
            self.write(b".\r\n").await?;
            let _ = self.read_reply().await;
            return Ok(answered(out));
        }
        let stuffed = dot_stuff(data);
        self.write(&stuffed).await?;
        match self.dialect {
            Dialect::Smtp => {
                let r = self.read_reply().await?;
                for i in &accepted {
                    out[*i] = Some(r.outcome());
                }
            }
            Dialect::Lmtp => {
                for i in &accepted {
                    let r = self.read_reply().await?;
                    out[*i] = Some(r.outcome());
                }
            }
        }
        Ok(answered(out))
    }

    /// The rest of an LMTP transaction to a server with PIPELINING and
    /// CHUNKING (RFC 3030): `head` (RSET, MAIL and RCPT lines) and the
    /// message as one `BDAT n LAST` chunk go out in one write, and the
    /// replies come back together: one round trip for the whole
    /// transaction, and no dot-stuffing on either side. RFC 2033 4.2: after
    /// the last chunk the server answers once per accepted recipient.
    /// When MAIL or every RCPT is refused, servers differ on the chunk's
    /// answer (none, RFC 2033 4.3; one, RFC 3030): it is not read, and the
    /// connection is not reused.
    ///
    /// The message has already been sent when the RSET of a pooled
    /// connection is answered: a connection that died while idle received
    /// none of it (an error or the closed socket comes back at once), and
    /// the transaction runs again on a fresh connection. An RSET reply
    /// that does not come within the timeout is a slow delivery, not a dead
    /// connection: a temporary failure, retried later. A server that
    /// answers RSET with anything but 250 and still takes the message gets
    /// it again on a fresh connection, where its delivery ids
    /// (`XMSGD-DELIVERY-ID`, `store::duplicates`) keep one copy.
    async fn send_chunked(
        &mut self,
        mut head: String,
        rcpts: usize,
        data: &[u8],
        rset: bool,
    ) -> Result<Vec<Outcome>, Option<Outcome>> {
        let body = bdat_body(data);
        head.push_str(&format!("BDAT {} LAST\r\n", body.len()));
        // Small messages in one write (one segment, one wake-up on the
        // other side); large ones without copying them.
        let sent = if body.len() <= 64 * 1024 {
            let mut buf = Vec::with_capacity(head.len() + body.len());
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(&body);
            self.write(&buf).await
        } else {
            match self.write(head.as_bytes()).await {
                Ok(()) => self.write(&body).await,
                Err(o) => Err(o),
            }
        };
        if let Err(o) = sent {
            return Err((!rset).then_some(o));
        }
        if rset {
            // The store holds the RSET's reply until the delivery's: one
            // that never came within the timeout was a slow delivery, not a
            // dead connection, and is not sent again at once.
            let asked = std::time::Instant::now();
            if !self.rset_answered().await {
                return Err((asked.elapsed() >= self.timeout)
                    .then(|| temp("timeout waiting for the server")));
            }
        }
        let mail = self.read_reply().await?;
        let mut out: Vec<Option<Outcome>> = Vec::with_capacity(rcpts);
        for _ in 0..rcpts {
            let r = self.read_reply().await?;
            out.push((r.code / 100 != 2).then(|| r.outcome()));
        }
        let accepted: Vec<usize> = (0..rcpts).filter(|i| out[*i].is_none()).collect();
        if mail.code != 250 || accepted.is_empty() {
            // Nothing to deliver. RFC 2033 4.3 has the last chunk answered
            // zero times when no RCPT succeeded, RFC 3030 once (msgd's store
            // does that): neither is waited for, and the connection, whose
            // state is the server's to define, is not reused.
            self.broken = true;
            if mail.code != 250 {
                return Err(Some(mail.outcome_or_temp()));
            }
        }
        for i in &accepted {
            let r = self.read_reply().await?;
            out[*i] = Some(r.outcome());
        }
        Ok(answered(out))
    }

    /// Reads the reply to a pipelined RSET; anything but 250 breaks the
    /// connection.
    async fn rset_answered(&mut self) -> bool {
        let ok = matches!(self.read_reply().await, Ok(r) if r.code == 250);
        self.broken |= !ok;
        ok
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
        let _ = self.stream.get_mut().shutdown().await;
    }
}

/// A TLS client handshake over any stream.
async fn tls_connect(
    conn: Conn,
    server_name: &str,
    verify: &TlsVerify,
    timeout: Duration,
) -> Result<Conn, Outcome> {
    crate::tls::install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| temp_logged("TLS setup failed", &server_name, &e))?;
    let config = match verify {
        TlsVerify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyCertificate(provider)))
            .with_no_client_auth(),
        TlsVerify::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    };
    let name =
        rustls::pki_types::ServerName::try_from(server_name.trim_end_matches('.').to_string())
            .map_err(|_| temp(&format!("bad TLS server name {server_name}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let s = tokio::time::timeout(timeout, connector.connect(name, conn))
        .await
        .map_err(|_| temp("TLS handshake timed out"))?
        .map_err(|e| temp_logged(tls_failure(&e), &server_name, &e))?;
    Ok(Box::new(s))
}

/// The kind of a failed handshake, for the reply text (TLS-RPT result
/// types, `deliver::tlsrpt`); the details are only logged.
fn tls_failure(e: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "TLS handshake failed: certificate not valid for the host name"
            }
            C::Expired | C::ExpiredContext { .. } => "TLS handshake failed: certificate expired",
            _ => "TLS handshake failed: certificate not trusted",
        },
        _ => "TLS handshake failed",
    }
}

/// Trust anchors from a PEM file (`mta.tls_ca_file`, default the system
/// bundle).
pub fn load_roots(path: &str) -> anyhow::Result<Arc<rustls::RootCertStore>> {
    use rustls::pki_types::pem::PemObject;
    let path = if path.is_empty() {
        "/etc/ssl/certs/ca-certificates.crt"
    } else {
        path
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(path)? {
        let _ = roots.add(c?);
    }
    Ok(Arc::new(roots))
}

impl Reply {
    /// Like `outcome`, but a 2xx where a failure was expected is temporary.
    fn outcome_or_temp(&self) -> Outcome {
        match self.outcome() {
            Outcome::Delivered => Outcome::Temporary(self.to_string()),
            o => o,
        }
    }
}

/// A message as one BDAT chunk: the same bytes the store would keep from
/// `dot_stuff` over DATA (bare LFs become CRLF, a missing final CRLF is
/// added); borrowed when nothing needs changing.
pub fn bdat_body(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare_lf = memchr::memchr_iter(b'\n', data).any(|i| i == 0 || data[i - 1] != b'\r');
    if !bare_lf && data.ends_with(b"\r\n") {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut out = crate::ops::migrate::maildir::to_crlf(data);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    std::borrow::Cow::Owned(out)
}

/// Dot-stuffs a message for DATA and appends the terminating `.` line;
/// bare LFs become CRLF so the terminator can never be forged.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 50 + 5);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connection_failure_text_is_generic() {
        // The outcome may be quoted in a DSN to a stranger: no io error
        // text, no internal address.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = match Client::connect(&addr, Dialect::Lmtp, "h", Duration::from_secs(5)).await {
            Err(e) => e,
            Ok(_) => panic!("nothing listens there"),
        };
        let Outcome::Temporary(t) = e else {
            panic!("{e:?}")
        };
        assert_eq!(t, "451 4.4.1 cannot connect");
    }

    #[test]
    fn dot_stuffing_and_terminator() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b"bare\n.\nlf"), b"bare\r\n..\r\nlf\r\n.\r\n");
    }

    type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
    type Writer = tokio::net::tcp::OwnedWriteHalf;

    /// A scripted LMTP store on loopback: its address, and the task that
    /// runs `script` on the first connection after the greeting.
    async fn scripted_store<T, F>(
        script: impl FnOnce(Reader, Writer) -> F + Send + 'static,
    ) -> (String, tokio::task::JoinHandle<T>)
    where
        F: std::future::Future<Output = T> + Send,
        T: Send + 'static,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            w.write_all(b"220 store LMTP\r\n").await.unwrap();
            script(BufReader::new(r), w).await
        });
        (addr, server)
    }

    /// A scripted LMTP server: per-recipient replies after DATA.
    #[tokio::test]
    async fn lmtp_gives_one_outcome_per_recipient() {
        let (addr, server) = scripted_store(|mut r, mut w| async move {
            let mut line = String::new();
            let mut got = Vec::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                let l = line.trim_end().to_string();
                got.push(l.clone());
                let reply: &[u8] = if l.starts_with("LHLO") {
                    b"250-store\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
                } else if l.starts_with("MAIL") {
                    b"250 2.1.0 ok\r\n"
                } else if l == "RCPT TO:<nobody@x>" {
                    b"550 5.1.1 no such user\r\n"
                } else if l.starts_with("RCPT") {
                    b"250 2.1.5 ok\r\n"
                } else if l == "DATA" {
                    b"354 go\r\n"
                } else if l == "." {
                    b"250 2.0.0 a ok\r\n452 4.2.2 b over quota\r\n"
                } else if l == "QUIT" {
                    w.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    b""
                };
                w.write_all(reply).await.unwrap();
            }
            got
        })
        .await;
        let mut c = Client::connect(&addr, Dialect::Lmtp, "mx", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(c.has("PIPELINING"));
        let out = c
            .send(
                "s@x",
                &["a@x", "nobody@x", "b@x"],
                b"Subject: x\r\n\r\n.dot\r\n",
            )
            .await
            .unwrap();
        assert_eq!(out[0], Outcome::Delivered);
        assert!(matches!(&out[1], Outcome::Permanent(t) if t.starts_with("550 5.1.1")));
        assert!(matches!(&out[2], Outcome::Temporary(t) if t.starts_with("452 4.2.2")));
        c.quit().await;
        let got = server.await.unwrap();
        assert!(got.contains(&"..dot".to_string()), "{got:?}");
        assert!(
            got.contains(&"MAIL FROM:<s@x> SIZE=20".to_string()),
            "{got:?}"
        );
    }

    #[test]
    fn a_bdat_body_keeps_what_dot_stuffing_over_data_would_deliver() {
        assert!(matches!(
            bdat_body(b"a\r\n.b\r\n"),
            std::borrow::Cow::Borrowed(b"a\r\n.b\r\n")
        ));
        assert_eq!(&*bdat_body(b"no newline"), b"no newline\r\n");
        assert_eq!(&*bdat_body(b"bare\n.\nlf"), b"bare\r\n.\r\nlf\r\n");
        assert_eq!(&*bdat_body(b"\nx\r\n"), b"\r\nx\r\n");
        assert_eq!(&*bdat_body(b""), b"\r\n");
    }

    /// A scripted LMTP server with CHUNKING: it answers nothing until it
    /// has the whole transaction, so a client that waited for a reply
    /// before sending the message would hang (the test's timeout).
    async fn chunking_server(
        rcpt_reply: fn(&str) -> &'static [u8],
        after_chunk: &'static [u8],
    ) -> (String, tokio::task::JoinHandle<(Vec<String>, Vec<u8>)>) {
        scripted_store(move |mut r, mut w| async move {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("LHLO"), "{line}");
            w.write_all(b"250-store\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 1000\r\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let mut replies: Vec<u8> = Vec::new();
            let body = loop {
                line.clear();
                assert!(r.read_line(&mut line).await.unwrap() > 0, "{got:?}");
                let l = line.trim_end().to_string();
                got.push(l.clone());
                if l.starts_with("MAIL") {
                    replies.extend_from_slice(b"250 2.1.0 ok\r\n");
                } else if l.starts_with("RCPT") {
                    replies.extend_from_slice(rcpt_reply(&l));
                } else if let Some(n) = l.strip_prefix("BDAT ") {
                    let n: usize = n.trim_end_matches(" LAST").parse().unwrap();
                    let mut body = vec![0u8; n];
                    r.read_exact(&mut body).await.unwrap();
                    break body;
                }
            };
            replies.extend_from_slice(after_chunk);
            w.write_all(&replies).await.unwrap();
            line.clear();
            let _ = r.read_line(&mut line).await;
            if line.starts_with("QUIT") {
                let _ = w.write_all(b"221 bye\r\n").await;
            }
            (got, body)
        })
        .await
    }

    #[tokio::test]
    async fn lmtp_with_chunking_sends_the_whole_transaction_before_any_reply() {
        let (addr, server) = chunking_server(
            |l| match l {
                "RCPT TO:<nobody@x>" => b"550 5.1.1 no such user\r\n",
                _ => b"250 2.1.5 ok\r\n",
            },
            b"250 2.0.0 a ok\r\n452 4.2.2 b over quota\r\n",
        )
        .await;
        let mut c = Client::connect(&addr, Dialect::Lmtp, "mx", Duration::from_secs(5))
            .await
            .unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            c.send(
                "s@x",
                &["a@x", "nobody@x", "b@x"],
                b"Subject: x\r\n\r\n.dot\nend",
            ),
        )
        .await
        .expect("the client waited for a reply before sending the message")
        .unwrap();
        assert_eq!(out[0], Outcome::Delivered);
        assert!(matches!(&out[1], Outcome::Permanent(t) if t.starts_with("550 5.1.1")));
        assert!(matches!(&out[2], Outcome::Temporary(t) if t.starts_with("452 4.2.2")));
        assert!(c.reusable());
        c.quit().await;
        let (got, body) = server.await.unwrap();
        assert_eq!(
            got,
            [
                "MAIL FROM:<s@x> SIZE=22",
                "RCPT TO:<a@x>",
                "RCPT TO:<nobody@x>",
                "RCPT TO:<b@x>",
                "BDAT 25 LAST"
            ]
        );
        // Not dot-stuffed; bare LF and the missing end of line mended as
        // DATA would have.
        assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\nend\r\n");
    }

    #[tokio::test]
    async fn lmtp_with_chunking_and_no_recipient_waits_for_no_chunk_reply_and_drops_the_connection()
    {
        // RFC 3030's one refusal of the chunk (msgd's store), and RFC 2033
        // 4.3's none: the client needs neither (the connection's timeout
        // is 60 s, the test's 20 s: waiting for a reply would fail it).
        let refusals: [&'static [u8]; 2] = [b"554 5.5.1 no valid recipients\r\n", b""];
        for after_chunk in refusals {
            let (addr, server) =
                chunking_server(|_| b"550 5.1.1 no such user\r\n", after_chunk).await;
            let mut c = Client::connect(&addr, Dialect::Lmtp, "mx", Duration::from_secs(60))
                .await
                .unwrap();
            let out = tokio::time::timeout(
                Duration::from_secs(20),
                c.send("s@x", &["a@x", "b@x"], b"x\r\n"),
            )
            .await
            .expect("waited for a reply to the refused chunk")
            .unwrap();
            assert!(out
                .iter()
                .all(|o| matches!(o, Outcome::Permanent(t) if t.starts_with("550 5.1.1"))));
            assert!(
                !c.reusable(),
                "a connection after a refused chunk is not pooled"
            );
            drop(c);
            let (got, body) = server.await.unwrap();
            assert_eq!(got.last().unwrap(), "BDAT 3 LAST");
            assert_eq!(body, b"x\r\n");
        }
    }

    #[tokio::test]
    async fn refused_connection_is_temporary() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = Client::connect(&addr, Dialect::Lmtp, "mx", Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Outcome::Temporary(_)));
    }
}
